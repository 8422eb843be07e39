"""Drivers: what moves bytes between a socket and a Connection, per backend.

The rule: the asyncio path spawns no task per connection. Bytes arrive in
``data_received``, are decoded and handled at once, and the answers are written once per
event-loop iteration; a task is started only while the engine waits for a decision (an
``async def`` hook), and what arrives meanwhile is held back, in order, until the
decision is told (reading pauses only when a packet's worth is held), so a peer that
hangs up while its CONNECT is being decided is noticed at once. Other
anyio backends get the same Connection driven by a reader task and a writer task.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import anyio
from anyio.abc import ByteStream, SocketAttribute, TaskGroup

from ..config import ListenerSettings
from ..engine import Ask, Connection
from ._base import Acceptor, feed_all, settle

log = logging.getLogger("midge.listeners")

#: seconds a closing connection gets to flush what it still has to say
CLOSE_FLUSH_TIMEOUT = 2.0
RECEIVE_SIZE = 65536
#: connections the kernel may hold ready for accept
ACCEPT_BACKLOG = 4096
#: bytes held back while a decision is awaited before reading pauses
HOLD_LIMIT = 65536
_CLOSED = (anyio.EndOfStream, anyio.BrokenResourceError, anyio.ClosedResourceError, OSError)


def peer(address: Any) -> tuple[str, int]:
    """(host, port) of a socket's peer address; a Unix socket's peer is ("unix", 0)."""
    if isinstance(address, tuple) and len(address) >= 2:
        return str(address[0]), int(address[1])
    if isinstance(address, (str, bytes)):
        return "unix", 0
    return "?", 0




# -- asyncio: one Protocol object per connection -------------------------------------------


class AsyncioDriver(asyncio.Protocol):
    """Moves bytes between an asyncio transport and a Connection."""

    __slots__ = (
        "_abort_handle", "_acceptor", "_closed", "_flush_handle", "_held", "_held_size",
        "_more_handle", "_paused", "_reading", "_settling", "_tg", "conn", "loop",
        "paused_frames", "spec", "transport",
    )

    def __init__(self, acceptor: Acceptor, spec: ListenerSettings, tg: TaskGroup) -> None:
        self._acceptor = acceptor
        self.spec = spec
        self._tg = tg
        self.conn: Connection | None = None
        self.transport: asyncio.Transport | None = None
        self.loop = asyncio.get_running_loop()
        self._flush_handle: asyncio.Handle | None = None
        self._abort_handle: asyncio.TimerHandle | None = None
        self._paused = False
        self._closed = False
        #: a decision is awaited: input is held back in ``_held`` meanwhile
        self._settling = False
        self._held: list[bytes] = []
        self._held_size = 0
        #: the transport is reading (not paused by us)
        self._reading = True
        #: a later turn handles the packets the quantum left, or the engine holds this
        #: connection's input (backpressure, the inbound rate): nothing new is read
        self._more_handle: asyncio.Handle | None = None
        #: frames handed to the transport while it asked us to stop writing
        self.paused_frames = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement the interface without subclassing it; TCP_NODELAY
        # is set by asyncio's and uvloop's TCP transports themselves (asking for the
        # socket to set it again would cost a socket object and a syscall per connection)
        self.transport = transport  # type: ignore[assignment]
        host, port = peer(transport.get_extra_info("peername"))
        self.conn = self._acceptor.accept(self, self.spec, host, port)
        if self.conn is None:
            self._closed = True
            transport.abort()  # type: ignore[attr-defined]
        else:
            self.conn.on_input_ready = self._input_ready

    def data_received(self, data: bytes) -> None:
        conn = self.conn
        if conn is None or conn.closing:
            return
        if self._settling:
            # keep reading (an end of the connection is seen at once), hold the bytes
            self._held.append(data)
            self._held_size += len(data)
            self._update_reading()
            return
        self._fed(conn, conn.feed(data))

    def _fed(self, conn: Connection, pending: Ask | None) -> None:
        """After a feed: await a decision, or come back on a later turn for what the
        quantum (or a hold) left, reading nothing new until then."""
        if pending is not None:
            self._settling = True
            self._tg.start_soon(self._settle, conn, pending)
        elif conn.more_input and not conn.closing:
            if self._more_handle is not None:  # a read that was already on its way
                self._more_handle.cancel()
            delay = conn.input_delay
            self._more_handle = (self.loop.call_later(delay, self._more_input) if delay
                                 else self.loop.call_soon(self._more_input))
        self._update_reading()

    def _input_ready(self) -> None:
        """The engine stopped holding this connection: handle its input next turn."""
        handle = self._more_handle
        if handle is not None and not self._closed:
            handle.cancel()
            self._more_handle = self.loop.call_soon(self._more_input)

    def _more_input(self) -> None:
        self._more_handle = None
        conn = self.conn
        if conn is None or self._closed or conn.closing:
            return
        self._fed(conn, conn.feed(b""))

    async def _settle(self, conn: Connection, pending: Ask | None) -> None:
        try:
            while pending is not None:
                await settle(conn, pending)
                pending = None
                if self._held and not conn.closing:
                    data = b"".join(self._held)
                    self._held.clear()
                    self._held_size = 0
                    pending = conn.feed(data)
                    if pending is None and conn.more_input:
                        break  # the quantum: the rest on a later turn, below
        finally:
            self._settling = False
            self._held.clear()
            self._held_size = 0
            if not self._closed:
                self._fed(conn, None)

    def _update_reading(self) -> None:
        """Read unless input already received waits: for a later turn (the quantum, a
        hold), or, past ``HOLD_LIMIT``, for a decision being awaited."""
        transport = self.transport
        if transport is None or self._closed:
            return
        want = self._more_handle is None and not (
            self._settling and self._held_size >= HOLD_LIMIT)
        if want != self._reading:
            self._reading = want
            if want:
                transport.resume_reading()
            else:
                transport.pause_reading()

    def eof_received(self) -> bool:
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed = True
        for handle in (self._flush_handle, self._abort_handle, self._more_handle):
            if handle is not None:
                handle.cancel()
        if self.conn is not None:
            self.conn.transport_lost(str(exc) if exc else "")

    def pause_writing(self) -> None:
        self._paused = True

    def resume_writing(self) -> None:
        self._paused = False
        self.paused_frames = 0
        if self.conn is not None and self.transport is not None:
            self.conn.outbox.report(0, self.transport.get_write_buffer_size())

    # -- the Connection's side -------------------------------------------------------------

    def schedule_flush(self) -> None:
        if self._flush_handle is None and not self._closed:
            self._flush_handle = self.loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_handle = None
        conn = self.conn
        transport = self.transport
        if conn is None or transport is None or self._closed:
            return
        data, frames = conn.take_output()
        self._hand_over(transport, conn, data, frames)
        if conn.closing and self._abort_handle is None:
            self._half_close(transport)

    def _hand_over(self, transport: asyncio.Transport, conn: Connection, data: bytes,
                   frames: int) -> None:
        """Hand ``data`` to the transport and tell the outbox what it still holds."""
        if data:
            if self._paused:
                self.paused_frames += frames
            transport.write(data)
            conn.outbox.report(self.paused_frames, transport.get_write_buffer_size())

    def _half_close(self, transport: asyncio.Transport) -> None:
        """Our last words go out, then FIN; the client may still be sending (PUBRELs
        after a DISCONNECT, say), and closing outright would answer those with a reset
        that can destroy the DISCONNECT before the client reads it. The transport is
        aborted if the peer has not closed within ``CLOSE_FLUSH_TIMEOUT``."""
        try:
            if transport.can_write_eof():
                transport.write_eof()
            else:
                transport.close()
        except OSError:  # the peer is already gone
            transport.abort()
            return
        self._abort_handle = self.loop.call_later(CLOSE_FLUSH_TIMEOUT, transport.abort)


# -- anyio streams: a reader task and a writer task per connection -------------------------


class StreamDriver:
    """Moves bytes between an anyio ByteStream and a Connection."""

    def __init__(self, acceptor: Acceptor, spec: ListenerSettings, stream: ByteStream) -> None:
        self._acceptor = acceptor
        self.spec = spec
        self.stream = stream
        self._wake = anyio.Event()
        self._reader: anyio.CancelScope | None = None

    def schedule_flush(self) -> None:
        self._wake.set()

    async def run(self) -> None:
        try:
            address = self.stream.extra(SocketAttribute.remote_address)
        except Exception:
            address = None
        host, port = peer(address)
        conn = self._acceptor.accept(self, self.spec, host, port)
        if conn is None:
            await self.stream.aclose()
            return
        reason = ""
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._write_loop, conn)
                with anyio.CancelScope() as self._reader:
                    reason = await self._read_loop(conn)
                self._wake.set()
                tg.cancel_scope.deadline = anyio.current_time() + CLOSE_FLUSH_TIMEOUT
        finally:
            with anyio.CancelScope(shield=True):
                await self.stream.aclose()
            conn.transport_lost(reason)

    async def _read_loop(self, conn: Connection) -> str:
        while not conn.closing:
            try:
                data = await self.stream.receive(RECEIVE_SIZE)
            except _CLOSED as exc:
                return str(exc)
            await feed_all(conn, data)
        return ""

    async def _write_loop(self, conn: Connection) -> None:
        while True:
            await self._wake.wait()
            self._wake = anyio.Event()
            # what was written while a send was under way goes out before any close
            while (data := conn.take_output()[0]):
                # the send in progress holds what the stream has not taken
                conn.outbox.report(0, len(data))
                try:
                    await self._transmit(data)
                    conn.outbox.report(0, 0)
                except _CLOSED:
                    if self._reader is not None:
                        self._reader.cancel()
                    return
            if conn.closing:
                await self._last_words()
                if self._reader is not None:
                    self._reader.cancel()
                return

    async def _transmit(self, data: bytes) -> None:
        """Send what the connection wrote (a stacked driver sends it through its layers)."""
        await self.stream.send(data)

    async def _last_words(self) -> None:
        """What goes out after the connection's own last packet (a stacked driver's
        layers close: a WebSocket close frame, a TLS close_notify)."""
