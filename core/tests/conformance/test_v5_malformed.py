"""MQTT 5.0 malformed input written as raw bytes (sections 1.5, 2.1, 3.14.1, 4.13): each
string field with ill-formed UTF-8, over-long integers, reserved flags.

Before CONNACK the answer is CONNACK 0x81, after it DISCONNECT 0x81; the connection closes.
"""

from __future__ import annotations

import pytest
from v5wire import (
    Factory,
    closed_with,
    connect_bytes,
    expect_publish,
    frame,
    props,
    publish,
    quiet,
    s,
    subscribe,
    v5,
)

from midge.codec import ConnAck, ReasonCode

#: ill-formed UTF-8: a lone continuation byte, an encoded surrogate (U+D800), an overlong
#: "/", a truncated sequence, and the null character
BAD_STRINGS = [
    pytest.param(b"a\x80b", id="continuation"),
    pytest.param(b"a\xed\xa0\x80b", id="surrogate"),
    pytest.param(b"a\xc0\xafb", id="overlong"),
    pytest.param(b"a\xe2\x82", id="truncated"),
    pytest.param(b"a\x00b", id="nul"),
]


@pytest.mark.mqtt5("MQTT-1.5.4-1", "MQTT-1.5.4-2", "MQTT-3.1.3-4")
@pytest.mark.parametrize("bad", BAD_STRINGS)
def test_an_ill_formed_client_id_is_malformed(raw_factory: Factory, bad: bytes) -> None:
    raw = raw_factory(level=5)
    raw.send(connect_bytes(bad))
    closed_with(raw, ReasonCode.MALFORMED_PACKET, ConnAck)


@pytest.mark.mqtt5("MQTT-1.5.4-1", "MQTT-1.5.4-2", "MQTT-3.1.3-11")
@pytest.mark.parametrize("bad", BAD_STRINGS)
def test_an_ill_formed_will_topic_is_malformed(raw_factory: Factory, bad: bytes) -> None:
    raw = raw_factory(level=5)
    raw.send(connect_bytes(b"badwill", flags=0x06, payload_tail=b"\x00" + s(bad) + s(b"p")))
    closed_with(raw, ReasonCode.MALFORMED_PACKET, ConnAck)


@pytest.mark.mqtt5("MQTT-1.5.4-1", "MQTT-1.5.4-2", "MQTT-3.1.3-12")
@pytest.mark.parametrize("bad", BAD_STRINGS)
def test_an_ill_formed_user_name_is_malformed(raw_factory: Factory, bad: bytes) -> None:
    raw = raw_factory(level=5)
    raw.send(connect_bytes(b"baduser", flags=0x82, payload_tail=s(bad)))
    closed_with(raw, ReasonCode.MALFORMED_PACKET, ConnAck)


@pytest.mark.mqtt5("MQTT-1.5.4-1", "MQTT-1.5.4-2", "MQTT-3.3.2-1", "MQTT-4.7.3-2")
@pytest.mark.parametrize("bad", BAD_STRINGS)
def test_an_ill_formed_topic_name_is_malformed(raw_factory: Factory, bad: bytes) -> None:
    raw = v5(raw_factory, "badtopic")
    raw.send(frame(0x30, s(bad), b"\x00", b"x"))
    closed_with(raw, ReasonCode.MALFORMED_PACKET)


@pytest.mark.mqtt5("MQTT-1.5.4-1", "MQTT-1.5.4-2", "MQTT-3.8.3-1", "MQTT-4.7.3-2")
@pytest.mark.parametrize("bad", BAD_STRINGS)
def test_an_ill_formed_subscribe_filter_is_malformed(raw_factory: Factory, bad: bytes) -> None:
    raw = v5(raw_factory, "badfilter")
    raw.send(frame(0x82, b"\x00\x01", props(), s(bad), b"\x00"))
    closed_with(raw, ReasonCode.MALFORMED_PACKET)


@pytest.mark.mqtt5("MQTT-1.5.4-1", "MQTT-1.5.4-2", "MQTT-3.10.3-1")
@pytest.mark.parametrize("bad", BAD_STRINGS)
def test_an_ill_formed_unsubscribe_filter_is_malformed(raw_factory: Factory,
                                                       bad: bytes) -> None:
    raw = v5(raw_factory, "badunsub")
    raw.send(frame(0xA2, b"\x00\x01", props(), s(bad)))
    closed_with(raw, ReasonCode.MALFORMED_PACKET)


@pytest.mark.mqtt5("MQTT-1.5.4-1", "MQTT-1.5.4-2", "MQTT-3.3.2-13", "MQTT-3.3.2-19")
@pytest.mark.parametrize("prop_id", [0x08, 0x03], ids=["response-topic", "content-type"])
@pytest.mark.parametrize("bad", BAD_STRINGS)
def test_an_ill_formed_string_property_is_malformed(raw_factory: Factory, prop_id: int,
                                                    bad: bytes) -> None:
    raw = v5(raw_factory, "badprop")
    raw.send(frame(0x30, s("bp/t"), props(bytes((prop_id,)) + s(bad)), b"x"))
    closed_with(raw, ReasonCode.MALFORMED_PACKET)


