"""The PROXY protocol parser, with raw bytes: v1 and v2 headers, partial input, and
every malformed case named in its error."""

from __future__ import annotations

import socket
import struct

import pytest

from midge.listeners.proxy import V2_SIGNATURE, ProxyHeader, ProxyHeaderError, ProxyLayer, parse


def v2(command: int, family: int, body: bytes, version: int = 2) -> bytes:
    return V2_SIGNATURE + struct.pack("!BBH", version << 4 | command, family, len(body)) + body


def v2_tcp4(src: str, sport: int, dst: str, dport: int, tlvs: bytes = b"") -> bytes:
    body = socket.inet_aton(src) + socket.inet_aton(dst) + struct.pack("!HH", sport, dport)
    return v2(1, 0x11, body + tlvs)


def v2_tcp6(src: str, sport: int, dst: str, dport: int) -> bytes:
    body = (socket.inet_pton(socket.AF_INET6, src) + socket.inet_pton(socket.AF_INET6, dst)
            + struct.pack("!HH", sport, dport))
    return v2(1, 0x21, body)


def test_v1_tcp4() -> None:
    data = b"PROXY TCP4 203.0.113.7 192.0.2.1 56324 1883\r\n\x10\x0c"
    header = parse(data)
    assert header == ProxyHeader(1, ("203.0.113.7", 56324), ("192.0.2.1", 1883), len(data) - 2)


def test_v1_tcp6_and_unknown() -> None:
    header = parse(b"PROXY TCP6 2001:db8::1 2001:db8::2 4000 8883\r\n")
    assert header is not None and header.source == ("2001:db8::1", 4000)
    unknown = parse(b"PROXY UNKNOWN ffff::1 ffff::2 1 2\r\nrest")
    assert unknown == ProxyHeader(1, None, None, len(b"PROXY UNKNOWN ffff::1 ffff::2 1 2\r\n"))


def test_v2_tcp4_with_tlvs_and_tcp6() -> None:
    tlvs = b"\x01\x00\x02h2" + b"\x04\x00\x03abc"  # ALPN, NOOP
    data = v2_tcp4("198.51.100.9", 40000, "10.0.0.1", 1883, tlvs) + b"\x10"
    header = parse(data)
    assert header == ProxyHeader(2, ("198.51.100.9", 40000), ("10.0.0.1", 1883), len(data) - 1)
    six = parse(v2_tcp6("2001:db8::7", 5, "2001:db8::8", 6))
    assert six is not None and six.source == ("2001:db8::7", 5)


def test_v2_local_and_unspec_keep_the_socket_address() -> None:
    assert parse(v2(0, 0x00, b"")) == ProxyHeader(2, None, None, 16)
    assert parse(v2(0, 0x11, b"\x00" * 12)) == ProxyHeader(2, None, None, 28)
    assert parse(v2(1, 0x31, b"\x00" * 216)) == ProxyHeader(2, None, None, 232)


@pytest.mark.parametrize("data", [
    b"", b"P", b"PROXY", b"PROXY TCP4 1.2.3.4", b"\r\n\r\n\x00", V2_SIGNATURE,
    v2_tcp4("1.2.3.4", 1, "5.6.7.8", 2)[:20],
])
def test_incomplete_headers_ask_for_more(data: bytes) -> None:
    assert parse(data) is None


def test_every_prefix_of_a_header_is_incomplete_then_it_parses() -> None:
    for header in (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\n", v2_tcp4("1.2.3.4", 1, "5.6.7.8", 2)):
        for cut in range(len(header)):
            assert parse(header[:cut]) is None, header[:cut]
        assert parse(header) is not None


@pytest.mark.parametrize(("data", "message"), [
    (b"\x10\x0c\x00\x04MQTT", "no PROXY protocol header"),
    (b"GET / HTTP/1.1\r\n", "no PROXY protocol header"),
    (b"PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n", "has 5 fields, not 6"),
    (b"PROXY UDP4 1.2.3.4 5.6.7.8 1 2\r\n", "is not TCP4, TCP6 or UNKNOWN"),
    (b"PROXY TCP4 1.2.3.999 5.6.7.8 1 2\r\n", "is not an IP address"),
    (b"PROXY TCP4 ::1 5.6.7.8 1 2\r\n", "is not IPv4"),
    (b"PROXY TCP6 1.2.3.4 ::1 1 2\r\n", "is not IPv6"),
    (b"PROXY TCP4 1.2.3.4 5.6.7.8 65536 2\r\n", "port '65536'"),
    (b"PROXY TCP4 1.2.3.4 5.6.7.8 01 2\r\n", "port '01'"),
    (b"PROXY TCP4 1.2.3.4 5.6.7.8 -1 2\r\n", "port '-1'"),
    (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\xff\r\n", "not ASCII"),
    (b"PROXY " + b"A" * 120, "longer than 107 bytes"),
    (V2_SIGNATURE[:-1] + b"X" + b"\x21\x11\x00\x0c", "no PROXY protocol header"),
    (v2(1, 0x11, b"\x00" * 12, version=1), "version 1, not 2"),
    (v2(2, 0x11, b"\x00" * 12), "command 2"),
    (v2(1, 0x55, b"\x00" * 12), "address family 0x55"),
    (v2(1, 0x11, b"\x00" * 8), "IPv4 addresses need 12 bytes, got 8"),
    (v2(1, 0x21, b"\x00" * 12), "IPv6 addresses need 36 bytes, got 12"),
    (V2_SIGNATURE + b"\x21\x11\xff\xff", "PROXY v2 header of 65535 bytes"),
])
def test_malformed_headers_say_what_is_wrong(data: bytes, message: str) -> None:
    with pytest.raises(ProxyHeaderError, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse(data)


def test_the_layer_passes_the_rest_through_byte_by_byte() -> None:
    layer = ProxyLayer()
    stream = b"PROXY TCP4 203.0.113.7 192.0.2.1 56324 1883\r\nMQTT bytes"
    out = b"".join(layer.receive(stream[i:i + 1]) for i in range(len(stream)))
    assert out == b"MQTT bytes"
    assert layer.established and layer.address == ("203.0.113.7", 56324)
    assert layer.receive(b"more") == b"more"
    layer.send(b"reply")
    assert layer.take() == b"reply" and layer.take() == b""
