"""MQTT 5.0 PUBLISH (section 3.3): flags, retained messages, properties, delivery."""

from __future__ import annotations

import time
from typing import Any

import pytest
from v5wire import (
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
    Disconnect,
    Property,
    PubAck,
    PubComp,
    Publish,
    PubRec,
    PubRel,
    ReasonCode,
    SubAck,
    Subscribe,
    Subscription,
)


def _retain_many(broker: Any, prefix: str, count: int, qos: int = 0) -> None:
    async def fill() -> None:
        for index in range(count):
            await broker.broker.publish(f"{prefix}/{index}", b"r%d" % index, qos, True)

    broker.call(fill)


# -- the fixed header ------------------------------------------------------------------------


@pytest.mark.mqtt5("MQTT-3.3.1-1", "MQTT-4.4.0-1", "MQTT-4.3.2-3")
def test_an_unacknowledged_delivery_is_resent_with_dup_on_reconnect_only(
    raw_factory: Factory,
) -> None:
    sub = v5(raw_factory, "dup-sub", expiry=300)
    subscribe(sub, "dup/t", 1)
    publish(v5(raw_factory, "dup-pub"), "dup/t", b"once", 1)
    first = expect_publish(sub, ack=False)
    assert first.dup is False
    quiet(sub, 0.7)  # not resent while the connection lasts
    sub.close()
    back = v5(raw_factory, "dup-sub", clean=False, expiry=300)
    again = expect_publish(back, ack=False)
    assert (again.dup, again.packet_id, again.payload) == (True, first.packet_id, b"once")


@pytest.mark.mqtt5("MQTT-3.3.1-2", "MQTT-4.3.1-1")
def test_qos_0_deliveries_have_dup_0(raw_factory: Factory) -> None:
    sub = v5(raw_factory, "dup0-sub")
    subscribe(sub, "dup0/t", 0)
    publish(v5(raw_factory, "dup0-pub"), "dup0/t", b"z", 0)
    data = raw_bytes_until_quiet(sub)
    assert data[0] == 0x30, data  # QoS 0, DUP 0, RETAIN 0


@pytest.mark.mqtt5("MQTT-3.3.1-2")
def test_a_qos_0_publish_with_dup_1_is_malformed(raw_factory: Factory) -> None:
    raw = v5(raw_factory, "dup0-bad")
    raw.send(frame(0x38, s("dup0/bad"), b"\x00", b"x"))
    closed_with(raw, ReasonCode.MALFORMED_PACKET)


@pytest.mark.mqtt5("MQTT-3.3.1-3")
def test_the_outgoing_dup_flag_does_not_copy_the_incoming_one(raw_factory: Factory) -> None:
    sub = v5(raw_factory, "dupin-sub")
    subscribe(sub, "dupin/t", 1)
    publish(v5(raw_factory, "dupin-pub"), "dupin/t", b"d", 1, dup=True)
    assert expect_publish(sub).dup is False


@pytest.mark.mqtt5("MQTT-3.3.1-4", "MQTT-4.13.1-1")
def test_a_publish_with_both_qos_bits_set_is_malformed(raw_factory: Factory) -> None:
    raw = v5(raw_factory, "qos3")
    raw.send(frame(0x36, s("q/3"), b"\x00\x01", b"\x00", b"x"))
    closed_with(raw, ReasonCode.MALFORMED_PACKET)


# -- retained messages -----------------------------------------------------------------------


@pytest.mark.mqtt5("MQTT-3.3.1-5", "MQTT-3.3.1-9")
def test_a_retained_publish_replaces_the_topics_retained_message(raw_factory: Factory) -> None:
    pub = v5(raw_factory, "rep-pub")
    publish(pub, "rep/t", b"old", 1, retain=True)
    publish(pub, "rep/t", b"new", 1, retain=True, packet_id=2)
    sub = v5(raw_factory, "rep-sub")
    subscribe(sub, "rep/#", 1)
    messages = [p for p in drain(sub) if isinstance(p, Publish)]
    assert [(m.topic, m.payload, m.retain) for m in messages] == [("rep/t", b"new", True)]


