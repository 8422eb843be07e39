"""One client connection's protocol side: decode, dispatch, buffer the answers, close.

The rule (after h11): this module does no I/O. A listener's driver feeds it the bytes it
reads (``feed``), takes what it should write (``take_output``) when asked to flush, and
reports the end of the transport (``transport_lost``). Decoded packets go to the broker's
handlers at once; answers are appended with ``write``, which never blocks, and a batch
of packets read together is answered with one socket write.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any, Protocol

from .codec import (
    PROTOCOL_5,
    Auth,
    ConnAck,
    Connect,
    Decoder,
    Disconnect,
    Packet,
    ProtocolViolation,
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
    from .broker import Broker
    from .message import Message
    from .session import Session

log = logging.getLogger("midge.connection")


class Driver(Protocol):
    """What a listener provides to move a Connection's bytes."""

    @property
    def backlog(self) -> int:
        """Frames handed to the socket that it has not been able to send yet."""

    def schedule_flush(self) -> None:
        """Call ``take_output`` soon (once per event-loop iteration at most); when the
        connection is closing, close the transport after writing."""


class Connection:
    """A client's network connection, from accept to close."""

    __slots__ = (
        "_closing",
        "_driver",
        "_ended",
        "_out",
        "_out_count",
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
        "username",
        "will",
    )

    def __init__(
        self, broker: Broker, driver: Driver, listener: ListenerSettings, remote: str,
        max_packet_size: int,
    ) -> None:
        self.broker = broker
        self._driver = driver
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
        self._closing = False
        self._ended = False

    def __repr__(self) -> str:
        return f"<Connection {self.client_id or '?'} from {self.remote}>"

    @property
    def name(self) -> str:
        """The client id once known, else the remote address, for log lines."""
        return self.client_id or f"<{self.remote}>"

    @property
    def backlog(self) -> int:
        """Packets written and not yet sent: buffered here or stuck in the socket."""
        return self._out_count + self._driver.backlog

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
            self._driver.schedule_flush()

    def take_output(self) -> tuple[bytes, int]:
        """Everything written since the last call, as one buffer, and how many frames."""
        out = self._out
        count = self._out_count
        if not count:
            return b"", 0
        self._out = []
        self._out_count = 0
        return (out[0] if count == 1 else b"".join(out)), count

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
        """Stop handling input; what was written is flushed, then the transport closes."""
        if self._closing:
            return
        if not self.close_reason:
            self.close_reason = reason
        self._closing = True
        self._end()
        self._driver.schedule_flush()

    def kill(self, reason_code: int | None, reason: str) -> None:
        """Close from the broker's side, with a v5 DISCONNECT when one is allowed."""
        if self._closing:
            return
        if reason_code is not None and self.connected and self.protocol_level == PROTOCOL_5:
            self.send(Disconnect(reason_code))
        self.finish(reason)

    def transport_lost(self, error: str = "") -> None:
        """The driver's transport is gone (closed by the peer, reset, or closed by us)."""
        if not self._closing:
            if self.decoder.buffered:
                # a truncated packet is bad input like any other: one WARNING
                log.warning(
                    "client %s: connection closed in the middle of a packet "
                    "(%d bytes of it received)", self.name, self.decoder.buffered,
                )
                self.close_reason = "connection closed in the middle of a packet"
            else:
                self.close_reason = self.close_reason or (
                    f"connection lost: {error}" if error else "connection closed by the client"
                )
            self._closing = True
        self._end()

    def _end(self) -> None:
        if self._ended:
            return
        self._ended = True
        try:
            self.broker.connection_lost(self)
        except Exception:
            log.exception("client %s: internal error while closing", self.name)

    # -- input -----------------------------------------------------------------------------

    def feed(self, data: bytes) -> Coroutine[Any, Any, None] | None:
        """Handle received bytes. Returns a coroutine when a handler must be awaited
        (a plugin's ``async def`` hook); the driver awaits it before feeding more."""
        if self._closing:
            return None
        self.last_seen = time.monotonic()
        self.decoder.feed(data)
        return self._process()

    def _process(self) -> Coroutine[Any, Any, None] | None:
        broker = self.broker
        hooks = broker.hooks
        handlers = broker.handlers
        decoder = self.decoder
        try:
            while (packet := decoder.next_packet()) is not None:
                if hooks.on_packet_read is not None:
                    try:
                        packet = hooks.on_packet_read(self, packet)
                    except DropPacket:
                        continue
                if type(packet) is Connect:
                    pending: Any = broker.connect(self, packet)
                elif not self.connected and type(packet) not in (Auth, Disconnect):
                    raise ProtocolViolation(f"{type(packet).__name__} before CONNACK")
                else:
                    pending = handlers[type(packet)](self, packet)
                if pending is not None:
                    return self._resume(pending, packet)
                self._processed(packet)
                if self._closing:
                    return None
        except RemoteProtocolError as exc:
            self.protocol_error(exc)
        except Exception:
            self._internal_error()
        return None

    async def _resume(self, pending: Coroutine[Any, Any, None], packet: Packet) -> None:
        try:
            await pending
            self._processed(packet)
        except RemoteProtocolError as exc:
            self.protocol_error(exc)
            return
        except Exception:
            self._internal_error()
            return
        if not self._closing:
            more = self._process()
            if more is not None:
                await more

    def _processed(self, packet: Packet) -> None:
        if type(packet) is Connect and not self.connected:
            if not self.broker.authenticating(self):  # else an AUTH exchange goes on
                self.finish(self.close_reason or "refused")
            return
        hooks = self.broker.hooks
        if hooks.on_packet_processed is not None:
            hooks.on_packet_processed(self, packet, None)

    def _internal_error(self) -> None:
        log.error(
            "client %s: internal error; closing its connection", self.name,
            exc_info=True,  # noqa: LOG014 - always called from an except block
        )
        self.kill(ReasonCode.IMPLEMENTATION_SPECIFIC_ERROR, "internal error")

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
        self.finish(self.close_reason)
