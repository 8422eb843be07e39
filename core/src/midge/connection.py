"""One network connection: the read loop, the coalescing writer, and orderly close.

The rule: this module does I/O and nothing else. Decoded packets go to the broker's
handlers; the broker answers by appending encoded bytes with ``write``, which never
blocks. A writer task drains everything appended since its last wake-up in one socket
write, so a batch of packets read together is answered with one send.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

import anyio
from anyio.abc import ByteStream

from .codec import (
    PROTOCOL_5,
    ConnAck,
    Connect,
    Decoder,
    Disconnect,
    Packet,
    ReasonCode,
    RemoteProtocolError,
    Role,
    UnsupportedProtocolVersion,
    Will,
    connack_code_v3,
    encode,
)
from .config import ListenerSettings
from .errors import DropPacket

if TYPE_CHECKING:
    from .message import Message
    from .session import Session

log = logging.getLogger("midge.connection")

RECEIVE_SIZE = 65536
#: seconds a closing connection gets to flush what it still has to say
CLOSE_FLUSH_TIMEOUT = 2.0
_CLOSED = (anyio.EndOfStream, anyio.BrokenResourceError, anyio.ClosedResourceError, OSError)


class Connection:
    """A client's network connection, from accept to close."""

    __slots__ = (
        "_closing",
        "_out",
        "_out_count",
        "_reader_scope",
        "_wake",
        "acl_cache",
        "alias_max_out",
        "aliases_in",
        "aliases_out",
        "broker",
        "clean_disconnect",
        "client_id",
        "close_reason",
        "connected",
        "decoder",
        "keepalive",
        "last_seen",
        "listener",
        "max_packet_out",
        "opened",
        "problem_info",
        "protocol_level",
        "remote",
        "remote_host",
        "session",
        "stream",
        "username",
        "will",
    )

    def __init__(
        self, broker: object, stream: ByteStream, listener: ListenerSettings, remote: str,
        max_packet_size: int,
    ) -> None:
        from .broker import Broker

        assert isinstance(broker, Broker)
        self.broker = broker
        self.stream = stream
        self.listener = listener
        self.remote = remote
        #: the peer's address without the port
        self.remote_host = remote.rsplit(":", 1)[0]
        #: (topic, write) -> ACL decision, kept until a reload
        self.acl_cache: dict[tuple[str, bool], bool] = {}
        self.decoder = Decoder(Role.SERVER, max_packet_size=max_packet_size)
        self.protocol_level = 0
        self.client_id = ""
        self.session: Session | None = None
        self.connected = False
        self.keepalive = 0
        self.opened = self.last_seen = time.monotonic()
        self.will: Will | None = None
        self.username: str | None = None
        self.clean_disconnect = False
        self.close_reason = ""
        #: the client's Maximum Packet Size (v5); deliveries above it are not sent
        self.max_packet_out = 268_435_460
        #: v5 Request Problem Information: reason strings allowed on non-CONNACK packets
        self.problem_info = True
        #: v5 topic aliases the client set, alias -> topic (this connection only)
        self.aliases_in: dict[int, str] = {}
        #: topic aliases the broker assigned towards the client, topic -> alias, up to
        #: the client's Topic Alias Maximum (0: the client allowed none)
        self.aliases_out: dict[str, int] = {}
        self.alias_max_out = 0
        self._out: list[bytes] = []
        self._out_count = 0
        self._wake = anyio.Event()
        self._closing = False
        self._reader_scope: anyio.CancelScope | None = None

    def __repr__(self) -> str:
        return f"<Connection {self.client_id or '?'} from {self.remote}>"

    @property
    def name(self) -> str:
        """The client id once known, else the remote address, for log lines."""
        return self.client_id or f"<{self.remote}>"

    @property
    def backlog(self) -> int:
        """Packets written and not yet handed to the socket."""
        return self._out_count

    @property
    def closing(self) -> bool:
        return self._closing

    def write(self, data: bytes) -> None:
        """Queue encoded bytes for the writer; never blocks."""
        if self._closing:
            return
        self._out.append(data)
        self._out_count += 1
        if self._out_count == 1:
            self._wake.set()

    def send(self, packet: Packet) -> None:
        """Encode and queue a packet, through the packet hooks when plugins have them."""
        hooks = self.broker.hooks
        if hooks.on_packet_encode is not None:
            packet = hooks.on_packet_encode(self, packet)
        data = encode(packet, self.protocol_level or 4)
        self.write(data)
        if hooks.on_packet_sent is not None:
            hooks.on_packet_sent(self, packet, data)

    def send_publish(self, message: Message, qos: int, retain: bool, packet_id: int,
                     subscription_ids: tuple[int, ...], dup: bool, alias: int = 0,
                     alias_known: bool = False) -> None:
        """A delivery as a Publish object (the slow path, for packet hooks)."""
        self.send(message.publish(self.protocol_level, qos, retain, packet_id,
                                  subscription_ids, dup, alias, alias_known))

    def session_taken_over(self) -> None:
        """Another connection now owns this client id: let go of the session and close."""
        self.session = None
        self.kill(ReasonCode.SESSION_TAKEN_OVER, "session taken over")

    def finish(self, reason: str) -> None:
        """Stop reading after the current packet; what was written is still flushed."""
        if not self.close_reason:
            self.close_reason = reason
        if self._reader_scope is not None:
            self._reader_scope.cancel()

    def kill(self, reason_code: int | None, reason: str) -> None:
        """Close from the broker's side, with a v5 DISCONNECT when one is allowed."""
        if self._closing:
            return
        if reason_code is not None and self.connected and self.protocol_level == PROTOCOL_5:
            self.send(Disconnect(reason_code))
        self.finish(reason)

    async def run(self) -> None:
        """Serve the connection until it closes; never raises for the client's faults."""
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._write_loop)
                try:
                    with anyio.CancelScope() as scope:
                        self._reader_scope = scope
                        await self._read_loop()
                except Exception:
                    log.exception("client %s: internal error; closing its connection", self.name)
                    self.close_reason = "internal error"
                    self.kill(ReasonCode.IMPLEMENTATION_SPECIFIC_ERROR, "internal error")
                finally:
                    try:
                        self.broker.connection_lost(self)
                    except Exception:
                        log.exception("client %s: internal error while closing", self.name)
                    self._closing = True
                    self._wake.set()
                    tg.cancel_scope.deadline = anyio.current_time() + CLOSE_FLUSH_TIMEOUT
        finally:
            with anyio.CancelScope(shield=True):
                await self.stream.aclose()

    async def _read_loop(self) -> None:
        stream = self.stream
        decoder = self.decoder
        broker = self.broker
        handlers = broker.handlers
        while True:
            try:
                data = await stream.receive(RECEIVE_SIZE)
            except _CLOSED:
                if decoder.buffered and not self.close_reason:
                    # a truncated packet is bad input like any other: one WARNING
                    log.warning(
                        "client %s: connection closed in the middle of a packet "
                        "(%d bytes of it received)", self.name, decoder.buffered,
                    )
                self.close_reason = self.close_reason or (
                    "connection closed in the middle of a packet"
                    if decoder.buffered
                    else "connection closed by the client"
                )
                return
            self.last_seen = time.monotonic()
            decoder.feed(data)
            hooks = broker.hooks
            try:
                while (packet := decoder.next_packet()) is not None:
                    if hooks.on_packet_read is not None:
                        try:
                            packet = hooks.on_packet_read(self, packet)
                        except DropPacket:
                            continue
                    if type(packet) is Connect:
                        await broker.connect(self, packet)
                        if not self.connected:
                            return
                    else:
                        pending = handlers[type(packet)](self, packet)
                        if pending is not None:
                            await pending
                    if hooks.on_packet_processed is not None:
                        hooks.on_packet_processed(self, packet, None)
                    if self._closing or self.close_reason:
                        return
            except RemoteProtocolError as exc:
                self.protocol_error(exc)
                return

    def protocol_error(self, exc: RemoteProtocolError) -> None:
        """Answer a protocol violation as the specification says, then close."""
        log.warning("client %s: protocol error: %s", self.name, exc)
        self.close_reason = f"protocol error: {exc.message}"
        if self.connected:
            if self.protocol_level == PROTOCOL_5:
                self.send(Disconnect(exc.reason_code))
        elif isinstance(exc, UnsupportedProtocolVersion):
            # the client's level is unknown to us: answer in the 3.1.1 form [MQTT-3.1.2-2]
            self.protocol_level = 4
            self.send(ConnAck(connack_code_v3(exc.reason_code)))
        elif self.decoder.protocol_level == PROTOCOL_5:
            self.protocol_level = PROTOCOL_5
            self.send(ConnAck(exc.reason_code))

    async def _write_loop(self) -> None:
        stream = self.stream
        while True:
            await self._wake.wait()
            self._wake = anyio.Event()
            out = self._out
            if out:
                self._out = []
                self._out_count = 0
                try:
                    await stream.send(out[0] if len(out) == 1 else b"".join(out))
                except _CLOSED:
                    self._closing = True
                    self.finish("connection lost while writing")
                    return
            if self._closing and not self._out:
                return
