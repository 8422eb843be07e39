"""Property tests of the codec: round trips, chunking invariance, and garbage input.

Strategies build valid packets of every type for MQTT 3.1, 3.1.1 and 5.0 (v5 properties
drawn from ``PROPERTY_SPECS`` for the packet at hand); the decoder must give back exactly
what was encoded however the stream is split, and on arbitrary bytes it may only return
packets, return None or raise a ProtocolError.
"""

from __future__ import annotations

from itertools import pairwise
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from midge.codec import (
    MAX_VARINT,
    PROPERTY_SPECS,
    PROTOCOL_5,
    WILL,
    Auth,
    ConnAck,
    Connect,
    Decoder,
    Disconnect,
    Kind,
    Packet,
    PacketType,
    PingReq,
    PingResp,
    Properties,
    Property,
    ProtocolError,
    PubAck,
    PubComp,
    Publish,
    PubRec,
    PubRel,
    RemoteProtocolError,
    Role,
    SubAck,
    Subscribe,
    Subscription,
    UnsubAck,
    Unsubscribe,
    Will,
    encode,
)

SETTINGS = settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
LEVELS = st.sampled_from([3, 4, 5])
_KIND_RANGES = {
    Kind.BYTE: (0, 0xFF),
    Kind.TWO: (0, 0xFFFF),
    Kind.FOUR: (0, 0xFFFF_FFFF),
    Kind.VARINT: (0, MAX_VARINT),
}

# MQTT strings: well-formed UTF-8 (so no surrogates) without U+0000.
text = st.text(st.characters(codec="utf-8", exclude_characters="\x00"), max_size=12)
level_text = st.text(
    st.characters(codec="utf-8", exclude_characters="\x00/+#"), max_size=6
)
topic_names = st.lists(level_text, min_size=1, max_size=4).map("/".join).filter(bool)
packet_ids = st.integers(1, 0xFFFF)
reason_codes = st.integers(0, 0xFF)
payloads = st.binary(max_size=40)


@st.composite
def topic_filters(draw: st.DrawFn) -> str:
    levels = draw(st.lists(st.one_of(level_text, st.just("+")), min_size=1, max_size=4))
    if draw(st.booleans()):
        levels.append("#")
    result = "/".join(levels)
    return result if result else "#"


def _value(kind: Kind, bounds: tuple[int, int] | None) -> st.SearchStrategy[Any]:
    if kind in _KIND_RANGES:
        low, high = bounds if bounds is not None else _KIND_RANGES[kind]
        return st.integers(low, high)
    if kind is Kind.STRING:
        return text
    if kind is Kind.BINARY:
        return st.binary(max_size=12)
    return st.tuples(text, text)


@st.composite
def properties(draw: st.DrawFn, where: int, exclude: frozenset[int] = frozenset()) -> Properties:
    allowed = sorted(
        ident for ident, spec in PROPERTY_SPECS.items()
        if where in spec.allowed_in and ident not in exclude
    )
    chosen = draw(st.lists(st.sampled_from(allowed), unique=True, max_size=4))
    props: Properties = {}
    for ident in chosen:
        spec = PROPERTY_SPECS[ident]
        # a Response Topic is a topic name: the codec refuses one with wildcards
        value = topic_names if ident == Property.RESPONSE_TOPIC else _value(spec.kind,
                                                                              spec.bounds)
        if spec.repeatable:
            # a SUBSCRIBE carries at most one Subscription Identifier
            single = where == PacketType.SUBSCRIBE and ident == Property.SUBSCRIPTION_IDENTIFIER
            props[ident] = draw(st.lists(value, min_size=1, max_size=1 if single else 3))
        else:
            props[ident] = draw(value)
    return props


def _props_for(level: int, where: int) -> st.SearchStrategy[Properties]:
    return properties(where) if level == PROTOCOL_5 else st.just({})


