"""Sans-I/O decoder: bytes in, packets out, for one direction of one connection.

The rule: ``next_packet`` returns a packet, returns None when it needs more bytes, or
raises a RemoteProtocolError carrying the reason code to answer with; nothing else ever
escapes. The size limit is enforced from the fixed header, before the body is buffered.
"""

from __future__ import annotations

from collections.abc import Callable
from enum import Enum
from typing import Any

from ._errors import (
    MalformedPacket,
    PacketTooLarge,
    ProtocolViolation,
    UnsupportedProtocolVersion,
)
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
    Will,
)
from ._primitives import (
    MAX_VARINT,
    check_topic_filter,
    check_topic_name,
    decode_utf8,
    read_binary,
    read_string,
    read_u16,
)
from ._properties import WILL, Property, read_properties


class Role(Enum):
    """Which side's packets a decoder accepts."""

    SERVER = "server"  # decodes what clients send
    CLIENT = "client"  # decodes what servers send
    ANY = "any"  # both; for tests and tools


_FROM_CLIENT = frozenset(
    {1, 3, 4, 5, 6, 7, 8, 10, 12, 14, 15}
)
_FROM_SERVER = frozenset({2, 3, 4, 5, 6, 7, 9, 11, 13, 14, 15})
#: fixed header flags each packet type must carry (PUBLISH's are its own)
_FLAGS = {1: 0, 2: 0, 4: 0, 5: 0, 6: 2, 7: 0, 8: 2, 9: 0, 10: 2, 11: 0, 12: 0, 13: 0, 14: 0, 15: 0}


class Decoder:
    """Turns a byte stream into packets.

    ``protocol_level`` is learnt from the CONNECT when decoding as a server; a client-side
    decoder must be given it. ``max_packet_size`` bounds the whole packet, fixed header
    included.
    """

    __slots__ = ("_connected", "_data", "_pos", "max_packet_size", "protocol_level", "role")

    def __init__(
        self,
        role: Role = Role.SERVER,
        protocol_level: int | None = None,
        max_packet_size: int = MAX_VARINT + 5,
    ) -> None:
        self.role = role
        self.protocol_level = protocol_level
        self.max_packet_size = max_packet_size
        self._data: bytes | bytearray = b""
        self._pos = 0
        self._connected = protocol_level is not None

    def feed(self, data: bytes) -> None:
        """Append received bytes."""
        if self._pos >= len(self._data):
            # keep no reference to a caller's mutable buffer: it would be edited in place
            self._data = data if type(data) is bytes else bytes(data)
            self._pos = 0
            return
        if isinstance(self._data, bytes):
            self._data = bytearray(self._data[self._pos :])
        else:
            # deleting a bytearray's head is O(1) in CPython: it moves a start offset
            del self._data[: self._pos]
        self._pos = 0
        self._data += data

    @property
    def buffered(self) -> int:
        """Bytes received but not yet decoded."""
        return len(self._data) - self._pos

    def next_packet(self) -> Packet | None:
        buf = self._data
        pos = self._pos
        size = len(buf)
        if pos >= size:
            return None
        byte0 = buf[pos]
        ptype = byte0 >> 4
        if not (3 <= ptype <= 7 and self._connected):
            # PUBLISH and its acknowledgements are valid both ways once connected: the
            # per-message packets skip the full check
            self._check_type(ptype)
        # remaining length, inline for speed
        i = pos + 1
        length = 0
        shift = 0
        while True:
            if i >= size:
                return None
            byte = buf[i]
            i += 1
            length |= (byte & 0x7F) << shift
            if not byte & 0x80:
                break
            shift += 7
            if shift >= 28:
                raise MalformedPacket("remaining length is longer than 4 bytes")
        total = i - pos + length
        if total > self.max_packet_size:
            raise PacketTooLarge(total, self.max_packet_size)
        end = i + length
        if end > size:
            return None
        flags = byte0 & 0x0F
        if ptype == 3:
            packet: Packet = _publish(buf, i, end, flags, self.protocol_level or 4)
        else:
            if flags != _FLAGS[ptype]:
                raise MalformedPacket(
                    f"reserved flags 0x{flags:X} of {PacketType(ptype).name} must be "
                    f"0x{_FLAGS[ptype]:X}"
                )
            if ptype == 1:
                level, body = _protocol(buf, i, end)
                # known before the rest is read, so that an error in the rest of the
                # CONNECT can be answered with a CONNACK of this level (v5: reason code)
                self.protocol_level = level
                connect = _connect(buf, body, end, level)
                self._connected = True
                packet = connect
            else:
                packet = _DECODERS[ptype](buf, i, end, self.protocol_level or 4)
        self._pos = end
        return packet

    def _check_type(self, ptype: int) -> None:
        if ptype == 0:
            raise MalformedPacket("packet type 0 is reserved")
        if self.role is Role.SERVER:
            if ptype not in _FROM_CLIENT:
                raise ProtocolViolation(f"a client may not send {PacketType(ptype).name}")
            if not self._connected and ptype != 1:
                raise ProtocolViolation(
                    f"the first packet must be CONNECT, not {PacketType(ptype).name}"
                )
            if self._connected and ptype == 1:
                raise ProtocolViolation("a second CONNECT on one connection")
        elif self.role is Role.CLIENT and ptype not in _FROM_SERVER:
            raise ProtocolViolation(f"a server may not send {PacketType(ptype).name}")
        if ptype == 15 and self._connected and (self.protocol_level or 5) < PROTOCOL_5:
            raise MalformedPacket("AUTH does not exist before MQTT 5")


