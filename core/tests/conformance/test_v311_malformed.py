"""MQTT 3.1.1 conformance: malformed input written byte by byte (sections 1.5.3, 2.2.2,
3.3.2, 3.6.1, 3.8, 3.10, 4.7.3, 4.8).

Each case sends one bad packet over a real loopback socket and checks that the broker
closes that connection, sends nothing first (no CONNACK when the CONNECT was bad), and
goes on serving everyone else.
"""

from __future__ import annotations

from typing import Any

import pytest

from midge.codec import LocalProtocolError, Publish, encode

try:
    from v311_helpers import (
        V31,
        V311,
        Factory,
        assert_rejected,
        connect_bytes,
        frame,
        online,
        publish_bytes,
        publish_qos,
        publishes,
        still_serving,
        string,
        subscribe,
        subscribe_bytes,
        unsubscribe_bytes,
    )
except ImportError:  # pragma: no cover - core/tests/conformance made a package
    from conformance.v311_helpers import (  # type: ignore[no-redef]
        V31,
        V311,
        Factory,
        assert_rejected,
        connect_bytes,
        frame,
        online,
        publish_bytes,
        publish_qos,
        publishes,
        still_serving,
        string,
        subscribe,
        subscribe_bytes,
        unsubscribe_bytes,
    )


#: byte strings that are not well-formed UTF-8 as MQTT defines it
ILL_FORMED = [
    pytest.param(b"a\xffb", id="invalid-byte"),
    pytest.param(b"ab\xc3", id="truncated-sequence"),
    pytest.param(b"a\xc0\xafb", id="overlong"),
    pytest.param(b"a\xed\xa0\x80b", id="surrogate-d800"),
    pytest.param(b"a\xed\xbf\xbfb", id="surrogate-dfff"),
    pytest.param(b"a\xf4\x90\x80\x80", id="above-10ffff"),
]
NULL = [pytest.param(b"a\x00b", id="u0000"), pytest.param(b"\x00", id="only-u0000")]


def where(field: str, text: bytes) -> tuple[bool, bytes]:
    """(in the CONNECT?, bytes) carrying ``text`` in ``field``."""
    if field == "client-id":
        return True, connect_bytes(text)
    if field == "will-topic":
        return True, connect_bytes("w", flags=0x06, rest=string(text) + string(b"m"))
    if field == "user-name":
        return True, connect_bytes("u", flags=0x82, rest=string(text))
    if field == "topic-name":
        return False, publish_bytes(text, b"x")
    if field == "subscribe-filter":
        return False, subscribe_bytes((text, 0))
    assert field == "unsubscribe-filter"
    return False, unsubscribe_bytes(text)


FIELDS = pytest.mark.parametrize("field", [
    "client-id", "will-topic", "user-name", "topic-name", "subscribe-filter",
    "unsubscribe-filter",
])


def rejected(raw_factory: Factory, field: str, text: bytes, level: int = V311) -> None:
    in_connect, data = where(field, text)
    if in_connect:
        if level == V31:
            data = connect_bytes(b"x", level=V31) if field == "client-id" else data
        raw = raw_factory(level=level)
    else:
        raw = online(raw_factory, client_id="bad-utf8", level=level)
    assert assert_rejected(raw, data) == []
    still_serving(raw_factory)


# -- UTF-8 --------------------------------------------------------------------------------


@pytest.mark.mqtt311("MQTT-1.5.3-1", "MQTT-3.1.3-4", "MQTT-3.1.3-10", "MQTT-3.1.3-11",
                     "MQTT-3.3.2-1", "MQTT-3.8.3-1", "MQTT-3.10.3-1", "MQTT-3.1.4-1")
@FIELDS
@pytest.mark.parametrize("text", ILL_FORMED)
def test_ill_formed_utf8_closes_the_connection(
    raw_factory: Factory, field: str, text: bytes
) -> None:
    rejected(raw_factory, field, text)


@pytest.mark.mqtt311("MQTT-1.5.3-2", "MQTT-4.7.3-2")
@FIELDS
@pytest.mark.parametrize("text", NULL)
def test_u0000_in_a_string_closes_the_connection(
    raw_factory: Factory, field: str, text: bytes
) -> None:
    rejected(raw_factory, field, text)


@pytest.mark.mqtt311("MQTT-1.5.3-1", "MQTT-3.3.2-1")
def test_mqtt_3_1_topic_names_are_checked_too(raw_factory: Factory) -> None:
    rejected(raw_factory, "topic-name", b"a\xed\xa0\x80", level=V31)


@pytest.mark.mqtt311("MQTT-1.5.3-3")
def test_a_byte_order_mark_is_kept_in_topic_and_payload(raw_factory: Factory) -> None:
    bom = "\ufeff"
    sub = online(raw_factory, client_id="bomsub")
    subscribe(sub, (f"{bom}bom/#", 1))
    pub = online(raw_factory, client_id="bompub")
    publish_qos(pub, f"{bom}bom/{bom}", f"{bom}x".encode(), 1)
    [message] = publishes(sub, 1)
    assert (message.topic, message.payload) == (f"{bom}bom/{bom}", f"{bom}x".encode())


# -- fixed header flags -------------------------------------------------------------------