@pytest.mark.mqtt5("MQTT-3.3.1-6", "MQTT-3.3.1-7")
def test_an_empty_retained_publish_is_delivered_and_clears_the_retained_message(
    raw_factory: Factory,
) -> None:
    pub = v5(raw_factory, "clr-pub")
    publish(pub, "clr/t", b"kept", 1, retain=True)
    live = v5(raw_factory, "clr-live")
    subscribe(live, "clr/t", 1)
    assert expect_publish(live).payload == b"kept"
    publish(pub, "clr/t", b"", 1, retain=True, packet_id=2)
    cleared = expect_publish(live)
    assert cleared.payload == b"" and cleared.topic == "clr/t"
    late = v5(raw_factory, "clr-late")
    subscribe(late, "clr/#", 1)
    quiet(late)


@pytest.mark.mqtt5("MQTT-3.3.1-8")
def test_a_non_retained_publish_leaves_the_retained_message_alone(raw_factory: Factory) -> None:
    pub = v5(raw_factory, "nr-pub")
    publish(pub, "nr/t", b"retained", 1, retain=True)
    publish(pub, "nr/t", b"passing", 1, retain=False, packet_id=2)
    publish(pub, "nr/t", b"", 1, retain=False, packet_id=3)
    late = v5(raw_factory, "nr-late")
    subscribe(late, "nr/t", 1)
    assert [p.payload for p in drain(late) if isinstance(p, Publish)] == [b"retained"]


@pytest.mark.mqtt5("MQTT-3.3.1-9")
def test_retain_handling_0_sends_every_matching_retained_message(broker: Any,
                                                                 raw_factory: Factory) -> None:
    _retain_many(broker, "rh0", 50)
    sub = v5(raw_factory, "rh0-sub")
    assert subscribe(sub, "rh0/+", 0, retain_handling=0) == [0]
    got = [p for p in drain(sub) if isinstance(p, Publish)]
    assert sorted(p.topic for p in got) == sorted(f"rh0/{i}" for i in range(50))
    assert all(p.retain for p in got)


@pytest.mark.mqtt5("MQTT-3.3.1-9", "MQTT-3.3.4-3")
def test_retained_messages_sent_on_subscribe_carry_its_subscription_identifier(
    broker: Any, raw_factory: Factory,
) -> None:
    _retain_many(broker, "rsid", 3, 1)
    sub = v5(raw_factory, "rsid-sub")
    assert subscribe(sub, "rsid/#", 1, sid=77) == [1]
    got = [p for p in drain(sub) if isinstance(p, Publish)]
    assert len(got) == 3
    assert all(p.retain and p.properties[Property.SUBSCRIPTION_IDENTIFIER] == [77] for p in got)


@pytest.mark.mqtt5("MQTT-3.3.1-9")
@pytest.mark.parametrize("qos", [0, 1])
def test_retain_handling_0_sends_more_than_1000_retained_messages(
    broker: Any, raw_factory: Factory, qos: int
) -> None:
    _retain_many(broker, "many", 1200, qos)
    sub = v5(raw_factory, f"many-sub{qos}")
    assert subscribe(sub, "many/#", qos) == [qos]
    got = {p.topic for p in drain(sub, wait=1.0) if isinstance(p, Publish)}
    assert len(got) == 1200


@pytest.mark.mqtt5("MQTT-3.3.1-10", "MQTT-3.3.1-11", "MQTT-3.8.4-4")
def test_retain_handling_1_and_2(raw_factory: Factory) -> None:
    publish(v5(raw_factory, "rh-pub"), "rh/t", b"r", 1, retain=True)
    sub = v5(raw_factory, "rh-sub")
    assert subscribe(sub, "rh/t", 1, retain_handling=1) == [1]
    assert expect_publish(sub).payload == b"r"  # new subscription: sent
    assert subscribe(sub, "rh/t", 1, retain_handling=1, packet_id=2) == [1]
    quiet(sub)  # existed already: not sent
    assert subscribe(sub, "rh/t", 1, retain_handling=0, packet_id=3) == [1]
    assert expect_publish(sub).payload == b"r"  # replaced with handling 0: sent again
    other = v5(raw_factory, "rh2-sub")
    assert subscribe(other, "rh/t", 1, retain_handling=2) == [1]
    quiet(other)  # handling 2: never sent


