"""The PROXY protocol (HAProxy's v1 text and v2 binary headers), parsed sans-I/O.

The rule: this module reads bytes and nothing else. ``parse`` looks at what arrived so
far and says "need more", "here is the header and where MQTT (or TLS) starts", or raises
``ProxyHeaderError`` naming what is wrong; ``ProxyLayer`` puts it in a listener's stack,
first on the wire, so the address it carries replaces the socket's before the
connection is accepted.
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass

from ._layers import TransportError

#: the v2 signature (section 2.2 of HAProxy's proxy-protocol.txt)
V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
V1_PREFIX = b"PROXY "
#: a v1 line is at most 107 bytes, CRLF included
V1_MAX = 107
#: the largest v2 header accepted (addresses plus TLVs); the format allows 64 KiB
V2_MAX_PAYLOAD = 4096
_V2_FAMILIES = {0x11: "TCP4", 0x12: "UDP4", 0x21: "TCP6", 0x22: "UDP6", 0x31: "UNIX_STREAM",
                0x32: "UNIX_DGRAM", 0x00: "UNSPEC"}


class ProxyHeaderError(TransportError):
    """A missing or malformed PROXY protocol header."""


@dataclass(frozen=True, slots=True)
class ProxyHeader:
    """What a header carried: the original client (``source``) and the address it
    connected to (``destination``); both None for a LOCAL (health check) or UNKNOWN
    connection, whose socket address stands."""

    version: int
    source: tuple[str, int] | None
    destination: tuple[str, int] | None
    #: bytes taken by the header (what follows is the client's stream)
    length: int


def parse(data: bytes) -> ProxyHeader | None:
    """The header at the start of ``data``; None while it is incomplete."""
    if data[:12] == V2_SIGNATURE[: len(data[:12])] and data[:1] == b"\r":
        return _parse_v2(data) if len(data) >= 16 else None
    if data[:6] == V1_PREFIX[: len(data[:6])]:
        return _parse_v1(data) if len(data) >= 6 else None
    raise ProxyHeaderError("no PROXY protocol header (the listener has proxy_protocol = true)")


def _parse_v1(data: bytes) -> ProxyHeader | None:
    end = data.find(b"\r\n", 0, V1_MAX)
    if end < 0:
        if len(data) >= V1_MAX:
            raise ProxyHeaderError("PROXY v1 line longer than 107 bytes or without CRLF")
        return None
    try:
        line = data[:end].decode("ascii")
    except UnicodeDecodeError:
        raise ProxyHeaderError("PROXY v1 line is not ASCII") from None
    parts = line.split(" ")
    if len(parts) >= 2 and parts[1] == "UNKNOWN":
        return ProxyHeader(1, None, None, end + 2)
    if len(parts) != 6:
        raise ProxyHeaderError(f"PROXY v1 line has {len(parts)} fields, not 6: {line[:60]!r}")
    _, family, src, dst, sport, dport = parts
    if family not in ("TCP4", "TCP6"):
        raise ProxyHeaderError(f"PROXY v1 protocol {family[:10]!r} is not TCP4, TCP6 or UNKNOWN")
    version = 4 if family == "TCP4" else 6
    return ProxyHeader(1, (_ip(src, version), _port(sport)), (_ip(dst, version), _port(dport)),
                       end + 2)


def _ip(text: str, version: int) -> str:
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        raise ProxyHeaderError(f"PROXY v1 address {text[:45]!r} is not an IP address") from None
    if address.version != version:
        raise ProxyHeaderError(f"PROXY v1 address {text!r} is not IPv{version}")
    return str(address)


def _port(text: str) -> int:
    # digits only, no sign, no leading zeros (the specification's grammar)
    if not text.isdigit() or (len(text) > 1 and text[0] == "0") or int(text) > 65535:
        raise ProxyHeaderError(f"PROXY v1 port {text[:10]!r} is not 0..65535")
    return int(text)


def _parse_v2(data: bytes) -> ProxyHeader | None:
    if data[:12] != V2_SIGNATURE:
        raise ProxyHeaderError("bad PROXY v2 signature")
    version_command, family, size = struct.unpack_from("!BBH", data, 12)
    if version_command >> 4 != 2:
        raise ProxyHeaderError(f"PROXY v2 header with version {version_command >> 4}, not 2")
    command = version_command & 0x0F
    if command not in (0, 1):
        raise ProxyHeaderError(f"PROXY v2 command {command} is not LOCAL (0) or PROXY (1)")
    if size > V2_MAX_PAYLOAD:
        raise ProxyHeaderError(f"PROXY v2 header of {size} bytes (at most {V2_MAX_PAYLOAD})")
    if len(data) < 16 + size:
        return None
    if family not in _V2_FAMILIES:
        raise ProxyHeaderError(f"PROXY v2 address family 0x{family:02X} is unknown")
    length = 16 + size
    body = data[16:length]
    if command == 0 or family in (0x00, 0x31, 0x32):
        # LOCAL (the proxy's own health check) or an address that is not IP: the
        # socket's address stands
        return ProxyHeader(2, None, None, length)
    if family in (0x11, 0x12):
        if size < 12:
            raise ProxyHeaderError(f"PROXY v2 IPv4 addresses need 12 bytes, got {size}")
        src4, dst4, sport, dport = struct.unpack_from("!4s4sHH", body)
        return ProxyHeader(2, (str(ipaddress.IPv4Address(src4)), sport),
                           (str(ipaddress.IPv4Address(dst4)), dport), length)
    if size < 36:
        raise ProxyHeaderError(f"PROXY v2 IPv6 addresses need 36 bytes, got {size}")
    src6, dst6, sport, dport = struct.unpack_from("!16s16sHH", body)
    return ProxyHeader(2, (str(ipaddress.IPv6Address(src6)), sport),
                       (str(ipaddress.IPv6Address(dst6)), dport), length)


class ProxyLayer:
    """The first layer of a ``proxy_protocol`` listener: reads the header, then passes
    bytes through untouched."""

    __slots__ = ("_buffer", "_out", "address", "established", "header")

    def __init__(self) -> None:
        self._buffer = b""
        self._out = bytearray()
        self.established = False
        self.header: ProxyHeader | None = None
        #: the client address the header carried (None: keep the socket's)
        self.address: tuple[str, int] | None = None

    ended: str | None = None
    certificate = None
    identity = None

    def receive(self, data: bytes) -> bytes:
        if self.established:
            return data
        self._buffer += data
        header = parse(self._buffer)
        if header is None:
            return b""
        self.header = header
        self.address = header.source
        self.established = True
        rest = self._buffer[header.length:]
        self._buffer = b""
        return rest

    def send(self, data: bytes) -> None:
        self._out += data

    def take(self) -> bytes:
        out = bytes(self._out)
        self._out.clear()
        return out

    def close(self) -> None:
        return None