def _end_check(pos: int, end: int, name: str) -> None:
    if pos != end:
        raise MalformedPacket(f"{name} has {end - pos} unexpected trailing bytes")


def _packet_id(buf: bytes | bytearray, pos: int, end: int, name: str) -> tuple[int, int]:
    pid, pos = read_u16(buf, pos, end)
    if pid == 0:
        raise MalformedPacket(f"{name} has packet identifier 0")
    return pid, pos


def _protocol(buf: bytes | bytearray, pos: int, end: int) -> tuple[int, int]:
    """A CONNECT's protocol name and level: (level, position after them)."""
    name, pos = read_string(buf, pos, end)
    if pos >= end:
        raise MalformedPacket("CONNECT is truncated before the protocol level")
    level = buf[pos]
    pos += 1
    if name == "MQTT":
        if level not in (4, 5):
            raise UnsupportedProtocolVersion(f"protocol level {level} is not supported", level)
    elif name == "MQIsdp":
        if level != 3:
            raise UnsupportedProtocolVersion(f"MQIsdp with protocol level {level}", level)
    else:
        raise UnsupportedProtocolVersion(f"unknown protocol name {name!r}", level)
    return level, pos


def _connect(buf: bytes | bytearray, pos: int, end: int, level: int) -> Connect:
    """The rest of a CONNECT, after ``_protocol`` has read its name and level."""
    if pos + 3 > end:
        raise MalformedPacket("CONNECT is truncated in its variable header")
    flags = buf[pos]
    keepalive = (buf[pos + 1] << 8) | buf[pos + 2]
    pos += 3
    if flags & 0x01:
        raise MalformedPacket("CONNECT reserved flag is set")
    will_flag = bool(flags & 0x04)
    will_qos = (flags >> 3) & 0x03
    will_retain = bool(flags & 0x20)
    has_password = bool(flags & 0x40)
    has_username = bool(flags & 0x80)
    if will_qos == 3:
        raise MalformedPacket("CONNECT will QoS is 3")
    if not will_flag and (will_qos or will_retain):
        raise MalformedPacket("CONNECT will QoS or will retain set without a will")
    if level < 5 and has_password and not has_username:
        raise MalformedPacket("CONNECT has a password but no user name")
    props: dict[int, Any] = {}
    if level == 5:
        props, pos = read_properties(buf, pos, end, PacketType.CONNECT)
    client_id, pos = read_string(buf, pos, end)
    will = None
    if will_flag:
        will_props: dict[int, Any] = {}
        if level == 5:
            will_props, pos = read_properties(buf, pos, end, WILL)
            _check_response_topic(will_props)
        topic, pos = read_string(buf, pos, end)
        check_topic_name(topic)
        payload, pos = read_binary(buf, pos, end)
        will = Will(topic, payload, will_qos, will_retain, will_props)
    username = password = None
    if has_username:
        username, pos = read_string(buf, pos, end)
    if has_password:
        password, pos = read_binary(buf, pos, end)
    _end_check(pos, end, "CONNECT")
    return Connect(
        client_id, level, bool(flags & 0x02), keepalive, username, password, will, props
    )


