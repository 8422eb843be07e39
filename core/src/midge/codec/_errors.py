"""The codec's exceptions.

The rule (after h11): a RemoteProtocolError means the peer sent something the protocol
forbids and carries the reason code to answer with; a LocalProtocolError means our own
code asked the codec to emit something invalid, which is a bug on this side.
"""

from __future__ import annotations

from ._reasons import ReasonCode


class ProtocolError(Exception):
    """Base class of every error the codec raises."""

    def __init__(self, reason_code: int, message: str) -> None:
        super().__init__(message)
        self.reason_code = ReasonCode(reason_code)
        self.message = message

    def __str__(self) -> str:
        return f"{self.message} (reason 0x{int(self.reason_code):02X} {self.reason_code.name})"


class RemoteProtocolError(ProtocolError):
    """The bytes received break the protocol; ``reason_code`` is the answer to give."""


class MalformedPacket(RemoteProtocolError):
    """Bytes that cannot be parsed as the packet they claim to be (0x81)."""

    def __init__(self, message: str) -> None:
        super().__init__(ReasonCode.MALFORMED_PACKET, message)


class ProtocolViolation(RemoteProtocolError):
    """A well-formed packet that the protocol does not allow here (0x82)."""

    def __init__(self, message: str) -> None:
        super().__init__(ReasonCode.PROTOCOL_ERROR, message)


class PacketTooLarge(RemoteProtocolError):
    """A fixed header announcing more than the maximum packet size (0x95)."""

    def __init__(self, size: int, maximum: int) -> None:
        super().__init__(
            ReasonCode.PACKET_TOO_LARGE,
            f"packet of {size} bytes exceeds the maximum packet size {maximum}",
        )
        self.size = size
        self.maximum = maximum


class UnsupportedProtocolVersion(RemoteProtocolError):
    """A CONNECT for a protocol name or level this codec does not speak."""

    def __init__(self, message: str, level: int) -> None:
        super().__init__(ReasonCode.UNSUPPORTED_PROTOCOL_VERSION, message)
        self.level = level


class LocalProtocolError(ProtocolError):
    """This side tried to encode a packet the protocol does not allow."""

    def __init__(self, message: str) -> None:
        super().__init__(ReasonCode.IMPLEMENTATION_SPECIFIC_ERROR, message)
