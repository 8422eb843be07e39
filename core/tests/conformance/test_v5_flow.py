"""MQTT 5.0 QoS flows and acknowledgements (sections 2.2, 3.4 to 3.7, 4.3, 4.4) and the
client's Maximum Packet Size (3.1.2.11.4)."""

from __future__ import annotations

import time

import pytest
from v5wire import (
    PUBACK_CODES,
    PUBCOMP_CODES,
    PUBREC_CODES,
    PUBREL_CODES,
    Factory,
    closed_with,
    drain,
    expect_publish,
    frame,
    next_of,
    publish,
    quiet,
    raw_bytes_until_quiet,
    s,
    subscribe,
    v5,
)

from midge.codec import (
    Property,
    PubAck,
    PubComp,
    Publish,
    PubRec,
    PubRel,
    ReasonCode,
)

# -- packet identifiers and property lengths -------------------------------------------------


@pytest.mark.mqtt5("MQTT-2.2.1-2", "MQTT-2.2.2-1")
def test_a_qos_0_delivery_has_no_packet_identifier_and_a_zero_property_length(
    raw_factory: Factory,
) -> None:
    sub = v5(raw_factory, "wire0")
    subscribe(sub, "w0/t", 0)
    publish(v5(raw_factory, "wire0-pub"), "w0/t", b"abc", 0)
    assert raw_bytes_until_quiet(sub) == frame(0x30, s("w0/t"), b"\x00", b"abc")


@pytest.mark.mqtt5("MQTT-2.2.2-1")
def test_acknowledgements_without_properties_carry_property_length_zero(
    raw_factory: Factory,
) -> None:
    raw = v5(raw_factory, "wireack")
    raw.send(frame(0x82, b"\x00\x05", b"\x00", s("wa/t"), b"\x01"))
    assert raw_bytes_until_quiet(raw) == frame(0x90, b"\x00\x05", b"\x00", b"\x01")


@pytest.mark.mqtt5("MQTT-2.2.1-4", "MQTT-4.3.2-1", "MQTT-4.3.3-1")
def test_the_server_uses_non_zero_packet_identifiers_not_in_use(raw_factory: Factory) -> None:
    sub = v5(raw_factory, "pids", receive_maximum=10)
    subscribe(sub, "pid/#", 2)
    pub = v5(raw_factory, "pids-pub")
    for index in range(10):
        publish(pub, "pid/1" if index % 2 else "pid/2", b"%d" % index, 1 + index % 2,
                packet_id=index + 1)
    first = [expect_publish(sub, ack=False) for _ in range(10)]
    ids = [p.packet_id for p in first]
    assert 0 not in ids and len(set(ids)) == 10
    # free half of them; the new ones never collide with the five still in flight
    for packet in first[:5]:
        sub.send(PubAck(packet.packet_id) if packet.qos == 1 else PubRec(packet.packet_id))
    for index in range(5):
        publish(pub, "pid/1", b"n%d" % index, 1, packet_id=20 + index)
    later = [p for p in drain(sub) if isinstance(p, Publish)]
    assert len(later) == 5
    still = {p.packet_id for p in first[5:]}
    assert not still & {p.packet_id for p in later}
    assert 0 not in {p.packet_id for p in later}


# -- QoS 1 ------------------------------------------------------------------------------------


@pytest.mark.mqtt5("MQTT-4.3.2-2", "MQTT-4.3.2-3")
def test_a_qos_1_delivery_starts_with_dup_0_and_waits_for_its_puback(
    raw_factory: Factory,
) -> None:
    sub = v5(raw_factory, "q1-wait", expiry=300, receive_maximum=1)
    subscribe(sub, "q1w/t", 1)
    pub = v5(raw_factory, "q1-wait-pub")
    publish(pub, "q1w/t", b"1", 1)
    publish(pub, "q1w/t", b"2", 1, packet_id=2)
    first = expect_publish(sub, ack=False)
    assert (first.qos, first.dup, first.payload) == (1, False, b"1")
    quiet(sub, 0.4)  # unacknowledged: nothing after it
    sub.send(PubAck(first.packet_id))
    assert expect_publish(sub).payload == b"2"


