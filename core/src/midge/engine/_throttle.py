"""Reading less: backpressure towards publishers and the per-connection inbound rate limit.

The rule: the engine never blocks and never drops what it acknowledged for a subscriber
that keeps up, when ``[broker] queue_full = "backpressure"``. It *holds* connections
instead: a held connection's remaining input is not handled (``Connection.more_input``
with ``input_delay``), so its driver stops reading and the kernel's TCP window slows the
client. Two reasons hold a connection:

- it published to a connected subscriber whose QoS 1/2 queue is full (the subscriber
  *blocks* it), until that queue is down to half, the subscriber goes away, or the
  subscriber is *stuck* (full and no acknowledgement for ``stuck_timeout`` seconds: its
  messages are then dropped and counted, and it slows nobody);
- it exceeded ``max_inbound_rate`` PUBLISHes per second (a token bucket, bursts of one
  second's worth), until it is within the rate again.

Only a connection marked ``throttled`` is asked about (one attribute test per packet
otherwise). A publisher is woken (``Connection.wake_input``) the moment what held it is
over; a held connection is also re-asked every ``RECHECK`` seconds, so a driver that
cannot be woken still resumes. Every table here is keyed by live connections and
forgotten when they end.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..config import BrokerSettings
    from ..session import Session
    from ..stats import Stats
    from ._connection import Connection

log = logging.getLogger("midge.broker")

#: seconds between two re-checks of a held connection that nothing woke
RECHECK = 0.05
#: a congested subscriber's queue may grow this many times its max_queued_messages
#: (what its publishers had already sent when they were held) before it drops anyway
OVERFLOW = 2


class Congestion:
    """A connected subscriber whose queue is full, and the publishers it holds."""

    __slots__ = ("blocking", "progress_at", "stuck")

    def __init__(self, now: float) -> None:
        self.blocking: set[Connection] = set()
        #: when it last acknowledged something (or its queue became full)
        self.progress_at = now
        self.stuck = False


class Throttle:
    """Which connections are held, why, and until when."""

    __slots__ = ("_blocked", "_buckets", "_clock", "_congested", "_max",
                 "_rate", "_stats", "_stuck_after", "backpressure", "rate_limited")

    def __init__(self, limits: BrokerSettings, stats: Stats,
                 clock: Callable[[], float]) -> None:
        #: a full subscriber queue holds its publishers (``queue_full = "backpressure"``)
        self.backpressure = limits.queue_full == "backpressure"
        self._max = limits.max_queued_messages
        self._stuck_after = float(limits.stuck_timeout)
        self._rate = float(limits.max_inbound_rate)
        #: publishers are held to ``max_inbound_rate`` (read per PUBLISH: an attribute)
        self.rate_limited = self._rate > 0
        self._stats = stats
        self._clock = clock
        #: subscriber connection -> its congestion
        self._congested: dict[Connection, Congestion] = {}
        #: publisher connection -> the subscribers that hold it
        self._blocked: dict[Connection, set[Connection]] = {}
        #: publisher connection -> [tokens, when they were counted]
        self._buckets: dict[Connection, list[float]] = {}


    # -- backpressure ----------------------------------------------------------------------

    def full(self, subscriber: Connection, session: Session,
             publisher: Connection | None) -> bool:
        """A delivery finds ``subscriber``'s queue full: True when it may queue beyond
        the cap anyway because its publisher is held from now on; False to drop it."""
        congestion = self._congested.get(subscriber)
        now = self._clock()
        if congestion is None:
            congestion = self._congested[subscriber] = Congestion(now)
        elif not congestion.stuck and now - congestion.progress_at > self._stuck_after:
            congestion.stuck = True
            self._stats.subscribers_stuck += 1
            subscriber.warn(log, "client %s acknowledged nothing for %d s with a full "
                            "queue: stuck; its messages are dropped until it catches up",
                            subscriber.name, self._stuck_after)
            self._release(congestion, subscriber)
        if (congestion.stuck or publisher is None or publisher is subscriber
                or len(session.pending) >= self._max * OVERFLOW):
            return False
        if publisher not in congestion.blocking:
            congestion.blocking.add(publisher)
            self._blocked.setdefault(publisher, set()).add(subscriber)
            if not publisher.throttled:
                publisher.throttled = True
                self._stats.publishers_held += 1
        return True

    def progress(self, subscriber: Connection, session: Session) -> None:
        """``subscriber`` acknowledged while its queue was not empty."""
        congestion = self._congested.get(subscriber)
        if congestion is None:
            return
        congestion.progress_at = self._clock()
        if len(session.pending) <= self._max // 2:
            del self._congested[subscriber]
            if congestion.stuck:
                log.info("client %s caught up: no longer stuck", subscriber.client_id)
            self._release(congestion, subscriber)

    def _release(self, congestion: Congestion, subscriber: Connection) -> None:
        for publisher in congestion.blocking:
            held = self._blocked.get(publisher)
            if held is not None:
                held.discard(subscriber)
                if not held:
                    del self._blocked[publisher]
                    publisher.wake_input()
        congestion.blocking.clear()

    # -- the inbound rate ------------------------------------------------------------------

    def published(self, publisher: Connection) -> None:
        """``publisher`` had a PUBLISH accepted: one token spent."""
        bucket = self._buckets.get(publisher)
        now = self._clock()
        rate = self._rate
        if bucket is None:
            bucket = self._buckets[publisher] = [rate, now]
        tokens = min(rate, bucket[0] + (now - bucket[1]) * rate) - 1.0
        bucket[0] = tokens
        bucket[1] = now
        if tokens < 1.0 and not publisher.throttled:
            publisher.throttled = True
            self._stats.publishers_rate_limited += 1

    # -- asked by the connection -----------------------------------------------------------

    def hold(self, conn: Connection) -> float:
        """Seconds ``conn`` must wait before more of its input is handled (0: go on)."""
        now = self._clock()
        wait = 0.0
        bucket = self._buckets.get(conn)
        if bucket is not None:
            tokens = min(self._rate, bucket[0] + (now - bucket[1]) * self._rate)
            bucket[0] = tokens
            bucket[1] = now
            if tokens < 1.0:
                wait = (1.0 - tokens) / self._rate
        held = self._blocked.get(conn)
        if held is not None:
            for subscriber in list(held):
                congestion = self._congested.get(subscriber)
                if (congestion is None or subscriber.closing
                        or now - congestion.progress_at > self._stuck_after):
                    held.discard(subscriber)
                    if congestion is not None:
                        congestion.blocking.discard(conn)
            if held:
                wait = max(wait, RECHECK)
            else:
                del self._blocked[conn]
        if wait:
            conn.last_seen = now  # silent because it is held, not because it is gone
        else:
            conn.throttled = False
        return wait

    def forget(self, conn: Connection) -> None:
        """``conn`` ended: nothing of it is kept, and whoever it held goes on."""
        self._buckets.pop(conn, None)
        congestion = self._congested.pop(conn, None)
        if congestion is not None:
            self._release(congestion, conn)
        held = self._blocked.pop(conn, None)
        if held:
            for subscriber in held:
                other = self._congested.get(subscriber)
                if other is not None:
                    other.blocking.discard(conn)

    def __len__(self) -> int:
        """Entries kept (for tests and memory accounting)."""
        return len(self._congested) + len(self._blocked) + len(self._buckets)
