"""Drivers for stacked transports: bytes pass through a Pipeline of layers (PROXY
header, TLS, WebSocket) on their way between the socket and the Connection.

The rule: a transport has a Connection only once every layer's handshake is over, so
the address a PROXY header carried, the verified certificate and the certificate's
identity are known when the engine first sees it. Until then the driver alone bounds the
handshakes (the acceptor's ``handshake_timeout``), and a failure is counted and logged
once by the acceptor and closes only that socket. Plain TCP never comes here: it keeps
the direct drivers of ``_drivers``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

import anyio
from anyio.abc import ByteStream, SocketAttribute, TaskGroup

from ..config import ListenerSettings
from ..engine import Connection
from ._base import Acceptor, feed_all
from ._drivers import (
    _CLOSED,
    CLOSE_FLUSH_TIMEOUT,
    RECEIVE_SIZE,
    AsyncioDriver,
    StreamDriver,
    peer,
)
from ._layers import Layer, Pipeline, TransportError

#: makes the layers of one new transport, from the wire up
LayerFactory = Callable[[], list[Layer]]


class StackedAsyncioDriver(AsyncioDriver):
    """An asyncio Protocol whose bytes pass through a Pipeline."""

    __slots__ = ("_address", "_deadline", "_reason", "pipeline")

    def __init__(self, acceptor: Acceptor, spec: ListenerSettings, tg: TaskGroup,
                 pipeline: Pipeline) -> None:
        super().__init__(acceptor, spec, tg)
        self.pipeline = pipeline
        self._address = ("?", 0)
        self._deadline: asyncio.TimerHandle | None = None
        #: why the transport is being closed below MQTT (for ``transport_lost``)
        self._reason = ""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # TCP_NODELAY: asyncio's and uvloop's TCP transports set it themselves
        self.transport = transport  # type: ignore[assignment]
        host, port = self._address = peer(transport.get_extra_info("peername"))
        if not self._acceptor.admits(self.spec, host, port):
            self._closed = True
            transport.abort()  # type: ignore[attr-defined]
            return
        self._deadline = self.loop.call_later(self._acceptor.handshake_timeout, self._stalled)

    def _stalled(self) -> None:
        self._deadline = None
        if self.conn is None and not self._closed:
            self._fail(f"handshake not finished within {self._acceptor.handshake_timeout:g} s")

    def _write(self, data: bytes) -> None:
        if data and self.transport is not None:
            self.transport.write(data)

    def _fail(self, why: str) -> None:
        """Close a transport that has no Connection yet."""
        host, port = self._address
        self._acceptor.failed(self.spec, host, port, why)
        self._closed = True
        self._shut()

    def _shut(self) -> None:
        """Write what the layers queued (a refusal, a close frame), then close."""
        transport = self.transport
        if transport is None:
            return
        try:
            self._write(self.pipeline.take())
        except Exception:  # a layer that failed may not encode any more
            transport.abort()  # type: ignore[attr-defined]
            return
        transport.close()
        if self._abort_handle is None:
            self._abort_handle = self.loop.call_later(CLOSE_FLUSH_TIMEOUT, transport.abort)

    def data_received(self, data: bytes) -> None:
        conn = self.conn
        if self._closed or self._reason or (conn is not None and conn.closing):
            # nothing more reaches the Connection; the peer's answer to our close (a
            # WebSocket close frame) is still read
            if conn is not None and not self._closed and not self._reason:
                with contextlib.suppress(TransportError):
                    self.pipeline.receive(data)
            return
        pipeline = self.pipeline
        try:
            app = pipeline.receive(data)
        except TransportError as exc:
            if conn is None:
                self._fail(str(exc))
            else:
                self._acceptor.failed(self.spec, conn.remote_host, conn.remote_port,
                                      f"client {conn.name}: {exc}")
                self._reason = str(exc)
                self._shut()
            return
        self._write(pipeline.take())
        if conn is None:
            if not pipeline.established:
                if pipeline.ended is not None:
                    self._reason = pipeline.ended
                    self._shut()
                return
            conn = self._open()
            if conn is None:
                return
        if app:
            if self._settling:
                # as the plain driver does: hold what arrives while a decision is awaited
                # (after the layers, so what is held is MQTT bytes)
                self._held.append(app)
                self._held_size += len(app)
                self._update_reading()
            else:
                self._fed(conn, conn.feed(app))
        if pipeline.ended is not None and not conn.closing:
            self._reason = pipeline.ended
            self._shut()

    def _open(self) -> Connection | None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None
        pipeline = self.pipeline
        host, port = pipeline.address or self._address
        conn = self._acceptor.accept(self, self.spec, host, port,
                                     certificate=pipeline.certificate,
                                     identity=pipeline.identity)
        if conn is None:
            self._closed = True
            assert self.transport is not None
            self.transport.abort()  # type: ignore[attr-defined]
        self.conn = conn
        return conn

    def connection_lost(self, exc: Exception | None) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
        if self._reason and exc is None:
            exc = ConnectionError(self._reason)
        super().connection_lost(exc)

    def _flush(self) -> None:
        self._flush_handle = None
        conn = self.conn
        transport = self.transport
        if conn is None or transport is None or self._closed:
            return
        data, frames = conn.take_output()
        closing = conn.closing and self._abort_handle is None
        wire = self.pipeline.send(data)
        if closing:
            wire += self.pipeline.close()
        self._hand_over(transport, conn, wire, frames)
        if closing:
            self._half_close(transport)


class StackedStreamDriver(StreamDriver):
    """Moves bytes between an anyio ByteStream and a Connection through a Pipeline
    (the non-asyncio backends); the write loop is the plain stream driver's."""

    def __init__(self, acceptor: Acceptor, spec: ListenerSettings, stream: ByteStream,
                 pipeline: Pipeline) -> None:
        super().__init__(acceptor, spec, stream)
        self.pipeline = pipeline
        # the reader sends too (pongs, close answers): one send at a time
        self._sending = anyio.Lock()

    async def _transmit(self, data: bytes) -> None:
        await self._send(self.pipeline.send(data))

    async def _last_words(self) -> None:
        with contextlib.suppress(*_CLOSED):
            await self._send(self.pipeline.close())

    async def _send(self, data: bytes) -> None:
        if data:
            async with self._sending:
                await self.stream.send(data)

    async def run(self) -> None:
        try:
            address = self.stream.extra(SocketAttribute.remote_address)
        except Exception:
            address = None
        host, port = peer(address)
        try:
            if not self._acceptor.admits(self.spec, host, port):
                return
            app = b""
            timeout = self._acceptor.handshake_timeout
            with anyio.move_on_after(timeout) as scope:
                try:
                    app = await self._handshake()
                except TransportError as exc:
                    self._acceptor.failed(self.spec, host, port, str(exc))
                    with contextlib.suppress(*_CLOSED):
                        await self._send(self.pipeline.take())
                    return
                except _CLOSED:
                    return
            if scope.cancelled_caught:
                self._acceptor.failed(self.spec, host, port,
                                      f"handshake not finished within {timeout:g} s")
                return
            if self.pipeline.ended is not None:
                return
            host, port = self.pipeline.address or (host, port)
            conn = self._acceptor.accept(self, self.spec, host, port,
                                         certificate=self.pipeline.certificate,
                                         identity=self.pipeline.identity)
            if conn is None:
                return
            await self._serve(conn, app)
        finally:
            with anyio.CancelScope(shield=True):
                await self.stream.aclose()

    async def _handshake(self) -> bytes:
        """Read until every layer is established; the application bytes that came with
        the last handshake message."""
        while True:
            data = await self.stream.receive(RECEIVE_SIZE)
            app = self.pipeline.receive(data)
            await self._send(self.pipeline.take())
            if self.pipeline.established or self.pipeline.ended is not None:
                return app

    async def _serve(self, conn: Connection, app: bytes) -> None:
        reason = ""
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._write_loop, conn)
                with anyio.CancelScope() as self._reader:
                    if app:
                        await feed_all(conn, app)
                    reason = await self._read_loop(conn)
                self._wake.set()
                tg.cancel_scope.deadline = anyio.current_time() + CLOSE_FLUSH_TIMEOUT
        finally:
            conn.transport_lost(reason)

    async def _read_loop(self, conn: Connection) -> str:
        while not conn.closing:
            try:
                data = await self.stream.receive(RECEIVE_SIZE)
            except _CLOSED as exc:
                return str(exc)
            try:
                app = self.pipeline.receive(data)
            except TransportError as exc:
                self._acceptor.failed(self.spec, conn.remote_host, conn.remote_port,
                                      f"client {conn.name}: {exc}")
                with contextlib.suppress(*_CLOSED):
                    await self._send(self.pipeline.take())
                return str(exc)
            with contextlib.suppress(*_CLOSED):
                await self._send(self.pipeline.take())
            if app:
                await feed_all(conn, app)
            if self.pipeline.ended is not None:
                return self.pipeline.ended
        return ""