@pytest.mark.mqtt5("MQTT-4.3.2-5")
def test_after_puback_the_same_packet_identifier_is_a_new_message(raw_factory: Factory) -> None:
    sub = v5(raw_factory, "q1-again-sub")
    subscribe(sub, "q1a/t", 1)
    pub = v5(raw_factory, "q1-again")
    assert publish(pub, "q1a/t", b"first", 1, packet_id=7).packet_id == 7
    assert publish(pub, "q1a/t", b"second", 1, packet_id=7, dup=True).packet_id == 7
    assert [p.payload for p in drain(sub) if isinstance(p, Publish)] == [b"first", b"second"]


@pytest.mark.mqtt5("MQTT-4.4.0-2")
def test_a_failure_puback_ends_the_delivery_without_retransmission(
    raw_factory: Factory,
) -> None:
    sub = v5(raw_factory, "q1-refuse", expiry=300)
    subscribe(sub, "q1r/t", 1)
    publish(v5(raw_factory, "q1-refuse-pub"), "q1r/t", b"x", 1)
    delivery = expect_publish(sub, ack=False)
    sub.send(PubAck(delivery.packet_id, ReasonCode.UNSPECIFIED_ERROR))
    time.sleep(0.1)
    sub.close()
    back = v5(raw_factory, "q1-refuse", clean=False, expiry=300)
    quiet(back)


# -- QoS 2, the server receiving --------------------------------------------------------------


@pytest.mark.mqtt5("MQTT-4.3.3-10", "MQTT-4.3.3-8")
def test_a_repeated_qos_2_publish_before_pubrel_is_not_delivered_twice(
    raw_factory: Factory,
) -> None:
    sub = v5(raw_factory, "q2dup-sub")
    subscribe(sub, "q2d/t", 2)
    pub = v5(raw_factory, "q2dup")
    pub.send(Publish("q2d/t", b"once", 2, packet_id=4))
    assert next_of(pub, PubRec) == PubRec(4)
    pub.send(Publish("q2d/t", b"once", 2, dup=True, packet_id=4))
    assert next_of(pub, PubRec) == PubRec(4)
    pub.send(PubRel(4))
    assert next_of(pub, PubComp) == PubComp(4)
    got = []
    for packet in drain(sub):
        if isinstance(packet, Publish):
            got.append(packet.payload)
            sub.send(PubRec(packet.packet_id))
    assert got == [b"once"]


@pytest.mark.mqtt5("MQTT-4.3.3-12", "MQTT-4.3.3-11")
def test_after_pubcomp_the_same_packet_identifier_is_a_new_message(
    raw_factory: Factory,
) -> None:
    sub = v5(raw_factory, "q2new-sub")
    subscribe(sub, "q2n/t", 1)
    pub = v5(raw_factory, "q2new")
    publish(pub, "q2n/t", b"first", 2, packet_id=9)
    publish(pub, "q2n/t", b"second", 2, packet_id=9)
    assert [p.payload for p in drain(sub) if isinstance(p, Publish)] == [b"first", b"second"]


@pytest.mark.mqtt5("MQTT-4.3.3-9")
def test_after_a_failure_pubrec_the_same_packet_identifier_is_a_new_message(
    raw_factory: Factory,
) -> None:
    sub = v5(raw_factory, "q2fail-sub")
    subscribe(sub, "q2f/t", 1)
    pub = v5(raw_factory, "q2fail")
    refused = publish(pub, "q2f/t", b"\xff", 2, packet_id=3, payload_format_indicator=1)
    assert refused.reason_code == ReasonCode.PAYLOAD_FORMAT_INVALID
    accepted = publish(pub, "q2f/t", b"good", 2, packet_id=3)
    assert accepted.reason_code == 0
    assert [p.payload for p in drain(sub) if isinstance(p, Publish)] == [b"good"]


@pytest.mark.mqtt5("MQTT-4.3.3-13")
def test_the_qos_2_exchange_completes_after_the_message_expired(raw_factory: Factory) -> None:
    pub = v5(raw_factory, "q2exp")
    pub.send(Publish("q2e/t", b"x", 2, packet_id=6,
                     properties={Property.MESSAGE_EXPIRY_INTERVAL: 1}))
    pubrec = next_of(pub, PubRec)
    assert pubrec.packet_id == 6 and pubrec.reason_code < 0x80
    time.sleep(1.2)
    pub.send(PubRel(6))
    assert next_of(pub, PubComp) == PubComp(6)


# -- QoS 2, the server sending ----------------------------------------------------------------


