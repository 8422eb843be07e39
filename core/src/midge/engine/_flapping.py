"""Flapping detection: a client that keeps connecting and dropping is refused for a while.

The rule: off unless ``[broker] flap_max_drops`` is set. Every end of a connected session
is recorded under its client id (and its address, with ``flap_by_address``); a key with
more than ``flap_max_drops`` ends within ``flap_window`` seconds is refused at CONNECT
with 0x9F Connection rate exceeded (v3: return code 3, server unavailable) for
``flap_ban`` seconds. The table is bounded: keys whose history and ban are over are
pruned as it grows, and at most ``MAX_KEYS`` are kept (the oldest go first).
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING

from ..codec import ConnAck, ReasonCode, connack_code_v3

if TYPE_CHECKING:
    from ..config import BrokerSettings
    from ..stats import Stats
    from ._connection import Connection

log = logging.getLogger("midge.broker")

#: most client ids and addresses remembered at once
MAX_KEYS = 100_000
#: records between two sweeps of keys whose history is over
_SWEEP_EVERY = 4096


class Flapping:
    """Connection ends per client id and address, and the bans they earned."""

    __slots__ = ("_ban", "_bans", "_by_address", "_clock", "_ends", "_max", "_records",
                 "_stats", "_window")

    def __init__(self, limits: BrokerSettings, stats: Stats,
                 clock: Callable[[], float]) -> None:
        self._max = limits.flap_max_drops
        self._window = float(limits.flap_window)
        self._ban = float(limits.flap_ban)
        self._by_address = limits.flap_by_address
        self._stats = stats
        self._clock = clock
        #: key -> times its connections ended, within the window
        self._ends: dict[str, deque[float]] = {}
        #: key -> end of its ban
        self._bans: dict[str, float] = {}
        self._records = 0

    @property
    def enabled(self) -> bool:
        return self._max > 0

    def _keys(self, conn: Connection) -> tuple[str, ...]:
        if self._by_address:
            return ("id:" + conn.client_id, "ip:" + conn.remote_host)
        return ("id:" + conn.client_id,)

    def ended(self, conn: Connection) -> None:
        """A connected session's connection ended (however it ended)."""
        if not self._max:
            return
        now = self._clock()
        horizon = now - self._window
        for key in self._keys(conn):
            ends = self._ends.pop(key, None)  # re-inserted last: the dict stays oldest-first
            if ends is None:
                ends = deque()
            ends.append(now)
            while ends and ends[0] <= horizon:
                ends.popleft()
            self._ends[key] = ends
            if len(ends) > self._max and self._bans.get(key, 0.0) <= now:
                self._bans[key] = now + self._ban
                ends.clear()
                by_id = key.startswith("id:")
                conn.warn(log, "%s %s dropped its connection %d times within %d s: "
                          "refused for %d s (flapping)", "client" if by_id else "address",
                          conn.name if by_id else conn.remote_host, self._max + 1,
                          self._window, self._ban)
        self._records += 1
        if self._records % _SWEEP_EVERY == 0 or len(self._ends) > MAX_KEYS:
            self._sweep(now)

    def refused(self, conn: Connection) -> bool:
        """At CONNECT (client id known): refuse it with CONNACK and close when banned."""
        if not self._max or not self._bans:
            return False
        now = self._clock()
        for key in self._keys(conn):
            until = self._bans.get(key)
            if until is not None and until > now:
                break
        else:
            return False
        self._stats.connections_refused_flapping += 1
        conn.close_reason = "refused: flapping"
        log.info("client %s from %s refused: flapping, %.0f s of its ban left (0x9F)",
                 conn.name, conn.remote, until - now)
        code = ReasonCode.CONNECTION_RATE_EXCEEDED
        conn.send(ConnAck(code if conn.v5 else connack_code_v3(code)))
        conn.close(None, conn.close_reason)
        return True

    def _sweep(self, now: float) -> None:
        horizon = now - self._window
        for key in [k for k, ends in self._ends.items() if not ends or ends[-1] <= horizon]:
            del self._ends[key]
        for key in [k for k, until in self._bans.items() if until <= now]:
            del self._bans[key]
        while len(self._ends) > MAX_KEYS:
            del self._ends[next(iter(self._ends))]
        while len(self._bans) > MAX_KEYS:
            del self._bans[next(iter(self._bans))]

    def __len__(self) -> int:
        """Keys remembered (for tests and memory accounting)."""
        return len(self._ends) + len(self._bans)
