"""What every listener shares: the Listener protocol, admission, awaiting decisions.

The rule: listeners see the engine only through ``Opener`` (make a Connection) and
``Acceptor`` (may one more connect?), never the broker; and every transport awaits an
engine's ``Ask`` the same way, through ``settle``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import Protocol

from anyio.abc import TaskGroup

from ..config import ListenerSettings
from ..engine import Ask, Connection, Driver
from ..logsafe import Throttle

log = logging.getLogger("midge.listeners")


class Opener(Protocol):
    """The engine's side of accepting: make the Connection a driver will feed."""

    @property
    def connections(self) -> set[Connection]: ...

    def pending_from(self, host: str) -> int:
        """Connections from ``host`` not yet sent CONNACK 0."""

    def open(self, driver: Driver, listener: ListenerSettings, host: str,
             port: int) -> Connection: ...


class Listener(Protocol):
    """A bound listener: its addresses; it accepts once started, until closed."""

    @property
    def addresses(self) -> list[tuple[str, int]]: ...

    async def start(self, task_group: TaskGroup) -> None:
        """Start accepting; per-connection tasks run in ``task_group``."""

    async def aclose(self) -> None:
        """Stop accepting (open connections are the engine's to close)."""


#: how a listener type binds: (acceptor, its settings) -> a bound, not yet accepting, Listener
Bind = Callable[["Acceptor", ListenerSettings], Awaitable[Listener]]


class Acceptor:
    """Admission and Connection construction, in one place for every transport."""

    __slots__ = ("_max", "_max_pending", "_opener", "_refusals")

    def __init__(self, opener: Opener, max_connections: int,
                 max_pending_per_address: int = 0) -> None:
        self._opener = opener
        self._max = max_connections
        self._max_pending = max_pending_per_address
        #: refusal warnings: a flood of sockets must not become a flood of log lines
        self._refusals = Throttle(time.monotonic)

    def accept(self, driver: Driver, listener: ListenerSettings, host: str,
               port: int) -> Connection | None:
        """A Connection for a new transport, or None when it must be closed at once
        (``max_connections`` reached, or ``max_pending_per_address`` connections from
        this address have not logged in yet)."""
        if len(self._opener.connections) >= self._max:
            self._refused(host, port, listener, f"max_connections {self._max} reached")
            return None
        if self._max_pending and self._opener.pending_from(host) >= self._max_pending:
            self._refused(host, port, listener, f"{self._max_pending} connections from "
                          "this address have not logged in (max_pending_per_address)")
            return None
        return self._opener.open(driver, listener, host, port)

    def _refused(self, host: str, port: int, listener: ListenerSettings, why: str) -> None:
        if self._refusals.allow():
            log.warning("refusing connection from %s:%s on %s: %s%s", host, port,
                        listener.label, why, self._refusals.take_suppressed())


async def settle(conn: Connection, pending: Ask | None) -> None:
    """Await what the engine asked, tell it the answer, until it asks nothing more."""
    while pending is not None:
        try:
            value = await pending.awaitable
        except Exception as exc:
            pending = conn.answer(pending, None, exc)
        else:
            pending = conn.answer(pending, value, None)