@st.composite
def connects(draw: st.DrawFn, level: int) -> Connect:
    will = None
    if draw(st.booleans()):
        will = Will(
            draw(topic_names), draw(payloads), draw(st.integers(0, 2)), draw(st.booleans()),
            draw(_props_for(level, WILL)),
        )
    username = draw(st.none() | text)
    password = draw(st.none() | st.binary(max_size=12))
    if level < PROTOCOL_5 and username is None:
        password = None
    return Connect(
        draw(text), level, draw(st.booleans()), draw(st.integers(0, 0xFFFF)), username,
        password, will, draw(_props_for(level, PacketType.CONNECT)),
    )


@st.composite
def publishes(draw: st.DrawFn, level: int) -> Publish:
    qos = draw(st.integers(0, 2))
    props = draw(_props_for(level, PacketType.PUBLISH))
    topic = draw(topic_names)
    if Property.TOPIC_ALIAS in props and draw(st.booleans()):
        topic = ""
    return Publish(
        topic, draw(payloads), qos, draw(st.booleans()), qos > 0 and draw(st.booleans()),
        draw(packet_ids) if qos else 0, props,
    )


@st.composite
def acks(draw: st.DrawFn, level: int, cls: type[Any], ptype: PacketType) -> Any:
    if level < PROTOCOL_5:
        return cls(draw(packet_ids))
    return cls(draw(packet_ids), draw(reason_codes), draw(properties(ptype)))


@st.composite
def subscribes(draw: st.DrawFn, level: int) -> Subscribe:
    subs = []
    for topic_filter in draw(st.lists(topic_filters(), min_size=1, max_size=4)):
        qos = draw(st.integers(0, 2))
        if level == PROTOCOL_5:
            sub = Subscription(
                topic_filter, qos, draw(st.booleans()), draw(st.booleans()),
                draw(st.integers(0, 2)),
            )
        else:
            sub = Subscription(topic_filter, qos)
        subs.append(sub)
    return Subscribe(draw(packet_ids), subs, draw(_props_for(level, PacketType.SUBSCRIBE)))


@st.composite
def subacks(draw: st.DrawFn, level: int) -> SubAck:
    codes = draw(st.lists(reason_codes, min_size=1, max_size=4))
    return SubAck(draw(packet_ids), codes, draw(_props_for(level, PacketType.SUBACK)))


@st.composite
def unsubscribes(draw: st.DrawFn, level: int) -> Unsubscribe:
    filters = draw(st.lists(topic_filters(), min_size=1, max_size=4))
    return Unsubscribe(draw(packet_ids), filters, draw(_props_for(level, PacketType.UNSUBSCRIBE)))


@st.composite
def unsubacks(draw: st.DrawFn, level: int) -> UnsubAck:
    if level < PROTOCOL_5:
        return UnsubAck(draw(packet_ids))
    codes = draw(st.lists(reason_codes, min_size=1, max_size=4))
    return UnsubAck(draw(packet_ids), codes, draw(properties(PacketType.UNSUBACK)))


@st.composite
def reason_packets(draw: st.DrawFn, level: int, cls: type[Any], ptype: PacketType) -> Any:
    if level < PROTOCOL_5:
        return cls()
    return cls(draw(reason_codes), draw(properties(ptype)))


def client_packets(level: int) -> st.SearchStrategy[Packet]:
    """Packets a client sends after its CONNECT, at ``level``."""
    options: list[st.SearchStrategy[Any]] = [
        publishes(level),
        acks(level, PubAck, PacketType.PUBACK),
        acks(level, PubRec, PacketType.PUBREC),
        acks(level, PubRel, PacketType.PUBREL),
        acks(level, PubComp, PacketType.PUBCOMP),
        subscribes(level),
        unsubscribes(level),
        st.just(PingReq()),
        reason_packets(level, Disconnect, PacketType.DISCONNECT),
    ]
    if level == PROTOCOL_5:
        options.append(reason_packets(level, Auth, PacketType.AUTH))
    return st.one_of(options)


def any_packets(level: int) -> st.SearchStrategy[Packet]:
    """Every packet type that exists at ``level``, from either side."""
    return st.one_of(
        client_packets(level),
        connects(level),
        st.builds(
            ConnAck, reason_codes, st.booleans(), _props_for(level, PacketType.CONNACK)
        ),
        subacks(level),
        unsubacks(level),
        st.just(PingResp()),
    )


