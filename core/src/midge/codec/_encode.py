"""Sans-I/O encoder: packets to bytes for a given protocol level.

The rule: the encoder refuses (LocalProtocolError) to emit what the decoder would reject,
except where a test needs raw bytes; and a PUBLISH fanned out to many subscribers is
encoded in pieces so the topic and payload are encoded once, not once per subscriber.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ._errors import LocalProtocolError
from ._packets import (
    PROTOCOL_5,
    Auth,
    ConnAck,
    Connect,
    Disconnect,
    Packet,
    PacketType,
    PingReq,
    PingResp,
    Properties,
    PubAck,
    PubComp,
    Publish,
    PubRec,
    PubRel,
    SubAck,
    Subscribe,
    UnsubAck,
    Unsubscribe,
)
from ._primitives import encode_binary, encode_string, encode_varint
from ._properties import WILL, encode_properties


def _frame(byte0: int, body: bytes) -> bytes:
    return bytes((byte0,)) + encode_varint(len(body)) + body


def _connect(p: Connect, level: int) -> bytes:
    if p.protocol_level == 3:
        head = encode_string("MQIsdp") + b"\x03"
    else:
        head = encode_string("MQTT") + bytes((p.protocol_level,))
    flags = 0x02 if p.clean_start else 0
    will = p.will
    if will is not None:
        if will.qos not in (0, 1, 2):
            raise LocalProtocolError(f"will QoS {will.qos} is not 0, 1 or 2")
        flags |= 0x04 | (will.qos << 3) | (0x20 if will.retain else 0)
    if p.username is not None:
        flags |= 0x80
    if p.password is not None:
        flags |= 0x40
    parts = [head, bytes((flags,)), p.keepalive.to_bytes(2, "big")]
    v5 = p.protocol_level == PROTOCOL_5
    if v5:
        parts.append(encode_properties(p.properties, PacketType.CONNECT))
    parts.append(encode_string(p.client_id))
    if will is not None:
        if v5:
            parts.append(encode_properties(will.properties, WILL))
        parts.append(encode_string(will.topic))
        parts.append(encode_binary(will.payload))
    if p.username is not None:
        parts.append(encode_string(p.username))
    if p.password is not None:
        parts.append(encode_binary(p.password))
    return _frame(0x10, b"".join(parts))


def _connack(p: ConnAck, level: int) -> bytes:
    body = bytes((1 if p.session_present else 0, p.reason_code))
    if level == PROTOCOL_5:
        body += encode_properties(p.properties, PacketType.CONNACK)
    return _frame(0x20, body)


def publish_header(p: Publish, level: int) -> tuple[int, bytes, bytes]:
    """The pieces of a PUBLISH around its packet id: (byte0, topic, properties+payload).

    The caller frames them; see ``frame_publish``.
    """
    return publish_pieces(p.topic, p.payload, p.qos, p.retain, p.dup, p.properties, level)


def publish_pieces(topic: str, payload: bytes, qos: int, retain: bool, dup: bool,
                   properties: Properties, level: int) -> tuple[int, bytes, bytes]:
    """``publish_header`` from the fields, for a broker framing a message it holds (no
    Publish packet is built per delivery)."""
    if qos not in (0, 1, 2):
        raise LocalProtocolError(f"PUBLISH QoS {qos} is not 0, 1 or 2")
    byte0 = 0x30 | (qos << 1) | (0x08 if dup else 0) | (0x01 if retain else 0)
    if level == PROTOCOL_5:
        tail = encode_properties(properties, PacketType.PUBLISH) + payload
    else:
        tail = payload
    return byte0, encode_string(topic), tail


def frame_publish(byte0: int, topic: bytes, packet_id: int, tail: bytes) -> bytes:
    """Assemble a PUBLISH from ``publish_header`` pieces and a packet id (0 for QoS 0)."""
    if packet_id:
        length = len(topic) + 2 + len(tail)
        return b"".join(
            (bytes((byte0,)), encode_varint(length), topic, packet_id.to_bytes(2, "big"), tail)
        )
    return b"".join((bytes((byte0,)), encode_varint(len(topic) + len(tail)), topic, tail))


def _publish(p: Publish, level: int) -> bytes:
    if p.qos and not p.packet_id:
        raise LocalProtocolError("PUBLISH with QoS > 0 needs a packet identifier")
    byte0, topic, tail = publish_header(p, level)
    return frame_publish(byte0, topic, p.packet_id if p.qos else 0, tail)


def _ack(byte0: int, ptype: int) -> Callable[[Any, int], bytes]:
    def encode(p: Any, level: int) -> bytes:
        body = p.packet_id.to_bytes(2, "big")
        if level == PROTOCOL_5 and (p.reason_code or p.properties):
            body += bytes((p.reason_code,))
            if p.properties:
                body += encode_properties(p.properties, ptype)
        return _frame(byte0, body)

    return encode


#: the first byte of each acknowledgement (PUBREL's reserved flags are 0b0010)
_ACK_BYTE0: dict[type[Any], int] = {PubAck: 0x40, PubRec: 0x50, PubRel: 0x62, PubComp: 0x70}


def plain_ack(kind: type[PubAck | PubRec | PubRel | PubComp], packet_id: int) -> bytes:
    """A PUBACK, PUBREC, PUBREL or PUBCOMP with reason 0 and no properties: the same four
    bytes at every protocol level (MQTT 5 leaves out a success code without properties),
    encoded without building the packet, for a broker acknowledging every message."""
    return bytes((_ACK_BYTE0[kind], 2)) + packet_id.to_bytes(2, "big")


def _subscribe(p: Subscribe, level: int) -> bytes:
    parts = [p.packet_id.to_bytes(2, "big")]
    if level == PROTOCOL_5:
        parts.append(encode_properties(p.properties, PacketType.SUBSCRIBE))
    for sub in p.subscriptions:
        parts.append(encode_string(sub.topic_filter))
        options = sub.qos
        if level == PROTOCOL_5:
            options |= (
                (0x04 if sub.no_local else 0)
                | (0x08 if sub.retain_as_published else 0)
                | (sub.retain_handling << 4)
            )
        parts.append(bytes((options,)))
    return _frame(0x82, b"".join(parts))


def _suback(p: SubAck, level: int) -> bytes:
    body = p.packet_id.to_bytes(2, "big")
    if level == PROTOCOL_5:
        body += encode_properties(p.properties, PacketType.SUBACK)
    return _frame(0x90, body + bytes(p.reason_codes))


def _unsubscribe(p: Unsubscribe, level: int) -> bytes:
    parts = [p.packet_id.to_bytes(2, "big")]
    if level == PROTOCOL_5:
        parts.append(encode_properties(p.properties, PacketType.UNSUBSCRIBE))
    parts.extend(encode_string(f) for f in p.topic_filters)
    return _frame(0xA2, b"".join(parts))


def _unsuback(p: UnsubAck, level: int) -> bytes:
    body = p.packet_id.to_bytes(2, "big")
    if level == PROTOCOL_5:
        body += encode_properties(p.properties, PacketType.UNSUBACK) + bytes(p.reason_codes)
    return _frame(0xB0, body)


def _reason(byte0: int, ptype: int) -> Callable[[Any, int], bytes]:
    def encode(p: Any, level: int) -> bytes:
        if level < PROTOCOL_5:
            if ptype == PacketType.AUTH:
                raise LocalProtocolError("AUTH does not exist before MQTT 5")
            return bytes((byte0, 0))
        if not p.reason_code and not p.properties:
            return bytes((byte0, 0))
        body = bytes((p.reason_code,))
        if p.properties:
            body += encode_properties(p.properties, ptype)
        return _frame(byte0, body)

    return encode


_ENCODERS: dict[type[Any], Callable[[Any, int], bytes]] = {
    Connect: _connect,
    ConnAck: _connack,
    Publish: _publish,
    PubAck: _ack(_ACK_BYTE0[PubAck], PacketType.PUBACK),
    PubRec: _ack(_ACK_BYTE0[PubRec], PacketType.PUBREC),
    PubRel: _ack(_ACK_BYTE0[PubRel], PacketType.PUBREL),
    PubComp: _ack(_ACK_BYTE0[PubComp], PacketType.PUBCOMP),
    Subscribe: _subscribe,
    SubAck: _suback,
    Unsubscribe: _unsubscribe,
    UnsubAck: _unsuback,
    PingReq: lambda p, level: b"\xc0\x00",
    PingResp: lambda p, level: b"\xd0\x00",
    Disconnect: _reason(0xE0, PacketType.DISCONNECT),
    Auth: _reason(0xF0, PacketType.AUTH),
}


def encode(packet: Packet, protocol_level: int = 4) -> bytes:
    """Encode one packet for a connection speaking ``protocol_level`` (3, 4 or 5)."""
    try:
        encoder = _ENCODERS[type(packet)]
    except KeyError:
        raise LocalProtocolError(f"not a packet: {packet!r}") from None
    return encoder(packet, protocol_level)
