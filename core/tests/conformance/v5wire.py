"""Helpers for the MQTT 5.0 conformance tests: raw v5 clients, hand-written packet bytes,
and waits that end on a specific packet (never on a fixed sleep when a packet can tell).

Bytes for malformed input are written out here, independently of the codec under test;
well-formed packets are encoded with ``midge.codec``. The clients are the ``RawClient`` of
core/tests/conftest.py (through the ``raw_factory`` fixture); this module does not import
``conftest``, so a conftest.py in this directory cannot shadow it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from midge.codec import (
    ConnAck,
    Connect,
    Disconnect,
    Packet,
    Property,
    PubAck,
    PubComp,
    Publish,
    PubRec,
    PubRel,
    SubAck,
    Subscribe,
    Subscription,
    UnsubAck,
    Unsubscribe,
)

Factory = Callable[..., Any]
V5 = 5

#: reason codes each packet type may carry (MQTT 5.0 section 2.4 and the packet sections)
CONNACK_CODES = frozenset({0x00, 0x80, 0x81, 0x82, 0x83, 0x84, 0x85, 0x86, 0x87, 0x88, 0x89,
                           0x8A, 0x8C, 0x90, 0x95, 0x97, 0x99, 0x9A, 0x9B, 0x9C, 0x9D, 0x9F})
PUBACK_CODES = frozenset({0x00, 0x10, 0x80, 0x83, 0x87, 0x90, 0x91, 0x97, 0x99})
PUBREC_CODES = PUBACK_CODES
PUBREL_CODES = frozenset({0x00, 0x92})
PUBCOMP_CODES = PUBREL_CODES
SUBACK_CODES = frozenset({0x00, 0x01, 0x02, 0x80, 0x83, 0x87, 0x8F, 0x91, 0x97, 0x9E, 0xA1,
                          0xA2})
UNSUBACK_CODES = frozenset({0x00, 0x11, 0x80, 0x83, 0x87, 0x8F, 0x91})
DISCONNECT_CODES = frozenset({0x00, 0x04, 0x80, 0x81, 0x82, 0x83, 0x87, 0x89, 0x8B, 0x8D, 0x8E,
                              0x8F, 0x90, 0x93, 0x94, 0x95, 0x96, 0x97, 0x98, 0x99, 0x9A, 0x9B,
                              0x9C, 0x9D, 0x9E, 0x9F, 0xA0, 0xA1, 0xA2})
AUTH_CODES = frozenset({0x00, 0x18, 0x19})


# -- bytes on the wire ---------------------------------------------------------------------


def varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def frame(byte0: int, *parts: bytes) -> bytes:
    """A control packet: first byte, remaining length, body."""
    body = b"".join(parts)
    return bytes((byte0,)) + varint(len(body)) + body


def s(raw: bytes | str) -> bytes:
    """A length-prefixed string or binary field (bytes are taken as they are)."""
    data = raw.encode() if isinstance(raw, str) else raw
    return len(data).to_bytes(2, "big") + data


def props(*items: bytes) -> bytes:
    """A property block from already encoded properties."""
    body = b"".join(items)
    return varint(len(body)) + body


def connect_bytes(client_id: bytes | str = b"raw", flags: int = 0x02, keepalive: int = 60,
                  properties: bytes = b"\x00", payload_tail: bytes = b"",
                  name: bytes = b"MQTT", level: int = 5) -> bytes:
    """A v5 CONNECT written by hand: ``payload_tail`` follows the client id."""
    return frame(0x10, s(name), bytes((level, flags)), keepalive.to_bytes(2, "big"),
                 properties, s(client_id), payload_tail)


# -- clients -------------------------------------------------------------------------------


def v5(raw_factory: Factory, cid: str = "", port: int | None = None, clean: bool = True,
       expiry: int | None = None, will: Any = None, keepalive: int = 60,
       **properties: Any) -> Any:
    """A connected raw v5 client (CONNACK 0x00 checked); ``raw.connack`` keeps the CONNACK.

    ``properties`` are CONNECT properties by ``Property`` name, e.g.
    ``receive_maximum=2``.
    """
    raw = raw_factory(port=port, level=V5)
    prop: dict[int, Any] = {Property[name.upper()]: value for name, value in properties.items()}
    if expiry is not None:
        prop[Property.SESSION_EXPIRY_INTERVAL] = expiry
    connack = raw.connect(cid, V5, clean_start=clean, keepalive=keepalive, will=will,
                          properties=prop)
    assert isinstance(connack, ConnAck) and connack.reason_code == 0, connack
    raw.connack = connack
    return raw


def connect_raw(raw_factory: Factory, packet: Connect, port: int | None = None) -> Any:
    """Send a CONNECT (any outcome); returns the client; read the answer yourself."""
    raw = raw_factory(port=port, level=V5)
    raw.decoder.protocol_level = V5
    raw.send(packet, V5)
    return raw


def subscribe(raw: Any, topic_filter: str, qos: int = 0, packet_id: int = 1,
              no_local: bool = False, retain_as_published: bool = False,
              retain_handling: int = 0, sid: int | None = None) -> list[int]:
    """One SUBSCRIBE; returns the SUBACK reason codes (the packet id is checked)."""
    sub = Subscription(topic_filter, qos, no_local, retain_as_published, retain_handling)
    props_: dict[int, Any] = {} if sid is None else {Property.SUBSCRIPTION_IDENTIFIER: [sid]}
    raw.send(Subscribe(packet_id, [sub], props_))
    suback = next_of(raw, SubAck)
    assert suback.packet_id == packet_id, suback
    return list(suback.reason_codes)


def unsubscribe(raw: Any, *filters: str, packet_id: int = 1) -> list[int]:
    raw.send(Unsubscribe(packet_id, list(filters)))
    unsuback = next_of(raw, UnsubAck)
    assert unsuback.packet_id == packet_id, unsuback
    return list(unsuback.reason_codes)


def publish(raw: Any, topic: str, payload: bytes = b"x", qos: int = 0,
            retain: bool = False, packet_id: int = 1, dup: bool = False,
            **properties: Any) -> Packet | None:
    """Publish and finish the flow (QoS 2: PUBREC, PUBREL, PUBCOMP); returns the PUBACK or
    PUBREC (None for QoS 0)."""
    prop: dict[int, Any] = {Property[name.upper()]: value for name, value in properties.items()}
    raw.send(Publish(topic, payload, qos, retain, dup, packet_id if qos else 0, prop))
    if qos == 1:
        return next_of(raw, PubAck)
    if qos == 2:
        pubrec = next_of(raw, PubRec)
        if pubrec.reason_code < 0x80:
            raw.send(PubRel(packet_id))
            pubcomp = next_of(raw, PubComp)
            assert pubcomp.packet_id == packet_id and pubcomp.reason_code == 0, pubcomp
        return pubrec
    return None


def next_of(raw: Any, kind: type[Any], timeout: float = 3.0) -> Any:
    """The next packet, which must be a ``kind``."""
    packet = raw.recv(timeout)
    assert isinstance(packet, kind), f"expected {kind.__name__}, got {packet!r}"
    return packet


def expect_publish(raw: Any, timeout: float = 3.0, ack: bool = True) -> Publish:
    """The next PUBLISH (acknowledged at QoS 1 when ``ack``)."""
    packet = next_of(raw, Publish, timeout)
    if ack and packet.qos == 1:
        raw.send(PubAck(packet.packet_id))
    return packet


def quiet(raw: Any, wait: float = 0.3) -> None:
    """Nothing arrives for ``wait`` seconds and the connection stays open."""
    try:
        packet = raw.recv(timeout=wait)
    except AssertionError as exc:
        if "closed" in str(exc):
            raise AssertionError("the broker closed the connection") from None
        return
    raise AssertionError(f"unexpected packet {packet!r}")


def drain(raw: Any, wait: float = 0.3, limit: int = 5000) -> list[Packet]:
    """Every packet until the connection is quiet for ``wait`` seconds (QoS 1 PUBLISHes are
    acknowledged); fails if the connection closes."""
    out: list[Packet] = []
    for _ in range(limit):
        try:
            packet = raw.recv(timeout=wait)
        except AssertionError as exc:
            if "closed" in str(exc):
                raise AssertionError(f"closed by the broker after {out!r}") from None
            return out
        out.append(packet)
        if isinstance(packet, Publish) and packet.qos == 1:
            raw.send(PubAck(packet.packet_id))
    raise AssertionError(f"more than {limit} packets")


def closed_with(raw: Any, code: int, kind: type[Any] = Disconnect,
                timeout: float = 3.0) -> Any:
    """The broker's last packet is ``kind`` with ``code`` and then it closes."""
    packets = raw.packets_until_close(timeout)
    assert packets, "closed without a packet"
    last = packets[-1]
    assert isinstance(last, kind) and last.reason_code == code, packets
    return last


def closed_silently(raw: Any, timeout: float = 3.0) -> None:
    """The broker closes without sending anything."""
    assert raw.packets_until_close(timeout) == []


def wait_until(predicate: Callable[[], bool], timeout: float = 3.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.02)
    raise AssertionError("condition not met in time")


def raw_bytes_until_quiet(raw: Any, wait: float = 0.3) -> bytes:
    """The bytes the broker sends until it is quiet for ``wait`` seconds (not decoded)."""
    out = bytearray()
    for _ in range(1000):
        raw.sock.settimeout(wait)
        try:
            data = raw.sock.recv(65536)
        except TimeoutError:
            return bytes(out)
        if not data:
            return bytes(out)
        out += data
    return bytes(out)