@pytest.mark.mqtt311("MQTT-2.2.2-1", "MQTT-2.2.2-2")
@pytest.mark.parametrize("data", [
    pytest.param(b"\x41\x02\x00\x01", id="PUBACK-0x1"),
    pytest.param(b"\x58\x02\x00\x01", id="PUBREC-0x8"),
    pytest.param(b"\x72\x02\x00\x01", id="PUBCOMP-0x2"),
    pytest.param(b"\xc1\x00", id="PINGREQ-0x1"),
    pytest.param(b"\xcf\x00", id="PINGREQ-0xF"),
])
def test_invalid_fixed_header_flags_close_the_connection(
    raw_factory: Factory, data: bytes
) -> None:
    raw = online(raw_factory, client_id="flags")
    assert assert_rejected(raw, data) == []
    still_serving(raw_factory)


@pytest.mark.mqtt311("MQTT-2.2.2-1", "MQTT-2.2.2-2", "MQTT-3.1.4-1")
@pytest.mark.parametrize("byte0", [0x11, 0x12, 0x18])
def test_a_connect_with_fixed_header_flags_gets_no_connack(
    raw_factory: Factory, byte0: int
) -> None:
    data = bytearray(connect_bytes("cflags"))
    data[0] = byte0
    assert assert_rejected(raw_factory(), bytes(data)) == []


@pytest.mark.mqtt311("MQTT-3.6.1-1")
@pytest.mark.parametrize("byte0", [0x60, 0x63, 0x6A])
def test_pubrel_flags_must_be_0010(raw_factory: Factory, byte0: int) -> None:
    raw = online(raw_factory, client_id="relflags")
    raw.send(Publish("rel/t", b"x", 2, packet_id=1))
    raw.recv()  # PUBREC
    assert assert_rejected(raw, bytes((byte0, 2, 0, 1))) == []


@pytest.mark.mqtt311("MQTT-3.8.1-1")
@pytest.mark.parametrize("byte0", [0x80, 0x83, 0x8A])
def test_subscribe_flags_must_be_0010(raw_factory: Factory, byte0: int) -> None:
    raw = online(raw_factory, client_id="subflags")
    assert assert_rejected(raw, subscribe_bytes(("f/t", 0), byte0=byte0)) == []


@pytest.mark.mqtt311("MQTT-3.10.1-1")
@pytest.mark.parametrize("byte0", [0xA0, 0xA3, 0xAA])
def test_unsubscribe_flags_must_be_0010(raw_factory: Factory, byte0: int) -> None:
    raw = online(raw_factory, client_id="unsflags")
    assert assert_rejected(raw, unsubscribe_bytes("f/t", byte0=byte0)) == []


# -- topic length -------------------------------------------------------------------------


def test_the_longest_topic_name_is_routed_intact(raw_factory: Factory) -> None:
    topic = "long/" + "x" * (65535 - 5)
    sub = online(raw_factory, client_id="longsub")
    subscribe(sub, ("long/+", 1))
    pub = online(raw_factory, client_id="longpub")
    publish_qos(pub, topic, b"far", 1)
    [message] = publishes(sub, 1)
    assert message.topic == topic


def test_the_codec_refuses_to_encode_a_topic_over_65535_bytes() -> None:
    with pytest.raises(LocalProtocolError):
        encode(Publish("t" * 65536, b""), V311)


# -- errors while processing --------------------------------------------------------------


@pytest.mark.mqtt311("MQTT-4.8.0-2")
def test_an_error_while_processing_a_packet_closes_that_connection(
    broker: Any, raw_factory: Factory
) -> None:
    # a transient error is injected into the broker's PUBLISH handler (plugin failures
    # cannot be used: midge isolates them, logs them and goes on processing)
    handlers = broker.broker.engine.handlers
    original = handlers[Publish]

    def failing(conn: Any, packet: Publish) -> Any:
        if packet.topic == "boom":
            raise MemoryError("no room for this message")
        return original(conn, packet)

    broker.call(handlers.__setitem__, Publish, failing)
    bystander = online(raw_factory, client_id="bystander")
    subscribe(bystander, ("#", 1))
    raw = online(raw_factory, client_id="unlucky")
    assert assert_rejected(raw, encode(Publish("boom", b"x", 1, packet_id=1), V311)) == []
    pub = online(raw_factory, client_id="after")
    publish_qos(pub, "fine", b"still routed", 1)
    assert publishes(bystander, 1)[0].payload == b"still routed"


@pytest.mark.mqtt311("MQTT-4.8.0-1")
@pytest.mark.parametrize("data", [
    pytest.param(b"\x30\xff\xff\xff\xff\x01", id="remaining-length-of-5-bytes"),
    pytest.param(frame(0x30, b"\x00\x05ab"), id="topic-past-the-end"),
    pytest.param(frame(0x32, string("t")), id="qos1-without-packet-id"),
    pytest.param(frame(0x40, b"\x00\x01\x00"), id="puback-too-long"),
    pytest.param(b"\x00\x00", id="packet-type-0"),
    pytest.param(b"\xf0\x00", id="packet-type-15"),
    pytest.param(b"\x20\x02\x00\x00", id="connack-from-a-client"),
])
def test_a_malformed_packet_closes_the_connection(raw_factory: Factory, data: bytes) -> None:
    raw = online(raw_factory, client_id="malformed")
    assert assert_rejected(raw, data) == []
    still_serving(raw_factory)
