"""What every listener shares: the Listener protocol, admission, awaiting decisions.

The rule: listeners see the engine only through ``Opener`` (make a Connection) and
``Acceptor`` (may one more connect?), never the broker; and every transport awaits an
engine's ``Ask`` the same way, through ``settle``. A listener that reports on the broker
(http) reads it only through ``Acceptor.observer``, the read-only ``midge.api.Observer``.
A driver also honours the quantum: when ``feed`` leaves ``conn.more_input``, it reads
nothing new and calls ``feed(b"")`` on a later turn (``feed_all`` does both for
task-driven transports).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Awaitable, Callable
from typing import Protocol

import anyio.lowlevel
from anyio.abc import TaskGroup

from ..api import Observer, PeerCertificate
from ..config import ListenerSettings
from ..engine import Ask, Connection, Driver
from ..logsafe import Repeats
from ..stats import Stats

log = logging.getLogger("midge.listeners")


class Opener(Protocol):
    """The engine's side of accepting: make the Connection a driver will feed."""

    @property
    def connections(self) -> set[Connection]: ...

    def pending_from(self, host: str) -> int:
        """Connections from ``host`` not yet sent CONNACK 0."""

    @property
    def listener_counts(self) -> dict[ListenerSettings, int]: ...

    @property
    def stats(self) -> Stats: ...

    @property
    def warnings(self) -> Repeats:
        """The per-template limit of the warnings clients cause."""

    def open(self, driver: Driver, listener: ListenerSettings, host: str, port: int, *,
             certificate: PeerCertificate | None = None,
             identity: str | None = None) -> Connection: ...


class Listener(Protocol):
    """A bound listener: its addresses; it accepts once started, until closed."""

    @property
    def addresses(self) -> list[tuple[str, int]]: ...

    async def start(self, task_group: TaskGroup) -> None:
        """Start accepting; per-connection tasks run in ``task_group``."""

    async def aclose(self) -> None:
        """Stop accepting (open connections are the engine's to close)."""

    def reload(self) -> None:
        """SIGHUP: re-read what the listener loaded from files (TLS certificates and
        keys); open connections are kept. A file that cannot be used keeps the old state
        and is logged."""


#: how a listener type binds: (acceptor, its settings) -> a bound, not yet accepting, Listener
Bind = Callable[["Acceptor", ListenerSettings], Awaitable[Listener]]


class Acceptor:
    """Admission and Connection construction, in one place for every transport."""

    __slots__ = ("_max", "_max_pending", "_opener", "handshake_timeout",
                 "observer")

    def __init__(self, opener: Opener, max_connections: int,
                 max_pending_per_address: int = 0, handshake_timeout: float = 10.0,
                 observer: Observer | None = None) -> None:
        self._opener = opener
        self._max = max_connections
        self._max_pending = max_pending_per_address
        #: seconds a transport has for its handshakes (PROXY header, TLS, WebSocket
        #: upgrade) before it has a Connection (the broker's ``connect_timeout``)
        self.handshake_timeout = handshake_timeout
        #: the broker's figures, for listeners that report them (None: not available)
        self.observer = observer

    def admits(self, listener: ListenerSettings, host: str, port: int) -> bool:
        """May one more transport connect? (Logs why not, rate-limited.) No when
        ``max_connections`` (the broker's or the listener's) is reached, or when
        ``max_pending_per_address`` connections from this address have not logged in."""
        if len(self._opener.connections) >= self._max:
            self._refused(host, port, listener, f"max_connections {self._max} reached")
            self._opener.stats.refused("max_connections")
            return False
        if self._opener.listener_counts.get(listener, 0) >= listener.max_connections:
            self._refused(host, port, listener,
                          f"the listener's max_connections {listener.max_connections} reached")
            return False
        if self._max_pending and self._opener.pending_from(host) >= self._max_pending:
            self._refused(host, port, listener, f"{self._max_pending} connections from "
                          "this address have not logged in (max_pending_per_address)")
            return False
        return True

    def accept(self, driver: Driver, listener: ListenerSettings, host: str, port: int, *,
               certificate: PeerCertificate | None = None,
               identity: str | None = None) -> Connection | None:
        """A Connection for a new transport, or None when it must be closed at once (see
        ``admits``). ``certificate`` and ``identity`` are what the transport established
        (TLS)."""
        if not self.admits(listener, host, port):
            return None
        return self._opener.open(driver, listener, host, port, certificate=certificate,
                                 identity=identity)

    def failed(self, listener: ListenerSettings, host: str, port: int, why: str) -> None:
        """A transport failed before it had a Connection (a TLS handshake, a WebSocket
        upgrade, a PROXY header): counted, and logged once."""
        self._opener.stats.transport_errors += 1
        self._opener.warnings.warning(
            log, "%s: connection from %s:%s closed: %s", listener.label, host, port, why,
            extra={"listener": listener.label, "address": f"{host}:{port}"})

    def _refused(self, host: str, port: int, listener: ListenerSettings, why: str) -> None:
        self._opener.warnings.warning(
            log, "refusing connection from %s:%s on %s: %s", host, port, listener.label, why,
            extra={"listener": listener.label, "address": f"{host}:{port}"})


def bind_error(exc: OSError, host: str, port: int) -> OSError:
    """A failed bind, said once: "cannot listen on HOST:PORT: address already in use"
    (the event loops' own messages repeat the address and add the errno)."""
    why = os.strerror(exc.errno).lower() if exc.errno else str(exc)
    error = OSError(exc.errno, f"cannot listen on {host}:{port}: {why}")
    return error


async def settle(conn: Connection, pending: Ask | None) -> None:
    """Await what the engine asked, tell it the answer, until it asks nothing more."""
    while pending is not None:
        try:
            value = await pending.awaitable
        except Exception as exc:
            pending = conn.answer(pending, None, exc)
        else:
            pending = conn.answer(pending, value, None)


async def feed_all(conn: Connection, data: bytes) -> None:
    """Feed received bytes to a task-driven connection and handle all of them: decisions
    are awaited, and after each ``packets_per_turn`` quantum the task yields so other
    connections are served before the rest (``conn.more_input``) is handled; while the
    engine holds the connection (``conn.input_delay``) it sleeps, reading nothing."""
    await settle(conn, conn.feed(data))
    while conn.more_input and not conn.closing:
        if conn.input_delay:
            await anyio.sleep(conn.input_delay)  # held: backpressure or the inbound rate
        else:
            await anyio.lowlevel.checkpoint()
        await settle(conn, conn.feed(b""))