@pytest.mark.mqtt5("MQTT-3.3.1-12", "MQTT-3.3.1-13")
def test_retain_as_published_decides_the_retain_flag_of_live_deliveries(
    raw_factory: Factory,
) -> None:
    plain = v5(raw_factory, "rap0")
    subscribe(plain, "rap/t", 0, retain_as_published=False)
    kept = v5(raw_factory, "rap1")
    subscribe(kept, "rap/t", 0, retain_as_published=True)
    pub = v5(raw_factory, "rap-pub")
    publish(pub, "rap/t", b"r", 0, retain=True)
    publish(pub, "rap/t", b"n", 0, retain=False)
    assert [(p.payload, p.retain) for p in (expect_publish(plain), expect_publish(plain))] == [
        (b"r", False), (b"n", False)]
    assert [(p.payload, p.retain) for p in (expect_publish(kept), expect_publish(kept))] == [
        (b"r", True), (b"n", False)]


# -- the variable header ---------------------------------------------------------------------


@pytest.mark.mqtt5("MQTT-3.3.2-2", "MQTT-4.7.0-1")
@pytest.mark.parametrize("topic", ["a/+", "a/#", "+", "a+b"])
def test_a_topic_name_with_a_wildcard_is_refused(raw_factory: Factory, topic: str) -> None:
    raw = v5(raw_factory, "wild-pub")
    raw.send(frame(0x30, s(topic), b"\x00", b"x"))
    closed_with(raw, ReasonCode.TOPIC_NAME_INVALID)


@pytest.mark.mqtt5("MQTT-3.3.2-3")
def test_deliveries_carry_the_published_topic_matching_the_filter(raw_factory: Factory) -> None:
    sub = v5(raw_factory, "match-sub")
    subscribe(sub, "m/+/c", 0)
    pub = v5(raw_factory, "match-pub")
    for topic in ("m/b/c", "m/b/d", "m/b/c/d", "m/x/c"):
        publish(pub, topic, topic.encode(), 0)
    assert [p.topic for p in drain(sub) if isinstance(p, Publish)] == ["m/b/c", "m/x/c"]


@pytest.mark.mqtt5("MQTT-3.3.2-4", "MQTT-3.3.2-15", "MQTT-3.3.2-16", "MQTT-3.3.2-17",
                   "MQTT-3.3.2-18", "MQTT-3.3.2-20")
def test_message_properties_are_forwarded_unaltered(raw_factory: Factory) -> None:
    sub = v5(raw_factory, "props-sub")
    subscribe(sub, "props/t", 1)
    pairs = [("z", "1"), ("a", "2"), ("z", "3"), ("ü", "ß")]
    publish(v5(raw_factory, "props-pub"), "props/t", "héllo".encode(), 1,
            payload_format_indicator=1, response_topic="reply/to/me",
            correlation_data=b"\x00\x01corr", user_property=pairs, content_type="text/plain")
    got = expect_publish(sub).properties
    assert got[Property.PAYLOAD_FORMAT_INDICATOR] == 1
    assert got[Property.RESPONSE_TOPIC] == "reply/to/me"
    assert got[Property.CORRELATION_DATA] == b"\x00\x01corr"
    assert got[Property.USER_PROPERTY] == pairs
    assert got[Property.CONTENT_TYPE] == "text/plain"


@pytest.mark.mqtt5("MQTT-3.3.2-14")
def test_a_response_topic_with_a_wildcard_is_not_forwarded(raw_factory: Factory) -> None:
    sub = v5(raw_factory, "rtw-sub")
    subscribe(sub, "rtw/t", 1)
    pub = v5(raw_factory, "rtw-pub")
    pub.send(Publish("rtw/t", b"x", 1, packet_id=1,
                     properties={Property.RESPONSE_TOPIC: "reply/+"}))
    # refused with a PUBACK of 0x80 or above, or a DISCONNECT; never delivered
    answer = pub.recv()
    assert answer.reason_code >= 0x80, answer
    quiet(sub)


