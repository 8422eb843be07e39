"""MQTT 5 properties: identifiers, wire types, where each is allowed, and their codec.

The rule: one table (``SPECS``) says everything about a property; reading and writing
are driven by it, so a property cannot be read one way and written another.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from typing import Any

from ._errors import LocalProtocolError, MalformedPacket, ProtocolViolation, RemoteProtocolError
from ._packets import PacketType, Properties
from ._primitives import (
    encode_binary,
    encode_string,
    encode_varint,
    read_binary,
    read_string,
    read_varint,
)
from ._reasons import ReasonCode


class Property(IntEnum):
    PAYLOAD_FORMAT_INDICATOR = 0x01
    MESSAGE_EXPIRY_INTERVAL = 0x02
    CONTENT_TYPE = 0x03
    RESPONSE_TOPIC = 0x08
    CORRELATION_DATA = 0x09
    SUBSCRIPTION_IDENTIFIER = 0x0B
    SESSION_EXPIRY_INTERVAL = 0x11
    ASSIGNED_CLIENT_IDENTIFIER = 0x12
    SERVER_KEEP_ALIVE = 0x13
    AUTHENTICATION_METHOD = 0x15
    AUTHENTICATION_DATA = 0x16
    REQUEST_PROBLEM_INFORMATION = 0x17
    WILL_DELAY_INTERVAL = 0x18
    REQUEST_RESPONSE_INFORMATION = 0x19
    RESPONSE_INFORMATION = 0x1A
    SERVER_REFERENCE = 0x1C
    REASON_STRING = 0x1F
    RECEIVE_MAXIMUM = 0x21
    TOPIC_ALIAS_MAXIMUM = 0x22
    TOPIC_ALIAS = 0x23
    MAXIMUM_QOS = 0x24
    RETAIN_AVAILABLE = 0x25
    USER_PROPERTY = 0x26
    MAXIMUM_PACKET_SIZE = 0x27
    WILDCARD_SUBSCRIPTION_AVAILABLE = 0x28
    SUBSCRIPTION_IDENTIFIER_AVAILABLE = 0x29
    SHARED_SUBSCRIPTION_AVAILABLE = 0x2A


class Kind(IntEnum):
    BYTE = 1
    TWO = 2
    FOUR = 4
    VARINT = 5
    STRING = 6
    BINARY = 7
    PAIR = 8


#: Where a Will's properties live: not a packet type, so a pseudo value.
WILL = 0

P = PacketType
_ACKS = frozenset({P.PUBACK, P.PUBREC, P.PUBREL, P.PUBCOMP})
_MESSAGE = frozenset({P.PUBLISH, WILL})
_ALL = frozenset(
    {P.CONNECT, P.CONNACK, P.PUBLISH, WILL, P.SUBSCRIBE, P.SUBACK, P.UNSUBSCRIBE,
     P.UNSUBACK, P.DISCONNECT, P.AUTH} | _ACKS
)


@dataclass(frozen=True, slots=True)
class PropertySpec:
    kind: Kind
    allowed_in: frozenset[int]
    #: values outside this range are a protocol error (None: any value of the type)
    bounds: tuple[int, int] | None = None
    repeatable: bool = False


SPECS: dict[int, PropertySpec] = {
    Property.PAYLOAD_FORMAT_INDICATOR: PropertySpec(Kind.BYTE, _MESSAGE, (0, 1)),
    Property.MESSAGE_EXPIRY_INTERVAL: PropertySpec(Kind.FOUR, _MESSAGE),
    Property.CONTENT_TYPE: PropertySpec(Kind.STRING, _MESSAGE),
    Property.RESPONSE_TOPIC: PropertySpec(Kind.STRING, _MESSAGE),
    Property.CORRELATION_DATA: PropertySpec(Kind.BINARY, _MESSAGE),
    Property.SUBSCRIPTION_IDENTIFIER: PropertySpec(
        Kind.VARINT, frozenset({P.PUBLISH, P.SUBSCRIBE}), (1, 268_435_455), repeatable=True
    ),
    Property.SESSION_EXPIRY_INTERVAL: PropertySpec(
        Kind.FOUR, frozenset({P.CONNECT, P.CONNACK, P.DISCONNECT})
    ),
    Property.ASSIGNED_CLIENT_IDENTIFIER: PropertySpec(Kind.STRING, frozenset({P.CONNACK})),
    Property.SERVER_KEEP_ALIVE: PropertySpec(Kind.TWO, frozenset({P.CONNACK})),
    Property.AUTHENTICATION_METHOD: PropertySpec(
        Kind.STRING, frozenset({P.CONNECT, P.CONNACK, P.AUTH})
    ),
    Property.AUTHENTICATION_DATA: PropertySpec(
        Kind.BINARY, frozenset({P.CONNECT, P.CONNACK, P.AUTH})
    ),
    Property.REQUEST_PROBLEM_INFORMATION: PropertySpec(Kind.BYTE, frozenset({P.CONNECT}), (0, 1)),
    Property.WILL_DELAY_INTERVAL: PropertySpec(Kind.FOUR, frozenset({WILL})),
    Property.REQUEST_RESPONSE_INFORMATION: PropertySpec(
        Kind.BYTE, frozenset({P.CONNECT}), (0, 1)
    ),
    Property.RESPONSE_INFORMATION: PropertySpec(Kind.STRING, frozenset({P.CONNACK})),
    Property.SERVER_REFERENCE: PropertySpec(Kind.STRING, frozenset({P.CONNACK, P.DISCONNECT})),
    Property.REASON_STRING: PropertySpec(
        Kind.STRING,
        frozenset({P.CONNACK, P.SUBACK, P.UNSUBACK, P.DISCONNECT, P.AUTH}) | _ACKS,
    ),
    Property.RECEIVE_MAXIMUM: PropertySpec(
        Kind.TWO, frozenset({P.CONNECT, P.CONNACK}), (1, 65535)
    ),
    Property.TOPIC_ALIAS_MAXIMUM: PropertySpec(Kind.TWO, frozenset({P.CONNECT, P.CONNACK})),
    Property.TOPIC_ALIAS: PropertySpec(Kind.TWO, frozenset({P.PUBLISH}), (1, 65535)),
    Property.MAXIMUM_QOS: PropertySpec(Kind.BYTE, frozenset({P.CONNACK}), (0, 1)),
    Property.RETAIN_AVAILABLE: PropertySpec(Kind.BYTE, frozenset({P.CONNACK}), (0, 1)),
    Property.USER_PROPERTY: PropertySpec(Kind.PAIR, _ALL, repeatable=True),
    Property.MAXIMUM_PACKET_SIZE: PropertySpec(
        Kind.FOUR, frozenset({P.CONNECT, P.CONNACK}), (1, 4_294_967_295)
    ),
    Property.WILDCARD_SUBSCRIPTION_AVAILABLE: PropertySpec(
        Kind.BYTE, frozenset({P.CONNACK}), (0, 1)
    ),
    Property.SUBSCRIPTION_IDENTIFIER_AVAILABLE: PropertySpec(
        Kind.BYTE, frozenset({P.CONNACK}), (0, 1)
    ),
    Property.SHARED_SUBSCRIPTION_AVAILABLE: PropertySpec(
        Kind.BYTE, frozenset({P.CONNACK}), (0, 1)
    ),
}

_NAMES = {int(p): p.name for p in Property}


def _where(packet: int) -> str:
    return "Will" if packet == WILL else PacketType(packet).name


def read_properties(
    buf: bytes | bytearray, pos: int, end: int, packet: int
) -> tuple[Properties, int]:
    """Read a property block at ``pos``; returns the properties and the position after."""
    length, pos = read_varint(buf, pos, end)
    stop = pos + length
    if stop > end:
        raise MalformedPacket(f"property length {length} runs past the end of the packet")
    props: Properties = {}
    while pos < stop:
        ident, pos = read_varint(buf, pos, stop)
        spec = SPECS.get(ident)
        if spec is None:
            raise MalformedPacket(f"unknown property identifier 0x{ident:02X}")
        if packet not in spec.allowed_in:
            # an identifier not valid for its packet type is a Malformed Packet (5.0 2.2.2.2)
            raise MalformedPacket(f"property {_NAMES[ident]} is not allowed in {_where(packet)}")
        kind = spec.kind
        value: Any
        if kind is Kind.BYTE:
            if pos + 1 > stop:
                raise MalformedPacket(f"property {_NAMES[ident]} is truncated")
            value = buf[pos]
            pos += 1
        elif kind is Kind.TWO:
            if pos + 2 > stop:
                raise MalformedPacket(f"property {_NAMES[ident]} is truncated")
            value = (buf[pos] << 8) | buf[pos + 1]
            pos += 2
        elif kind is Kind.FOUR:
            if pos + 4 > stop:
                raise MalformedPacket(f"property {_NAMES[ident]} is truncated")
            value = int.from_bytes(buf[pos : pos + 4], "big")
            pos += 4
        elif kind is Kind.VARINT:
            value, pos = read_varint(buf, pos, stop)
        elif kind is Kind.STRING:
            value, pos = read_string(buf, pos, stop)
        elif kind is Kind.BINARY:
            value, pos = read_binary(buf, pos, stop)
        else:
            name, pos = read_string(buf, pos, stop)
            text, pos = read_string(buf, pos, stop)
            value = (name, text)
        if spec.bounds is not None and not spec.bounds[0] <= value <= spec.bounds[1]:
            if ident == Property.TOPIC_ALIAS:
                # MQTT 5 section 3.3.2.3.4: alias 0 is "Topic Alias invalid" (0x94)
                raise RemoteProtocolError(
                    ReasonCode.TOPIC_ALIAS_INVALID, f"topic alias {value} is not allowed"
                )
            raise ProtocolViolation(f"property {_NAMES[ident]} has the invalid value {value}")
        if spec.repeatable:
            # Subscription Identifier repeats in PUBLISH, never in SUBSCRIBE (5.0 3.8.2.1.2)
            if (
                ident in props
                and ident == Property.SUBSCRIPTION_IDENTIFIER
                and packet == P.SUBSCRIBE
            ):
                raise ProtocolViolation("SUBSCRIBE has more than one Subscription Identifier")
            props.setdefault(ident, []).append(value)
        elif ident in props:
            raise ProtocolViolation(f"property {_NAMES[ident]} appears more than once")
        else:
            props[ident] = value
    if pos != stop:
        raise MalformedPacket("property block length does not match its contents")
    return props, stop


def encode_properties(props: Properties, packet: int) -> bytes:
    """Encode a property block, length prefix included."""
    if not props:
        return b"\x00"
    out = bytearray()
    for ident, value in props.items():
        spec = SPECS.get(ident)
        if spec is None:
            raise LocalProtocolError(f"unknown property identifier {ident!r}")
        if packet not in spec.allowed_in:
            raise LocalProtocolError(
                f"property {_NAMES[ident]} is not allowed in {_where(packet)}"
            )
        values = value if spec.repeatable else (value,)
        for item in values:
            out += encode_varint(ident)
            out += _encode_value(spec.kind, item, ident)
    return encode_varint(len(out)) + bytes(out)


def _encode_value(kind: Kind, value: Any, ident: int) -> bytes:
    try:
        if kind is Kind.BYTE:
            return bytes((value,))
        if kind is Kind.TWO:
            return int(value).to_bytes(2, "big")
        if kind is Kind.FOUR:
            return int(value).to_bytes(4, "big")
        if kind is Kind.VARINT:
            return encode_varint(value)
        if kind is Kind.STRING:
            return encode_string(value)
        if kind is Kind.BINARY:
            return encode_binary(value)
        name, text = value
        return encode_string(name) + encode_string(text)
    except (ValueError, OverflowError, TypeError) as exc:
        raise LocalProtocolError(
            f"bad value {value!r} for property {_NAMES[ident]}: {exc}"
        ) from exc
