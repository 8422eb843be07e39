"""What every listener shares: the Listener protocol, admission, awaiting decisions.

The rule: listeners see the engine only through ``Opener`` (make a Connection) and
``Acceptor`` (may one more connect?), never the broker; and every transport awaits an
engine's ``Ask`` the same way, through ``settle``. A driver also honours the quantum: when
``feed`` leaves ``conn.more_input``, it reads nothing new and calls ``feed(b"")`` on a later
turn (``feed_all`` does both for task-driven transports).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Protocol

import anyio.lowlevel
from anyio.abc import TaskGroup

from ..config import ListenerSettings
from ..engine import Ask, Connection, Driver

log = logging.getLogger("midge.listeners")


class Opener(Protocol):
    """The engine's side of accepting: make the Connection a driver will feed."""

    @property
    def connections(self) -> set[Connection]: ...

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

    __slots__ = ("_max", "_opener")

    def __init__(self, opener: Opener, max_connections: int) -> None:
        self._opener = opener
        self._max = max_connections

    def accept(self, driver: Driver, listener: ListenerSettings, host: str,
               port: int) -> Connection | None:
        """A Connection for a new transport, or None when it must be closed at once
        (``max_connections`` reached)."""
        if len(self._opener.connections) >= self._max:
            log.warning("refusing connection from %s:%s on %s: max_connections %d reached",
                        host, port, listener.label, self._max)
            return None
        return self._opener.open(driver, listener, host, port)


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