@pytest.mark.mqtt5("MQTT-3.3.2-5")
def test_a_message_that_expires_while_queued_is_not_delivered(raw_factory: Factory) -> None:
    sub = v5(raw_factory, "exp-sub", expiry=300)
    subscribe(sub, "exp/t", 1)
    sub.close()
    pub = v5(raw_factory, "exp-pub")
    publish(pub, "exp/t", b"short", 1, message_expiry_interval=1)
    publish(pub, "exp/t", b"forever", 1, packet_id=2)
    time.sleep(1.3)
    back = v5(raw_factory, "exp-sub", clean=False, expiry=300)
    assert [p.payload for p in drain(back) if isinstance(p, Publish)] == [b"forever"]


@pytest.mark.mqtt5("MQTT-3.3.2-6")
def test_the_forwarded_expiry_interval_is_reduced_by_the_time_waited(
    raw_factory: Factory,
) -> None:
    sub = v5(raw_factory, "expw-sub", expiry=300)
    subscribe(sub, "expw/t", 1)
    sub.close()
    publish(v5(raw_factory, "expw-pub"), "expw/t", b"w", 1, message_expiry_interval=30)
    time.sleep(1.2)
    back = v5(raw_factory, "expw-sub", clean=False, expiry=300)
    left = expect_publish(back).properties[Property.MESSAGE_EXPIRY_INTERVAL]
    assert 1 <= left <= 29


@pytest.mark.mqtt5("MQTT-3.3.2-7")
def test_topic_aliases_do_not_carry_over_to_a_new_connection(raw_factory: Factory) -> None:
    first = v5(raw_factory, "alias-carry", expiry=300)
    publish(first, "alias/t", b"set", 0, topic_alias=1)
    first.send(Disconnect())
    first.packets_until_close()
    second = v5(raw_factory, "alias-carry", clean=False, expiry=300)
    second.send(Publish("", b"use", 0, properties={Property.TOPIC_ALIAS: 1}))
    closed_with(second, ReasonCode.PROTOCOL_ERROR)


@pytest.mark.mqtt5("MQTT-3.3.2-8")
def test_topic_alias_0_is_refused(raw_factory: Factory) -> None:
    raw = v5(raw_factory, "alias0")
    raw.send(frame(0x30, s("alias/zero"), b"\x03\x23\x00\x00", b"x"))
    closed_with(raw, ReasonCode.TOPIC_ALIAS_INVALID)


@pytest.mark.mqtt5("MQTT-3.3.2-9", "MQTT-3.2.2-17")
def test_a_topic_alias_above_the_server_maximum_is_refused(raw_factory: Factory) -> None:
    raw = v5(raw_factory, "alias-big")
    maximum = raw.connack.properties[Property.TOPIC_ALIAS_MAXIMUM]
    raw.send(Publish("alias/big", b"x", 0, properties={Property.TOPIC_ALIAS: maximum + 1}))
    closed_with(raw, ReasonCode.TOPIC_ALIAS_INVALID)


@pytest.mark.mqtt5("MQTT-3.2.2-18")
def test_with_topic_alias_maximum_0_any_alias_is_refused(broker_factory: Factory,
                                                         raw_factory: Factory) -> None:
    running = broker_factory(topic_alias_maximum=0)
    raw = v5(raw_factory, "alias-none", port=running.port)
    assert raw.connack.properties.get(Property.TOPIC_ALIAS_MAXIMUM, 0) == 0
    raw.send(Publish("alias/none", b"x", 0, properties={Property.TOPIC_ALIAS: 1}))
    closed_with(raw, ReasonCode.TOPIC_ALIAS_INVALID)


@pytest.mark.mqtt5("MQTT-3.3.2-12")
def test_every_alias_up_to_the_advertised_maximum_is_accepted(raw_factory: Factory) -> None:
    sub = v5(raw_factory, "alias-all-sub")
    subscribe(sub, "aa/#", 0)
    pub = v5(raw_factory, "alias-all-pub")
    maximum = pub.connack.properties[Property.TOPIC_ALIAS_MAXIMUM]
    assert maximum >= 1
    for alias in range(1, maximum + 1):
        publish(pub, f"aa/{alias}", b"set", 0, topic_alias=alias)
    for alias in range(maximum, 0, -1):
        pub.send(Publish("", b"use", 0, properties={Property.TOPIC_ALIAS: alias}))
    got = [(p.topic, p.payload) for p in drain(sub) if isinstance(p, Publish)]
    assert got[maximum:] == [(f"aa/{a}", b"use") for a in range(maximum, 0, -1)]


