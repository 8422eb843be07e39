"""What every listener shares: the Listener protocol, admission, awaiting decisions.

The rule: listeners see the engine only through ``Opener`` (make a Connection) and
``Acceptor`` (may one more connect?), never the broker; and every transport awaits an
engine's ``Ask`` the same way, through ``settle``. A listener that reports on the broker
(http) reads it only through ``Acceptor.observer``, the read-only ``midge.api.Observer``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Awaitable, Callable
from typing import Protocol

from anyio.abc import TaskGroup

from ..api import Observer
from ..config import ListenerSettings
from ..engine import Ask, Connection, Driver
from ..stats import Stats

log = logging.getLogger("midge.listeners")


class Opener(Protocol):
    """The engine's side of accepting: make the Connection a driver will feed."""

    @property
    def connections(self) -> set[Connection]: ...

    @property
    def stats(self) -> Stats: ...

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

    __slots__ = ("_max", "_opener", "observer")

    def __init__(self, opener: Opener, max_connections: int,
                 observer: Observer | None = None) -> None:
        self._opener = opener
        self._max = max_connections
        #: the broker's figures, for listeners that report them (None: not available)
        self.observer = observer

    def accept(self, driver: Driver, listener: ListenerSettings, host: str,
               port: int) -> Connection | None:
        """A Connection for a new transport, or None when it must be closed at once
        (``max_connections`` reached)."""
        if len(self._opener.connections) >= self._max:
            log.warning("refusing connection from %s:%s on %s: max_connections %d reached",
                        host, port, listener.label, self._max,
                        extra={"listener": listener.label, "address": f"{host}:{port}"})
            self._opener.stats.refused("max_connections")
            return None
        return self._opener.open(driver, listener, host, port)


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