def _connack(buf: bytes | bytearray, pos: int, end: int, level: int) -> ConnAck:
    if pos + 2 > end:
        raise MalformedPacket("CONNACK is truncated")
    ack_flags = buf[pos]
    if ack_flags & 0xFE:
        raise MalformedPacket("CONNACK reserved acknowledge flags are set")
    code = buf[pos + 1]
    pos += 2
    props: dict[int, Any] = {}
    if level == 5:
        props, pos = read_properties(buf, pos, end, PacketType.CONNACK)
    _end_check(pos, end, "CONNACK")
    return ConnAck(code, bool(ack_flags & 1), props)


def _publish(buf: bytes | bytearray, pos: int, end: int, flags: int, level: int) -> Publish:
    qos = (flags >> 1) & 0x03
    if qos == 3:
        raise MalformedPacket("PUBLISH with QoS 3")
    dup = bool(flags & 0x08)
    if dup and not qos:
        raise MalformedPacket("PUBLISH with QoS 0 has the DUP flag set")
    if pos + 2 > end:
        raise MalformedPacket("PUBLISH is truncated before its topic")
    stop = pos + 2 + ((buf[pos] << 8) | buf[pos + 1])
    if stop > end:
        raise MalformedPacket("PUBLISH topic runs past the end of the packet")
    topic = decode_utf8(buf[pos + 2 : stop])
    pos = stop
    packet_id = 0
    if qos:
        if pos + 2 > end:
            raise MalformedPacket("PUBLISH is truncated before its packet identifier")
        packet_id = (buf[pos] << 8) | buf[pos + 1]
        if not packet_id:
            raise MalformedPacket("PUBLISH with QoS > 0 has packet identifier 0")
        pos += 2
    props: dict[int, Any]
    if level == 5:
        if pos < end and buf[pos] == 0:
            props = {}
            pos += 1
        else:
            props, pos = read_properties(buf, pos, end, PacketType.PUBLISH)
            _check_response_topic(props)
        if not topic:
            if Property.TOPIC_ALIAS not in props:
                raise ProtocolViolation("PUBLISH has an empty topic and no topic alias")
        else:
            check_topic_name(topic)
    else:
        props = {}
        check_topic_name(topic)
    return Publish(topic, bytes(buf[pos:end]), qos, bool(flags & 1), dup, packet_id, props)


def _check_response_topic(props: dict[int, Any]) -> None:
    """A Response Topic is a topic name: no wildcards [MQTT-3.3.2-14]."""
    response = props.get(Property.RESPONSE_TOPIC)
    if response is not None and ("+" in response or "#" in response):
        raise ProtocolViolation("Response Topic contains a wildcard character")


def _ack(cls: Callable[..., Any], name: str, ptype: int) -> Callable[..., Any]:
    def decode(buf: bytes | bytearray, pos: int, end: int, level: int) -> Any:
        pid, pos = _packet_id(buf, pos, end, name)
        if level < 5 or pos == end:
            _end_check(pos, end, name)
            return cls(pid)
        code = buf[pos]
        pos += 1
        props: dict[int, Any] = {}
        if pos < end:
            props, pos = read_properties(buf, pos, end, ptype)
        _end_check(pos, end, name)
        return cls(pid, code, props)

    return decode