@pytest.mark.mqtt5("MQTT-3.1.2-26", "MQTT-3.1.2-27", "MQTT-3.3.2-11", "MQTT-3.3.2-8")
def test_outbound_topic_aliases_respect_the_client_maximum(raw_factory: Factory) -> None:
    aliased = v5(raw_factory, "alias-out", topic_alias_maximum=2)
    subscribe(aliased, "ao/#", 0)
    plain = v5(raw_factory, "alias-out-none")
    subscribe(plain, "ao/#", 0)
    pub = v5(raw_factory, "alias-out-pub")
    for topic in ("ao/1", "ao/2", "ao/3", "ao/1", "ao/3"):
        publish(pub, topic, b"p", 0)
    got = [p for p in drain(aliased) if isinstance(p, Publish)]
    aliases = [p.properties.get(Property.TOPIC_ALIAS) for p in got]
    assert len(got) == 5 and any(aliases)
    assert all(a is None or 1 <= a <= 2 for a in aliases), aliases
    seen = [p for p in drain(plain) if isinstance(p, Publish)]
    assert len(seen) == 5
    assert all(Property.TOPIC_ALIAS not in p.properties for p in seen)


# -- PUBLISH actions -------------------------------------------------------------------------


@pytest.mark.mqtt5("MQTT-3.3.4-1", "MQTT-4.3.2-4", "MQTT-4.3.3-8", "MQTT-4.3.3-11",
                   "MQTT-2.2.1-5")
def test_each_qos_gets_its_response(raw_factory: Factory) -> None:
    raw = v5(raw_factory, "responses")
    raw.send(Publish("resp/t", b"0", 0))
    quiet(raw)
    raw.send(Publish("resp/t", b"1", 1, packet_id=11))
    assert next_of(raw, PubAck).packet_id == 11
    raw.send(Publish("resp/t", b"2", 2, packet_id=12))
    assert next_of(raw, PubRec).packet_id == 12
    raw.send(PubRel(12))
    assert next_of(raw, PubComp) == PubComp(12)


@pytest.mark.mqtt5("MQTT-3.3.4-2", "MQTT-3.3.4-3", "MQTT-3.3.4-4")
def test_overlapping_subscriptions_give_one_copy_with_every_identifier(
    raw_factory: Factory,
) -> None:
    sub = v5(raw_factory, "overlap")
    subscribe(sub, "ov/#", 0, sid=7)
    subscribe(sub, "ov/t", 1, packet_id=2, sid=9)
    subscribe(sub, "ov/+", 0, packet_id=3)  # no identifier
    publish(v5(raw_factory, "overlap-pub"), "ov/t", b"x", 2)
    got = [p for p in drain(sub) if isinstance(p, Publish)]
    assert len(got) == 1
    assert got[0].qos == 1
    assert sorted(got[0].properties[Property.SUBSCRIPTION_IDENTIFIER]) == [7, 9]


@pytest.mark.mqtt5("MQTT-3.3.4-3", "MQTT-3.3.4-5")
def test_separate_copies_carry_their_own_subscription_identifier(raw_factory: Factory) -> None:
    sub = v5(raw_factory, "copies")
    subscribe(sub, "$share/g/cp/t", 1, sid=3)
    subscribe(sub, "cp/t", 1, packet_id=2, sid=4)
    publish(v5(raw_factory, "copies-pub"), "cp/t", b"x", 1)
    got = [p for p in drain(sub) if isinstance(p, Publish)]
    assert sorted(tuple(p.properties[Property.SUBSCRIPTION_IDENTIFIER]) for p in got) == [
        (3,), (4,)]


