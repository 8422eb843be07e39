"""TCP listeners: asyncio protocols on the asyncio backend, anyio streams elsewhere.

The rule: the asyncio path spawns no task per connection. Bytes arrive in
``data_received``, are decoded and handled at once, and the answers are written once per
event-loop iteration; a task is started only while the engine waits for a decision (an
``async def`` hook), and reading pauses meanwhile so packets keep their order. Other
anyio backends get the same Connection driven by a reader task and a writer task.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from typing import Any

import anyio
import sniffio
from anyio.abc import ByteStream, SocketAttribute, TaskGroup

from ..config import ListenerSettings
from ..engine import Ask, Connection
from ._base import Acceptor, Listener, feed_all, settle

log = logging.getLogger("midge.listeners")

#: seconds a closing connection gets to flush what it still has to say
CLOSE_FLUSH_TIMEOUT = 2.0
RECEIVE_SIZE = 65536
#: connections the kernel may hold ready for accept
ACCEPT_BACKLOG = 4096
_CLOSED = (anyio.EndOfStream, anyio.BrokenResourceError, anyio.ClosedResourceError, OSError)


async def bind(acceptor: Acceptor, spec: ListenerSettings) -> Listener:
    """Bind ``spec``'s address (accepting starts with ``start``)."""
    try:
        if sniffio.current_async_library() == "asyncio":
            return await AsyncioListener.bind(acceptor, spec)
        return await StreamListener.bind(acceptor, spec)
    except OSError as exc:
        # name the address: with several listeners "address in use" is a riddle
        raise OSError(
            exc.errno, f"cannot listen on {spec.host}:{spec.port}: {exc.strerror}"
        ) from exc


def _peer(address: Any) -> tuple[str, int]:
    if isinstance(address, tuple) and len(address) >= 2:
        return str(address[0]), int(address[1])
    return "?", 0


# -- asyncio: one Protocol object per connection -------------------------------------------


class AsyncioListener:
    """A bound asyncio server; it serves once ``start`` is called."""

    def __init__(self, server: asyncio.Server, groups: list[TaskGroup]) -> None:
        self._server = server
        #: the task group drivers start tasks in, once ``start`` has given it
        self._groups = groups
        self.addresses = [
            (str(s.getsockname()[0]), int(s.getsockname()[1])) for s in server.sockets
        ]

    @classmethod
    async def bind(cls, acceptor: Acceptor, spec: ListenerSettings) -> AsyncioListener:
        loop = asyncio.get_running_loop()
        holder: list[TaskGroup] = []
        server = await loop.create_server(
            lambda: AsyncioDriver(acceptor, spec, holder[0]), spec.host, spec.port,
            backlog=ACCEPT_BACKLOG, reuse_address=True, start_serving=False,
        )
        return cls(server, holder)

    async def start(self, task_group: TaskGroup) -> None:
        self._groups.append(task_group)
        await self._server.start_serving()

    async def aclose(self) -> None:
        self._server.close()