leveled_packets = LEVELS.flatmap(lambda level: st.tuples(st.just(level), any_packets(level)))


def _drain(decoder: Decoder) -> list[Packet]:
    out = []
    while (packet := decoder.next_packet()) is not None:
        out.append(packet)
    return out


@SETTINGS
@given(leveled_packets)
def test_round_trip(case: tuple[int, Packet]) -> None:
    level, packet = case
    data = encode(packet, level)
    decoder = Decoder(Role.ANY, protocol_level=level)
    decoder.feed(data)
    assert decoder.next_packet() == packet
    assert decoder.buffered == 0
    assert decoder.next_packet() is None


@st.composite
def split_streams(draw: st.DrawFn) -> tuple[list[Packet], bytes, list[bytes]]:
    level = draw(LEVELS)
    packets: list[Packet] = [draw(connects(level))]
    packets += draw(st.lists(client_packets(level), max_size=6))
    stream = b"".join(encode(p, level) for p in packets)
    cuts = sorted(draw(st.lists(st.integers(0, len(stream)), max_size=12)))
    bounds = [0, *cuts, len(stream)]
    chunks = [stream[a:b] for a, b in pairwise(bounds)]
    return packets, stream, chunks


@SETTINGS
@given(split_streams())
def test_chunking_invariance(case: tuple[list[Packet], bytes, list[bytes]]) -> None:
    packets, stream, chunks = case
    assert b"".join(chunks) == stream
    decoder = Decoder(Role.SERVER)
    got: list[Packet] = []
    for chunk in chunks:
        decoder.feed(chunk)
        got += _drain(decoder)
    assert got == packets
    assert decoder.buffered == 0


def _decode_garbage(decoder: Decoder, data: bytes) -> None:
    """Feed ``data``; only packets, None or a RemoteProtocolError may come out."""
    decoder.feed(data)
    try:
        while decoder.next_packet() is not None:
            pass
    except ProtocolError as exc:
        assert isinstance(exc, RemoteProtocolError)
        assert 0x80 <= exc.reason_code <= 0xA2


@SETTINGS
@given(st.binary(max_size=300))
def test_garbage_before_connect(data: bytes) -> None:
    _decode_garbage(Decoder(Role.SERVER), data)


@SETTINGS
@given(LEVELS.flatmap(connects), st.binary(max_size=300))
def test_garbage_after_connect(connect: Connect, data: bytes) -> None:
    decoder = Decoder(Role.SERVER)
    decoder.feed(encode(connect, connect.protocol_level))
    assert decoder.next_packet() == connect
    _decode_garbage(decoder, data)


@SETTINGS
@given(LEVELS, st.sampled_from([Role.CLIENT, Role.ANY]), st.binary(max_size=300))
def test_garbage_other_roles(level: int, role: Role, data: bytes) -> None:
    _decode_garbage(Decoder(role, protocol_level=level), data)


@SETTINGS
@given(leveled_packets, st.data())
def test_mutated_packets(case: tuple[int, Packet], data: st.DataObject) -> None:
    """Valid encodings with one byte replaced, or cut short and re-framed: errors stay typed."""
    level, packet = case
    raw = bytearray(encode(packet, level))
    if data.draw(st.booleans()):
        index = data.draw(st.integers(0, len(raw) - 1))
        raw[index] = data.draw(st.integers(0, 0xFF))
        mutated = bytes(raw)
    else:
        body = raw[_header_size(raw):]
        cut = data.draw(st.integers(0, max(len(body) - 1, 0)))
        mutated = bytes((raw[0],)) + _varint(cut) + bytes(body[:cut])
    _decode_garbage(Decoder(Role.ANY, protocol_level=level), mutated)


def _header_size(raw: bytes | bytearray) -> int:
    size = 2
    while raw[size - 1] & 0x80:
        size += 1
    return size


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        value, byte = divmod(value, 128)
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)
