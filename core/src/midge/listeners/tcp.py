"""TCP listeners: asyncio protocols on the asyncio backend, anyio streams elsewhere.

The rule: the asyncio path spawns no task per connection. Bytes arrive in
``data_received``, are decoded and handled at once, and the answers are written once per
event-loop iteration; a task is started only while a plugin's ``async def`` hook is
awaited, and reading pauses meanwhile so packets keep their order. Other anyio backends
get the same Connection driven by a reader task and a writer task.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any

import anyio
import sniffio
from anyio.abc import ByteStream, SocketAttribute, TaskGroup

from ..config import ListenerSettings
from ..connection import Connection

if TYPE_CHECKING:
    from ..broker import Broker

log = logging.getLogger("midge.listeners")

#: seconds a closing connection gets to flush what it still has to say
CLOSE_FLUSH_TIMEOUT = 2.0
RECEIVE_SIZE = 65536
_CLOSED = (anyio.EndOfStream, anyio.BrokenResourceError, anyio.ClosedResourceError, OSError)


class Bound:
    """A bound listener: its addresses, and how to stop accepting."""

    def __init__(self, addresses: list[tuple[str, int]],
                 close: Callable[[], Coroutine[Any, Any, None]]) -> None:
        self.addresses = addresses
        self.aclose = close


async def bind_tcp(broker: Broker, spec: ListenerSettings, task_group: TaskGroup) -> Bound:
    """Listen on ``spec`` and serve every accepted connection in ``task_group``."""
    try:
        if sniffio.current_async_library() == "asyncio":
            return await _bind_asyncio(broker, spec, task_group)
        return await _bind_streams(broker, spec, task_group)
    except OSError as exc:
        # name the address: with several listeners "address in use" is a riddle
        raise OSError(
            exc.errno, f"cannot listen on {spec.host}:{spec.port}: {exc.strerror}"
        ) from exc


# -- asyncio: one Protocol object per connection -------------------------------------------


async def _bind_asyncio(broker: Broker, spec: ListenerSettings, tg: TaskGroup) -> Bound:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: AsyncioDriver(broker, spec, tg), spec.host, spec.port, backlog=4096,
        reuse_address=True,
    )
    addresses = [(str(s.getsockname()[0]), int(s.getsockname()[1])) for s in server.sockets]

    async def close() -> None:
        server.close()

    return Bound(addresses, close)


class AsyncioDriver(asyncio.Protocol):
    """Moves bytes between an asyncio transport and a Connection."""

    __slots__ = (
        "_abort_handle", "_closed", "_flush_handle", "_paused", "_tg", "broker", "conn",
        "loop", "paused_frames", "spec", "transport",
    )

    def __init__(self, broker: Broker, spec: ListenerSettings, tg: TaskGroup) -> None:
        self.broker = broker
        self.spec = spec
        self._tg = tg
        self.conn: Connection | None = None
        self.transport: asyncio.Transport | None = None
        self.loop = asyncio.get_running_loop()
        self._flush_handle: asyncio.Handle | None = None
        self._abort_handle: asyncio.TimerHandle | None = None
        self._paused = False
        self._closed = False
        #: frames handed to the transport while it asked us to stop writing
        self.paused_frames = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement the interface without subclassing it
        self.transport = transport  # type: ignore[assignment]
        peer = transport.get_extra_info("peername")
        sock = transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        remote = f"{peer[0]}:{peer[1]}" if peer else "?"
        broker = self.broker
        if len(broker.connections) >= broker.limits.max_connections:
            log.warning("refusing connection from %s: max_connections %d reached",
                        remote, broker.limits.max_connections)
            self._closed = True
            transport.abort()  # type: ignore[attr-defined]
            return
        self.conn = Connection(broker, self, self.spec, remote, broker.limits.max_packet_size)
        broker.connection_opened(self.conn)

    def data_received(self, data: bytes) -> None:
        conn = self.conn
        if conn is None or conn.closing:
            return
        pending = conn.feed(data)
        if pending is not None:
            assert self.transport is not None
            self.transport.pause_reading()
            self._tg.start_soon(self._await, pending)

    async def _await(self, pending: Coroutine[Any, Any, None]) -> None:
        try:
            await pending
        finally:
            if not self._closed and self.transport is not None:
                self.transport.resume_reading()

    def eof_received(self) -> bool:
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed = True
        for handle in (self._flush_handle, self._abort_handle):
            if handle is not None:
                handle.cancel()
        conn = self.conn
        if conn is not None:
            conn.transport_lost(str(exc) if exc else "")
            self.broker.connection_closed(conn)

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
            if transport.can_write_eof():
                transport.write_eof()
            else:
                transport.close()
            self._abort_handle = self.loop.call_later(CLOSE_FLUSH_TIMEOUT, transport.abort)

    @property
    def backlog(self) -> int:
        return self.paused_frames


# -- anyio streams: a reader task and a writer task per connection -------------------------


async def _bind_streams(broker: Broker, spec: ListenerSettings, tg: TaskGroup) -> Bound:
    multi = await anyio.create_tcp_listener(local_host=spec.host, local_port=spec.port)
    addresses = []
    for listener in multi.listeners:
        address: Any = listener.extra(SocketAttribute.local_address)
        addresses.append((str(address[0]), int(address[1])))
    scope = anyio.CancelScope()

    async def accept_loop(listener: Any) -> None:
        with scope:
            while True:
                try:
                    stream = await listener.accept()
                except anyio.ClosedResourceError:
                    return  # the listener was closed: shutting down
                except OSError as exc:
                    log.error("accept on %s failed: %s", spec.label, exc)
                    await anyio.sleep(0.1)
                    continue
                tg.start_soon(StreamDriver(broker, spec, stream).run)

    # one loop per socket (an IPv4 and an IPv6 one for "localhost", say)
    for listener in multi.listeners:
        tg.start_soon(accept_loop, listener)

    async def close() -> None:
        scope.cancel()
        await multi.aclose()

    return Bound(addresses, close)


class StreamDriver:
    """Moves bytes between an anyio ByteStream and a Connection."""

    def __init__(self, broker: Broker, spec: ListenerSettings, stream: ByteStream) -> None:
        self.broker = broker
        self.spec = spec
        self.stream = stream
        self._wake = anyio.Event()
        self._reader: anyio.CancelScope | None = None
        self.conn: Connection | None = None

    @property
    def backlog(self) -> int:
        return 0

    def schedule_flush(self) -> None:
        self._wake.set()

    async def run(self) -> None:
        broker = self.broker
        try:
            address = self.stream.extra(SocketAttribute.remote_address)
            remote = f"{address[0]}:{address[1]}"  # type: ignore[index]
        except Exception:
            remote = "?"
        if len(broker.connections) >= broker.limits.max_connections:
            log.warning("refusing connection from %s: max_connections reached", remote)
            await self.stream.aclose()
            return
        conn = self.conn = Connection(broker, self, self.spec, remote,
                                      broker.limits.max_packet_size)
        broker.connection_opened(conn)
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
            broker.connection_closed(conn)

    async def _read_loop(self, conn: Connection) -> str:
        while not conn.closing:
            try:
                data = await self.stream.receive(RECEIVE_SIZE)
            except _CLOSED as exc:
                return str(exc)
            pending = conn.feed(data)
            if pending is not None:
                await pending
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