class AsyncioDriver(asyncio.Protocol):
    """Moves bytes between an asyncio transport and a Connection."""

    __slots__ = (
        "_abort_handle", "_acceptor", "_closed", "_flush_handle", "_more_handle", "_paused",
        "_reading", "_settling", "_tg", "conn", "loop", "paused_frames", "spec", "transport",
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
        #: the transport is reading (not paused by us)
        self._reading = True
        #: a plugin decision is being awaited
        self._settling = False
        #: a later turn handles the packets the quantum left
        self._more_handle: asyncio.Handle | None = None
        #: frames handed to the transport while it asked us to stop writing
        self.paused_frames = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement the interface without subclassing it
        self.transport = transport  # type: ignore[assignment]
        sock = transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        host, port = _peer(transport.get_extra_info("peername"))
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
        self._fed(conn, conn.feed(data))

    def _fed(self, conn: Connection, pending: Ask | None) -> None:
        """After a feed: await a decision, or come back next turn for what the quantum
        left (other connections are read meanwhile), reading nothing new until then."""
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

    async def _settle(self, conn: Connection, pending: Ask) -> None:
        try:
            await settle(conn, pending)
        finally:
            self._settling = False
            if not self._closed:
                self._fed(conn, None)

    def _update_reading(self) -> None:
        """Read while nothing received is still waiting to be handled."""
        transport = self.transport
        if transport is None or self._closed:
            return
        want = not self._settling and self._more_handle is None
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
        if data:
            if self._paused:
                self.paused_frames += frames
            transport.write(data)
        if conn.closing and self._abort_handle is None:
            # half-close: our last words go out, then FIN; the client may still be sending
            # (PUBRELs after a DISCONNECT, say), and closing outright would answer those
            # with a reset that can destroy the DISCONNECT before the client reads it
            self._abort_handle = self.loop.call_later(CLOSE_FLUSH_TIMEOUT, transport.abort)
            try:
                if transport.can_write_eof():
                    transport.write_eof()
                else:
                    transport.close()
            except OSError:
                # the peer reset the connection meanwhile: nothing left to say
                transport.abort()

    @property
    def backlog(self) -> int:
        return self.paused_frames

    @property
    def backlog_bytes(self) -> int:
        transport = self.transport
        if transport is None or self._closed:
            return 0
        return transport.get_write_buffer_size()


# -- anyio streams: a reader task and a writer task per connection -------------------------


class StreamListener:
    """A bound anyio TCP listener; it accepts once ``start`` is called."""

    def __init__(self, acceptor: Acceptor, spec: ListenerSettings, multi: Any) -> None:
        self._acceptor = acceptor
        self._spec = spec
        self._multi = multi
        self._scope = anyio.CancelScope()
        self.addresses = []
        for listener in multi.listeners:
            self.addresses.append(_peer(listener.extra(SocketAttribute.local_address)))

    @classmethod
    async def bind(cls, acceptor: Acceptor, spec: ListenerSettings) -> StreamListener:
        multi = await anyio.create_tcp_listener(local_host=spec.host, local_port=spec.port,
                                                backlog=ACCEPT_BACKLOG)
        return cls(acceptor, spec, multi)

    async def start(self, task_group: TaskGroup) -> None:
        # one loop per socket (an IPv4 and an IPv6 one for "localhost", say)
        for listener in self._multi.listeners:
            task_group.start_soon(self._accept_loop, listener, task_group)

    async def _accept_loop(self, listener: Any, task_group: TaskGroup) -> None:
        with self._scope:
            while True:
                try:
                    stream = await listener.accept()
                except anyio.ClosedResourceError:
                    return  # the listener was closed: shutting down
                except OSError as exc:
                    log.error("accept on %s failed: %s", self._spec.label, exc)
                    await anyio.sleep(0.1)
                    continue
                task_group.start_soon(StreamDriver(self._acceptor, self._spec, stream).run)

    async def aclose(self) -> None:
        self._scope.cancel()
        await self._multi.aclose()


class StreamDriver:
    """Moves bytes between an anyio ByteStream and a Connection."""

    def __init__(self, acceptor: Acceptor, spec: ListenerSettings, stream: ByteStream) -> None:
        self._acceptor = acceptor
        self.spec = spec
        self.stream = stream
        self._wake = anyio.Event()
        self._reader: anyio.CancelScope | None = None

    @property
    def backlog(self) -> int:
        return 0  # a send in progress holds what the stream has not taken

    @property
    def backlog_bytes(self) -> int:
        return 0

    def schedule_flush(self) -> None:
        self._wake.set()

    async def run(self) -> None:
        try:
            address = self.stream.extra(SocketAttribute.remote_address)
        except Exception:
            address = None
        host, port = _peer(address)
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
                try:
                    await self.stream.send(data)
                except _CLOSED:
                    if self._reader is not None:
                        self._reader.cancel()
                    return
            if conn.closing:
                if self._reader is not None:
                    self._reader.cancel()
                return