def _subscribe(buf: bytes | bytearray, pos: int, end: int, level: int) -> Subscribe:
    pid, pos = _packet_id(buf, pos, end, "SUBSCRIBE")
    props: dict[int, Any] = {}
    if level == 5:
        props, pos = read_properties(buf, pos, end, PacketType.SUBSCRIBE)
    subs = []
    while pos < end:
        topic_filter, pos = read_string(buf, pos, end)
        if pos >= end:
            raise MalformedPacket(f"SUBSCRIBE to {topic_filter!r} has no options byte")
        options = buf[pos]
        pos += 1
        qos = options & 0x03
        if qos == 3:
            # malformed in 3.1.1 [MQTT-3-8.3-4]; a Protocol Error in 5.0 (3.8.3.1)
            error = ProtocolViolation if level == PROTOCOL_5 else MalformedPacket
            raise error(f"SUBSCRIBE to {topic_filter!r} requests QoS 3")
        if level == 5:
            if options & 0xC0:
                raise MalformedPacket("SUBSCRIBE options reserved bits are set")
            retain_handling = (options >> 4) & 0x03
            if retain_handling == 3:
                raise ProtocolViolation("SUBSCRIBE retain handling 3 is reserved")
            sub = Subscription(
                topic_filter, qos, bool(options & 0x04), bool(options & 0x08), retain_handling
            )
        else:
            if options & 0xFC:
                raise MalformedPacket("SUBSCRIBE requested QoS byte has reserved bits set")
            sub = Subscription(topic_filter, qos)
        check_topic_filter(topic_filter)
        subs.append(sub)
    if not subs:
        raise ProtocolViolation("SUBSCRIBE with no topic filter")
    return Subscribe(pid, subs, props)


def _suback(buf: bytes | bytearray, pos: int, end: int, level: int) -> SubAck:
    pid, pos = _packet_id(buf, pos, end, "SUBACK")
    props: dict[int, Any] = {}
    if level == 5:
        props, pos = read_properties(buf, pos, end, PacketType.SUBACK)
    return SubAck(pid, list(buf[pos:end]), props)


def _unsubscribe(buf: bytes | bytearray, pos: int, end: int, level: int) -> Unsubscribe:
    pid, pos = _packet_id(buf, pos, end, "UNSUBSCRIBE")
    props: dict[int, Any] = {}
    if level == 5:
        props, pos = read_properties(buf, pos, end, PacketType.UNSUBSCRIBE)
    filters = []
    while pos < end:
        topic_filter, pos = read_string(buf, pos, end)
        check_topic_filter(topic_filter)
        filters.append(topic_filter)
    if not filters:
        raise ProtocolViolation("UNSUBSCRIBE with no topic filter")
    return Unsubscribe(pid, filters, props)


def _unsuback(buf: bytes | bytearray, pos: int, end: int, level: int) -> UnsubAck:
    pid, pos = _packet_id(buf, pos, end, "UNSUBACK")
    if level < 5:
        _end_check(pos, end, "UNSUBACK")
        return UnsubAck(pid)
    props, pos = read_properties(buf, pos, end, PacketType.UNSUBACK)
    return UnsubAck(pid, list(buf[pos:end]), props)


def _empty(cls: Callable[[], Any], name: str) -> Callable[..., Any]:
    def decode(buf: bytes | bytearray, pos: int, end: int, level: int) -> Any:
        _end_check(pos, end, name)
        return cls()

    return decode


def _reason_and_props(cls: Callable[..., Any], name: str, ptype: int) -> Callable[..., Any]:
    def decode(buf: bytes | bytearray, pos: int, end: int, level: int) -> Any:
        if level < 5 or pos == end:
            _end_check(pos, end, name)
            return cls()
        code = buf[pos]
        pos += 1
        props: dict[int, Any] = {}
        if pos < end:
            props, pos = read_properties(buf, pos, end, ptype)
        _end_check(pos, end, name)
        return cls(code, props)

    return decode


_DECODERS: dict[int, Callable[..., Any]] = {
    2: _connack,
    4: _ack(PubAck, "PUBACK", PacketType.PUBACK),
    5: _ack(PubRec, "PUBREC", PacketType.PUBREC),
    6: _ack(PubRel, "PUBREL", PacketType.PUBREL),
    7: _ack(PubComp, "PUBCOMP", PacketType.PUBCOMP),
    8: _subscribe,
    9: _suback,
    10: _unsubscribe,
    11: _unsuback,
    12: _empty(PingReq, "PINGREQ"),
    13: _empty(PingResp, "PINGRESP"),
    14: _reason_and_props(Disconnect, "DISCONNECT", PacketType.DISCONNECT),
    15: _reason_and_props(Auth, "AUTH", PacketType.AUTH),
}
