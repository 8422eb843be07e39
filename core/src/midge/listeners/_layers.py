"""Transport layers between a socket and a Connection: PROXY header, TLS, WebSocket.

The rule: a layer is sans-I/O, like the engine. It turns the bytes below it into the
bytes above it (``receive``) and the bytes above into the bytes below (``send``, then
``take``); it says when its handshake is over (``established``), when the peer ended it
(``ended``), and raises ``TransportError`` for bad input after queueing what the peer
should be told (an HTTP 400, a WebSocket close code, a TLS alert). A ``Pipeline`` stacks
them from the wire up; drivers move bytes through it and never look inside.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from ..api import PeerCertificate


class TransportError(Exception):
    """Bad input below MQTT (a TLS handshake, a WebSocket frame, a PROXY header): only
    this connection is closed, with this message logged once."""


class Layer(Protocol):
    """One layer of a transport stack."""

    @property
    def established(self) -> bool:
        """The handshake is over: bytes pass both ways."""

    @property
    def ended(self) -> str | None:
        """Why the peer ended the layer (a WebSocket close, a TLS close_notify)."""

    @property
    def address(self) -> tuple[str, int] | None:
        """A client address the layer learnt (PROXY header, X-Forwarded-For)."""

    @property
    def certificate(self) -> PeerCertificate | None:
        """The verified client certificate (TLS)."""

    @property
    def identity(self) -> str | None:
        """A username the layer established (TLS ``use_identity_as_username``)."""

    def receive(self, data: bytes) -> bytes:
        """Bytes from below; returns the bytes for the layer above."""

    def send(self, data: bytes) -> None:
        """Bytes from above, to be carried below."""

    def take(self) -> bytes:
        """What to hand to the layer below (or the socket) now."""

    def close(self) -> None:
        """Start this side's close (WebSocket close frame, TLS close_notify)."""


class Pipeline:
    """Layers from the wire up (``layers[0]`` touches the socket)."""

    __slots__ = ("layers",)

    def __init__(self, layers: list[Layer]) -> None:
        self.layers = layers

    @property
    def established(self) -> bool:
        return all(layer.established for layer in self.layers)

    @property
    def ended(self) -> str | None:
        for layer in self.layers:
            if layer.ended is not None:
                return layer.ended
        return None

    @property
    def address(self) -> tuple[str, int] | None:
        """The client address the layers learnt, the one nearest the client winning
        (the layer highest up: X-Forwarded-For behind a PROXY-speaking balancer)."""
        for layer in reversed(self.layers):
            if layer.address is not None:
                return layer.address
        return None

    @property
    def certificate(self) -> PeerCertificate | None:
        for layer in self.layers:
            if layer.certificate is not None:
                return layer.certificate
        return None

    @property
    def identity(self) -> str | None:
        for layer in self.layers:
            if layer.identity is not None:
                return layer.identity
        return None

    def receive(self, data: bytes) -> bytes:
        """Wire bytes in, application (MQTT) bytes out; raises TransportError."""
        for layer in self.layers:
            data = layer.receive(data)
            if not data:
                # nothing for the layers above (b"" would mean end of stream to some)
                return b""
        return data

    def send(self, data: bytes) -> bytes:
        """MQTT bytes in, the wire bytes to write out (with anything the layers queued)."""
        if data:
            self.layers[-1].send(data)
        return self.take()

    def take(self) -> bytes:
        """The wire bytes every layer has queued, each passed down through the ones
        below it."""
        out = b""
        for layer in reversed(self.layers):
            if out:
                layer.send(out)
            out = layer.take()
        return out

    def close(self) -> bytes:
        """Close every layer from the top down; the wire bytes that says so."""
        out = b""
        for layer in reversed(self.layers):
            if out:
                layer.send(out)
            layer.close()
            out = layer.take()
        return out