@pytest.mark.mqtt5("MQTT-4.3.3-2", "MQTT-4.3.3-3", "MQTT-4.3.3-4", "MQTT-2.2.1-5")
def test_a_qos_2_delivery_is_released_after_pubrec(raw_factory: Factory) -> None:
    sub = v5(raw_factory, "q2out", expiry=300)
    subscribe(sub, "q2o/t", 2)
    publish(v5(raw_factory, "q2out-pub"), "q2o/t", b"x", 2)
    delivery = expect_publish(sub, ack=False)
    assert (delivery.qos, delivery.dup) == (2, False)
    quiet(sub, 0.4)
    sub.send(PubRec(delivery.packet_id))
    assert next_of(sub, PubRel) == PubRel(delivery.packet_id)
    sub.send(PubComp(delivery.packet_id))
    quiet(sub)


@pytest.mark.mqtt5("MQTT-4.3.3-5", "MQTT-4.3.3-6", "MQTT-4.4.0-1")
def test_after_pubrel_only_the_pubrel_is_resent(raw_factory: Factory) -> None:
    sub = v5(raw_factory, "q2rel", expiry=300)
    subscribe(sub, "q2r/t", 2)
    publish(v5(raw_factory, "q2rel-pub"), "q2r/t", b"x", 2)
    delivery = expect_publish(sub, ack=False)
    sub.send(PubRec(delivery.packet_id))
    assert next_of(sub, PubRel) == PubRel(delivery.packet_id)
    sub.close()
    back = v5(raw_factory, "q2rel", clean=False, expiry=300)
    assert drain(back) == [PubRel(delivery.packet_id)]
    back.send(PubComp(delivery.packet_id))
    back.close()
    again = v5(raw_factory, "q2rel", clean=False, expiry=300)
    quiet(again)


@pytest.mark.mqtt5("MQTT-4.3.3-7", "MQTT-4.4.0-1")
def test_a_sent_qos_2_message_is_resent_even_after_it_expired(raw_factory: Factory) -> None:
    sub = v5(raw_factory, "q2sentexp", expiry=300)
    subscribe(sub, "q2s/t", 2)
    publish(v5(raw_factory, "q2sentexp-pub"), "q2s/t", b"x", 2, message_expiry_interval=1)
    delivery = expect_publish(sub, ack=False)
    sub.close()
    time.sleep(1.3)
    back = v5(raw_factory, "q2sentexp", clean=False, expiry=300)
    again = expect_publish(back, ack=False)
    assert (again.packet_id, again.dup, again.payload) == (delivery.packet_id, True, b"x")


@pytest.mark.mqtt5("MQTT-4.4.0-2")
def test_a_failure_pubrec_ends_the_delivery_without_pubrel(raw_factory: Factory) -> None:
    sub = v5(raw_factory, "q2refuse", expiry=300)
    subscribe(sub, "q2x/t", 2)
    publish(v5(raw_factory, "q2refuse-pub"), "q2x/t", b"x", 2)
    delivery = expect_publish(sub, ack=False)
    sub.send(PubRec(delivery.packet_id, ReasonCode.UNSPECIFIED_ERROR))
    quiet(sub, 0.4)
    sub.close()
    quiet(v5(raw_factory, "q2refuse", clean=False, expiry=300))


# -- reason codes the server uses --------------------------------------------------------------


@pytest.mark.mqtt5("MQTT-3.4.2-1", "MQTT-3.5.2-1", "MQTT-3.6.2-1", "MQTT-3.7.2-1")
def test_acknowledgements_use_defined_reason_codes(raw_factory: Factory) -> None:
    raw = v5(raw_factory, "codes")
    receiver = v5(raw_factory, "codes-receiver")
    subscribe(receiver, "codes/sub", 2)
    seen: list[tuple[str, int]] = []
    for qos, topic, payload, pfi in [(1, "codes/none", b"x", 0), (1, "codes/sub", b"x", 0),
                                     (1, "$sys/x", b"x", 0), (1, "codes/t", b"\xff", 1),
                                     (2, "codes/none", b"x", 0), (2, "codes/t", b"\xff", 1)]:
        answer = publish(raw, topic, payload, qos, packet_id=len(seen) + 1,
                         payload_format_indicator=pfi) if pfi else publish(
            raw, topic, payload, qos, packet_id=len(seen) + 1)
        seen.append((type(answer).__name__, answer.reason_code))
    assert all(code in (PUBACK_CODES if name == "PubAck" else PUBREC_CODES)
               for name, code in seen), seen
    assert {code for _, code in seen} >= {0x00, 0x10, 0x87, 0x99}
    raw.send(PubRel(999))
    comp = next_of(raw, PubComp)
    assert comp.reason_code == ReasonCode.PACKET_IDENTIFIER_NOT_FOUND
    assert comp.reason_code in PUBCOMP_CODES
    # the server's own PUBREL: for a delivery, and for an unknown PUBREC
    delivered = [p for p in drain(receiver) if isinstance(p, Publish)]
    assert delivered
    for packet in delivered:
        receiver.send(PubRec(packet.packet_id))
        assert next_of(receiver, PubRel).reason_code in PUBREL_CODES
    raw.send(PubRec(4242))
    assert next_of(raw, PubRel).reason_code == ReasonCode.PACKET_IDENTIFIER_NOT_FOUND


