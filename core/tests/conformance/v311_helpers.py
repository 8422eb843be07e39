"""Helpers for the MQTT 3.1.1 (and 3.1) conformance tests: raw bytes, raw clients, waits.

Bad packets are written out byte by byte, independently of the codec under test. Good
packets go through ``midge.codec.encode`` via ``conftest.RawClient``. Every wait is
bounded: a test waits for one packet with a timeout, never for a fixed sleep.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from conftest import RawClient

from midge.codec import (
    ConnAck,
    Connect,
    Packet,
    PubAck,
    PubComp,
    Publish,
    PubRec,
    PubRel,
    SubAck,
    Subscribe,
    Subscription,
)

V31 = 3
V311 = 4
Factory = Callable[..., Any]


# -- bytes on the wire --------------------------------------------------------------------


def varint(value: int) -> bytes:
    """An MQTT variable byte integer."""
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


def string(text: str | bytes) -> bytes:
    """A length-prefixed string; bytes are sent as they are, valid UTF-8 or not."""
    raw = text.encode() if isinstance(text, str) else text
    return len(raw).to_bytes(2, "big") + raw


def connect_bytes(
    client_id: str | bytes = "raw", *, level: int = V311, name: str | bytes | None = None,
    flags: int = 0x02, keepalive: int = 60, rest: bytes = b"",
) -> bytes:
    """A v3 CONNECT; ``rest`` is what follows the client id (will, user name, password)."""
    if name is None:
        name = "MQIsdp" if level == V31 else "MQTT"
    return frame(0x10, string(name), bytes((level, flags)), keepalive.to_bytes(2, "big"),
                 string(client_id), rest)


def publish_bytes(topic: str | bytes, payload: bytes = b"", *, byte0: int = 0x30,
                  packet_id: int | None = None) -> bytes:
    """A v3 PUBLISH with the given first byte (type, DUP, QoS, RETAIN)."""
    pid = b"" if packet_id is None else packet_id.to_bytes(2, "big")
    return frame(byte0, string(topic), pid, payload)


def subscribe_bytes(*filters: tuple[str | bytes, int], packet_id: int = 1,
                    byte0: int = 0x82) -> bytes:
    """A v3 SUBSCRIBE; each filter comes with its raw requested-QoS byte."""
    body = b"".join(string(f) + bytes((options,)) for f, options in filters)
    return frame(byte0, packet_id.to_bytes(2, "big"), body)


def unsubscribe_bytes(*filters: str | bytes, packet_id: int = 1, byte0: int = 0xA2) -> bytes:
    return frame(byte0, packet_id.to_bytes(2, "big"), b"".join(string(f) for f in filters))


# -- raw clients --------------------------------------------------------------------------


def online(raw_factory: Factory, port: int | None = None, client_id: str = "raw",
           level: int = V311, clean: bool = True, **kwargs: Any) -> RawClient:
    """A raw client that sent CONNECT and got CONNACK 0; fails otherwise."""
    raw: RawClient = raw_factory(port=port, level=level)
    ack = raw.connect(client_id, level, clean_start=clean, **kwargs)
    assert isinstance(ack, ConnAck) and ack.reason_code == 0, ack
    return raw


def reconnect(raw_factory: Factory, client_id: str, level: int = V311,
              port: int | None = None) -> RawClient:
    """A clean-session-0 reconnection that must find its session (Session Present 1;
    MQTT 3.1 has no such flag, so there only the return code is checked)."""
    raw: RawClient = raw_factory(port=port, level=level)
    raw.send(Connect(client_id, level, clean_start=False))
    ack = raw.recv()
    assert isinstance(ack, ConnAck) and ack.reason_code == 0, ack
    assert ack.session_present or level == V31, ack
    return raw


def subscribe(raw: RawClient, *subs: tuple[str, int], packet_id: int = 1) -> list[int]:
    """Subscribe to several filters in one SUBSCRIBE; the SUBACK's return codes.

    Retained messages the broker sends right after the SUBACK stay in the decoder."""
    raw.send(Subscribe(packet_id, [Subscription(f, q) for f, q in subs]))
    ack = raw.recv()
    assert isinstance(ack, SubAck) and ack.packet_id == packet_id, ack
    return ack.reason_codes


def nothing(raw: RawClient, wait: float = 0.3) -> None:
    """AssertionError if a packet arrives within ``wait`` seconds (or the link closes)."""
    try:
        packet = raw.recv(wait)
    except AssertionError as exc:
        if "no packet received" in str(exc):
            return
        raise
    raise AssertionError(f"unexpected packet: {packet}")


def expect(raw: RawClient, kind: type[Any], timeout: float = 3.0) -> Any:
    """The next packet, which must be of type ``kind``."""
    packet = raw.recv(timeout)
    assert isinstance(packet, kind), f"expected {kind.__name__}, got {packet}"
    return packet


def publishes(raw: RawClient, count: int, timeout: float = 5.0,
              ack: bool = True) -> list[Publish]:
    """Exactly ``count`` PUBLISHes (in arrival order); with ``ack`` each QoS 1/2 flow is
    completed (PUBACK; PUBREC, then PUBCOMP for the PUBREL) before returning."""
    out: list[Publish] = []
    releasing: set[int] = set()  # QoS 2: PUBREC sent, PUBREL awaited
    deadline = time.monotonic() + timeout
    while len(out) < count or releasing:
        packet = raw.recv(max(0.05, deadline - time.monotonic()))
        if isinstance(packet, PubRel) and packet.packet_id in releasing:
            releasing.discard(packet.packet_id)
            raw.send(PubComp(packet.packet_id))
            continue
        assert isinstance(packet, Publish), packet
        out.append(packet)
        if ack and packet.qos == 1:
            raw.send(PubAck(packet.packet_id))
        elif ack and packet.qos == 2:
            raw.send(PubRec(packet.packet_id))
            releasing.add(packet.packet_id)
    return out


def publish_qos(raw: RawClient, topic: str, payload: bytes, qos: int, packet_id: int = 1,
                retain: bool = False) -> None:
    """Publish at ``qos`` and complete the flow as a well-behaved client."""
    raw.send(Publish(topic, payload, qos, retain, packet_id=packet_id if qos else 0))
    if qos == 1:
        assert raw.recv() == PubAck(packet_id)
    elif qos == 2:
        assert raw.recv() == PubRec(packet_id)
        raw.send(PubRel(packet_id))
        assert raw.recv() == PubComp(packet_id)


def is_closed(raw: RawClient, timeout: float = 3.0) -> list[Packet]:
    """The packets the broker sent before closing; AssertionError if it stays open."""
    return raw.packets_until_close(timeout)


def assert_rejected(raw: RawClient, data: bytes, timeout: float = 3.0) -> list[Packet]:
    """Send ``data``: the broker must close the connection. Returns what it sent first."""
    try:
        raw.send(data)
    except OSError:
        return []  # already closed while we were still writing
    return is_closed(raw, timeout)


def still_serving(raw_factory: Factory, port: int | None = None) -> None:
    """The broker still accepts and answers a fresh client (nothing collateral broke)."""
    probe = online(raw_factory, port, client_id=f"probe{time.monotonic_ns() % 10**9}")
    probe.send(b"\xc0\x00")  # PINGREQ
    assert probe.recv() is not None
    probe.close()