@pytest.mark.mqtt5("MQTT-1.5.7-1", "MQTT-1.5.4-1")
@pytest.mark.parametrize("which", ["name", "value"])
def test_an_ill_formed_user_property_pair_is_malformed(raw_factory: Factory,
                                                       which: str) -> None:
    raw = v5(raw_factory, "badpair")
    pair = s(b"\xff") + s("v") if which == "name" else s("n") + s(b"\xed\xa0\x80")
    raw.send(frame(0x30, s("bpp/t"), props(b"\x26" + pair), b"x"))
    closed_with(raw, ReasonCode.MALFORMED_PACKET)


@pytest.mark.mqtt5("MQTT-1.5.4-3")
def test_a_byte_order_mark_in_a_string_is_kept(raw_factory: Factory) -> None:
    topic = "\ufeffbom/t"
    sub = v5(raw_factory, "bom-sub")
    subscribe(sub, topic, 0)
    other = v5(raw_factory, "bom-other")
    subscribe(other, "bom/t", 0)
    publish(v5(raw_factory, "bom-pub"), topic, b"x", 0, user_property=[("\ufeffk", "\ufeff")])
    got = expect_publish(sub)
    assert got.topic == topic
    assert got.properties[0x26] == [("\ufeffk", "\ufeff")]
    quiet(other)


@pytest.mark.mqtt5("MQTT-1.5.5-1")
def test_a_remaining_length_of_five_bytes_is_malformed(raw_factory: Factory) -> None:
    raw = v5(raw_factory, "longvarint")
    raw.send(b"\x30\xff\xff\xff\xff\x01")
    closed_with(raw, ReasonCode.MALFORMED_PACKET)


@pytest.mark.mqtt5("MQTT-1.5.5-1")
def test_a_property_length_of_five_bytes_is_malformed(raw_factory: Factory) -> None:
    raw = v5(raw_factory, "longproplen")
    raw.send(frame(0x30, s("lp/t"), b"\x80\x80\x80\x80\x00", b"x"))
    closed_with(raw, ReasonCode.MALFORMED_PACKET)


@pytest.mark.mqtt5("MQTT-2.1.3-1")
@pytest.mark.parametrize("data", [
    pytest.param(b"\xc1\x00", id="pingreq"),
    pytest.param(b"\x41\x02\x00\x01", id="puback"),
    pytest.param(b"\x52\x02\x00\x01", id="pubrec"),
    pytest.param(b"\x78\x02\x00\x01", id="pubcomp"),
])
def test_reserved_fixed_header_flags_are_malformed(raw_factory: Factory, data: bytes) -> None:
    raw = v5(raw_factory, "resflags")
    raw.send(data)
    closed_with(raw, ReasonCode.MALFORMED_PACKET)


@pytest.mark.mqtt5("MQTT-3.14.1-1", "MQTT-2.1.3-1")
@pytest.mark.parametrize("byte0", [0xE1, 0xE2, 0xE8])
def test_disconnect_with_reserved_flags_is_malformed(raw_factory: Factory, byte0: int) -> None:
    raw = v5(raw_factory, "discflags")
    raw.send(bytes((byte0, 0)))
    closed_with(raw, ReasonCode.MALFORMED_PACKET)


@pytest.mark.mqtt5("MQTT-3.15.1-1", "MQTT-2.1.3-1")
@pytest.mark.parametrize("byte0", [0xF1, 0xF2, 0xF8])
def test_auth_with_reserved_flags_is_malformed(raw_factory: Factory, byte0: int) -> None:
    raw = v5(raw_factory, "authflags")
    raw.send(bytes((byte0, 0)))
    closed_with(raw, ReasonCode.MALFORMED_PACKET)


@pytest.mark.mqtt5("MQTT-4.13.1-1", "MQTT-4.13.2-1")
@pytest.mark.parametrize("data", [
    pytest.param(b"\x00\x00", id="type-0"),
    pytest.param(b"\x20\x03\x00\x00\x00", id="connack-from-a-client"),
    pytest.param(b"\x90\x04\x00\x01\x00\x00", id="suback-from-a-client"),
    pytest.param(b"\x30\x09\x00\x03a/b\x05\x26\x00\x01", id="truncated-property"),
    pytest.param(b"\x30\x07\x00\x03a/b\x02\x7f\x00", id="unknown-property"),
    pytest.param(b"\x30\x0a\x00\x03a/b\x04\x01\x01\x01\x01", id="repeated-property"),
])
def test_a_malformed_packet_or_protocol_error_closes_the_connection(
    raw_factory: Factory, data: bytes
) -> None:
    raw = v5(raw_factory, "badpacket")
    raw.send(data)
    packets = raw.packets_until_close()
    assert len(packets) == 1 and packets[0].reason_code >= 0x80, packets


@pytest.mark.mqtt5("MQTT-3.1.3-3", "MQTT-3.1.4-1")
def test_a_connect_without_a_client_identifier_is_malformed(raw_factory: Factory) -> None:
    raw = raw_factory(level=5)
    raw.send(frame(0x10, s("MQTT"), bytes((5, 0x02)), b"\x00\x3c", props()))
    closed_with(raw, ReasonCode.MALFORMED_PACKET, ConnAck)