@pytest.mark.mqtt5("MQTT-3.3.4-6")
def test_a_subscription_identifier_from_a_publisher_is_not_forwarded(
    raw_factory: Factory,
) -> None:
    sub = v5(raw_factory, "sidpub-sub")
    subscribe(sub, "sidpub/t", 0)
    pub = v5(raw_factory, "sidpub-pub")
    pub.send(Publish("sidpub/t", b"x", 0, properties={Property.SUBSCRIPTION_IDENTIFIER: [42]}))
    assert Property.SUBSCRIPTION_IDENTIFIER not in expect_publish(sub).properties


@pytest.mark.mqtt5("MQTT-3.3.4-7")
def test_more_unreleased_qos_2_publishes_than_receive_maximum_are_refused(
    broker_factory: Factory, raw_factory: Factory,
) -> None:
    running = broker_factory(receive_maximum=2)
    raw = v5(raw_factory, "recvmax", port=running.port)
    assert raw.connack.properties[Property.RECEIVE_MAXIMUM] == 2
    for pid in (1, 2):
        raw.send(Publish("rm/t", b"x", 2, packet_id=pid))
        assert next_of(raw, PubRec).packet_id == pid
    raw.send(Publish("rm/t", b"x", 2, packet_id=3))
    closed_with(raw, ReasonCode.RECEIVE_MAXIMUM_EXCEEDED)


@pytest.mark.mqtt5("MQTT-3.3.4-9", "MQTT-4.9.0-1", "MQTT-4.9.0-2")
def test_no_more_than_the_client_receive_maximum_is_in_flight(raw_factory: Factory) -> None:
    sub = v5(raw_factory, "window", receive_maximum=2)
    subscribe(sub, "win/t", 1)
    pub = v5(raw_factory, "window-pub")
    for pid in range(1, 6):
        publish(pub, "win/t", b"%d" % pid, 1, packet_id=pid)
    first = [expect_publish(sub, ack=False) for _ in range(2)]
    quiet(sub, 0.4)
    sub.send(PubAck(first[0].packet_id))
    third = expect_publish(sub, ack=False)
    quiet(sub, 0.3)
    assert [p.payload for p in (*first, third)] == [b"1", b"2", b"3"]


@pytest.mark.mqtt5("MQTT-3.3.4-10", "MQTT-4.9.0-3")
def test_a_full_window_does_not_delay_other_packets(raw_factory: Factory) -> None:
    sub = v5(raw_factory, "window-full", receive_maximum=1)
    subscribe(sub, "wf/t", 1)
    pub = v5(raw_factory, "window-full-pub")
    publish(pub, "wf/t", b"1", 1)
    publish(pub, "wf/t", b"2", 1, packet_id=2)
    expect_publish(sub, ack=False)
    sub.send(frame(0xC0))  # PINGREQ
    assert type(sub.recv()).__name__ == "PingResp"
    sub.send(Subscribe(9, [Subscription("wf/other", 0)]))
    assert next_of(sub, SubAck).packet_id == 9
    sub.send(Publish("wf/elsewhere", b"own", 1, packet_id=3))
    assert next_of(sub, PubAck).packet_id == 3


@pytest.mark.mqtt5("MQTT-4.6.0-5", "MQTT-4.6.0-6")
@pytest.mark.parametrize("qos", [0, 1, 2])
def test_messages_from_one_client_are_delivered_in_order(raw_factory: Factory,
                                                        qos: int) -> None:
    sub = v5(raw_factory, f"order-sub{qos}")
    subscribe(sub, "order/#", qos)
    pub = v5(raw_factory, f"order-pub{qos}")
    for index in range(1, 31):
        publish(pub, "order/t", b"%d" % index, qos, packet_id=index)
    got: list[bytes] = []
    for _ in range(200):
        if len(got) == 30:
            break
        packet = sub.recv()
        if isinstance(packet, Publish):
            got.append(packet.payload)
            if packet.qos == 1:
                sub.send(PubAck(packet.packet_id))
            elif packet.qos == 2:
                sub.send(PubRec(packet.packet_id))
        elif isinstance(packet, PubRel):
            sub.send(PubComp(packet.packet_id))
    assert got == [b"%d" % i for i in range(1, 31)]