@pytest.mark.mqtt5("MQTT-3.6.2-2", "MQTT-3.6.2-3", "MQTT-3.7.2-2", "MQTT-3.7.2-3")
def test_pubrel_and_pubcomp_carry_no_reason_string_for_a_small_client(
    raw_factory: Factory,
) -> None:
    raw = v5(raw_factory, "tiny-rel", maximum_packet_size=12)
    raw.send(PubRel(77))
    comp = next_of(raw, PubComp)
    assert comp.reason_code == ReasonCode.PACKET_IDENTIFIER_NOT_FOUND and not comp.properties
    raw.send(PubRec(78))
    rel = next_of(raw, PubRel)
    assert rel.reason_code == ReasonCode.PACKET_IDENTIFIER_NOT_FOUND and not rel.properties


@pytest.mark.mqtt5("MQTT-3.4.2-2", "MQTT-3.4.2-3")
def test_puback_leaves_out_a_reason_string_that_does_not_fit(raw_factory: Factory) -> None:
    raw = v5(raw_factory, "tiny-puback", maximum_packet_size=16)
    raw.send(Publish("tp/t", b"\xff", 1, packet_id=1,
                     properties={Property.PAYLOAD_FORMAT_INDICATOR: 1}))
    data = raw_bytes_until_quiet(raw)
    assert data and len(data) <= 16, data


@pytest.mark.mqtt5("MQTT-3.5.2-2", "MQTT-3.5.2-3")
def test_pubrec_leaves_out_a_reason_string_that_does_not_fit(raw_factory: Factory) -> None:
    raw = v5(raw_factory, "tiny-pubrec", maximum_packet_size=16)
    raw.send(Publish("tp/t", b"\xff", 2, packet_id=1,
                     properties={Property.PAYLOAD_FORMAT_INDICATOR: 1}))
    data = raw_bytes_until_quiet(raw)
    assert data and len(data) <= 16, data


@pytest.mark.mqtt5("MQTT-3.6.1-1", "MQTT-2.1.3-1")
@pytest.mark.parametrize("byte0", [0x60, 0x63, 0x6A])
def test_pubrel_with_wrong_fixed_header_flags_is_malformed(raw_factory: Factory,
                                                           byte0: int) -> None:
    raw = v5(raw_factory, "relflags")
    raw.send(Publish("rf/t", b"x", 2, packet_id=1))
    next_of(raw, PubRec)
    raw.send(bytes((byte0, 2, 0, 1)))
    closed_with(raw, ReasonCode.MALFORMED_PACKET)


# -- the client's Maximum Packet Size -----------------------------------------------------------


@pytest.mark.mqtt5("MQTT-3.1.2-24", "MQTT-3.1.2-25")
def test_a_delivery_too_large_for_the_client_is_skipped_as_if_sent(
    raw_factory: Factory,
) -> None:
    sub = v5(raw_factory, "small-sub", maximum_packet_size=64, receive_maximum=1)
    subscribe(sub, "small/t", 1)
    pub = v5(raw_factory, "small-pub")
    publish(pub, "small/t", b"x" * 200, 1)
    publish(pub, "small/t", b"fits", 1, packet_id=2)
    publish(pub, "small/t", b"y" * 100, 0)
    publish(pub, "small/t", b"fits too", 0)
    data = raw_bytes_until_quiet(sub, 0.5)
    # the frames, not decoded: each one is within 64 bytes
    frames, pos = [], 0
    while pos < len(data):
        length = data[pos + 1]  # all below 128 here
        frames.append(data[pos:pos + 2 + length])
        pos += 2 + length
    assert frames and all(len(f) <= 64 for f in frames)
    sub.decoder.feed(data)
    got = []
    while (packet := sub.decoder.next_packet()) is not None:
        got.append(packet.payload)
    assert got == [b"fits", b"fits too"]
