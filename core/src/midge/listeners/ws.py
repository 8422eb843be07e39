"""WebSocket listeners (``type = "ws"``, and ``"wss"`` over TLS): MQTT over WebSocket as
the MQTT specification's WebSocket section describes it, with wsproto doing the framing.

The rule: the WebSocket is only a carrier. The upgrade must ask for the listener's
``path`` and offer the ``mqtt`` (or ``mqttv3.1``) subprotocol, else it is refused with an
HTTP status; the payloads of binary frames form one byte stream for the Connection (a
packet may span frames, a frame may hold several packets), and what the outbox writes
goes out as binary frames. Text frames (1003) and frames over ``max_frame_size`` (1009)
close the connection; pings are answered; a close from either side is a close handshake.
"""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit

from wsproto import ConnectionType, WSConnection
from wsproto.connection import ConnectionState
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Ping,
    RejectConnection,
    RejectData,
    Request,
    TextMessage,
)
from wsproto.utilities import LocalProtocolError, RemoteProtocolError

from ..config import ListenerSettings
from ._base import Acceptor, Listener
from ._layers import Layer, TransportError
from .tcp import bind_stack, proxy_layers
from .tls import Contexts

#: subprotocols MQTT clients offer, in the order the broker prefers them
SUBPROTOCOLS = ("mqtt", "mqttv3.1")
#: close codes (RFC 6455 section 7.4.1)
CLOSE_NORMAL = 1000
CLOSE_UNSUPPORTED_DATA = 1003
CLOSE_TOO_BIG = 1009


class WebSocketLayer:
    """The server side of one WebSocket connection."""

    __slots__ = ("_frame", "_out", "_spec", "_ws", "address", "ended", "established")

    certificate = None
    identity = None

    def __init__(self, spec: ListenerSettings) -> None:
        self._spec = spec
        self._ws = WSConnection(ConnectionType.SERVER)
        self._out = bytearray()
        #: bytes of the binary frame being received so far
        self._frame = 0
        self.established = False
        self.ended: str | None = None
        #: X-Forwarded-For's client, with ``trust_forwarded``
        self.address: tuple[str, int] | None = None

    def receive(self, data: bytes) -> bytes:
        ws = self._ws
        try:
            ws.receive_data(data)
        except RemoteProtocolError as exc:
            self._reject(400, f"bad WebSocket upgrade request: {exc}")
        chunks: list[bytes] = []
        limit = self._spec.max_frame_size
        for event in ws.events():
            if isinstance(event, BytesMessage):
                self._frame += len(event.data)
                if self._frame > limit:
                    self._close(CLOSE_TOO_BIG, f"WebSocket frame larger than max_frame_size "
                                               f"({limit} bytes)")
                if event.frame_finished:
                    self._frame = 0
                chunks.append(bytes(event.data))
            elif isinstance(event, Request):
                self._upgrade(event)
            elif isinstance(event, TextMessage):
                self._close(CLOSE_UNSUPPORTED_DATA,
                            "WebSocket text frame (MQTT travels in binary frames)")
            elif isinstance(event, Ping):
                self._out += ws.send(event.response())
            elif isinstance(event, CloseConnection):
                if ws.state is ConnectionState.REMOTE_CLOSING:
                    self._out += ws.send(event.response())
                if self.ended is None:
                    self.ended = (f"WebSocket closed by the client ({event.code}"
                                  + (f": {event.reason}" if event.reason else "") + ")")
        return b"".join(chunks)

    def _upgrade(self, request: Request) -> None:
        spec = self._spec
        path = urlsplit(request.target).path
        if path != spec.path:
            self._reject(404, f"WebSocket path {path[:100]!r} is not {spec.path!r}")
        headers = {name.decode("latin-1").lower(): value.decode("latin-1")
                   for name, value in request.extra_headers}
        if spec.allowed_origins:
            origin = headers.get("origin", "")
            if origin not in spec.allowed_origins:
                self._reject(403, f"WebSocket Origin {origin[:100]!r} is not allowed")
        for offered in SUBPROTOCOLS:
            if offered in request.subprotocols:
                subprotocol = offered
                break
        else:
            # the client MUST offer "mqtt" [MQTT-6.0.0-3]; without it there is no
            # subprotocol the broker could select [MQTT-6.0.0-4]
            self._reject(400, "WebSocket upgrade without the mqtt subprotocol (offered: "
                              + (", ".join(request.subprotocols)[:100] or "none") + ")")
        if spec.trust_forwarded and "x-forwarded-for" in headers:
            # the left-most entry is the client; later ones are the proxies it passed
            first = headers["x-forwarded-for"].split(",")[0].strip()
            try:
                self.address = (str(ipaddress.ip_address(first)), 0)
            except ValueError:
                self._reject(400, f"X-Forwarded-For {first[:60]!r} is not an IP address")
        self._out += self._ws.send(AcceptConnection(subprotocol=subprotocol))
        self.established = True

    def _reject(self, status: int, why: str) -> None:
        body = (why + "\n").encode()
        try:
            self._out += self._ws.send(RejectConnection(
                status_code=status, has_body=True,
                headers=[(b"content-type", b"text/plain; charset=utf-8"),
                         (b"content-length", str(len(body)).encode()),
                         (b"connection", b"close")],
            ))
            self._out += self._ws.send(RejectData(data=body))
        except LocalProtocolError:
            pass  # the request was too broken to be answered in HTTP
        raise TransportError(f"{why} (HTTP {status})")

    def _close(self, code: int, why: str) -> None:
        if self._ws.state is ConnectionState.OPEN:
            self._out += self._ws.send(CloseConnection(code=code, reason=why[:120]))
        raise TransportError(f"{why}: closed with {code}")

    def send(self, data: bytes) -> None:
        if self._ws.state is ConnectionState.OPEN:
            self._out += self._ws.send(BytesMessage(data=data))

    def take(self) -> bytes:
        out = bytes(self._out)
        self._out.clear()
        return out

    def close(self) -> None:
        if self._ws.state is ConnectionState.OPEN:
            self._out += self._ws.send(CloseConnection(code=CLOSE_NORMAL))


async def bind(acceptor: Acceptor, spec: ListenerSettings) -> Listener:
    """Bind a ws or wss listener (a wss one loads its certificates first)."""
    contexts = Contexts(spec) if spec.tls else None

    def make_layers() -> list[Layer]:
        layers: list[Layer] = proxy_layers(spec)
        if contexts is not None:
            layers.append(contexts.layer())
        layers.append(WebSocketLayer(spec))
        return layers

    return await bind_stack(acceptor, spec, make_layers,
                            contexts.reload if contexts is not None else None)
