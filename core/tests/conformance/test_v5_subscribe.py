"""MQTT 5.0 SUBSCRIBE, SUBACK, UNSUBSCRIBE, UNSUBACK (sections 3.8 to 3.11), topic names
and filters (4.7) and shared subscriptions (4.8)."""

from __future__ import annotations

from typing import Any

import pytest
from v5wire import (
    SUBACK_CODES,
    UNSUBACK_CODES,
    Factory,
    closed_with,
    drain,
    expect_publish,
    frame,
    next_of,
    props,
    publish,
    quiet,
    s,
    subscribe,
    unsubscribe,
    v5,
)

from midge import hookimpl
from midge.codec import (
    Connect,
    Property,
    PubAck,
    Publish,
    PubRec,
    PubRel,
    ReasonCode,
    SubAck,
    Subscribe,
    Subscription,
    UnsubAck,
)


class Acl:
    """Every client in; subscriptions to ``secret/...`` refused."""

    @hookimpl
    def on_connect_authenticate(self, client: Any, packet: Connect) -> bool:
        return True

    @hookimpl
    def on_acl_check(self, client: Any, topic: str, write: bool) -> bool:
        return not topic.startswith("secret")


def _published(raw: Any, wait: float = 0.3) -> list[Publish]:
    return [p for p in drain(raw, wait) if isinstance(p, Publish)]


# -- SUBSCRIBE -------------------------------------------------------------------------------


@pytest.mark.mqtt5("MQTT-3.8.1-1", "MQTT-2.1.3-1")
@pytest.mark.parametrize("byte0", [0x80, 0x81, 0x83, 0x8A])
def test_subscribe_with_wrong_fixed_header_flags_is_malformed(raw_factory: Factory,
                                                              byte0: int) -> None:
    raw = v5(raw_factory, "subflags")
    raw.send(frame(byte0, b"\x00\x01", props(), s("sf/t"), b"\x00"))
    closed_with(raw, ReasonCode.MALFORMED_PACKET)


@pytest.mark.mqtt5("MQTT-3.8.3-2")
def test_subscribe_without_a_topic_filter_is_a_protocol_error(raw_factory: Factory) -> None:
    raw = v5(raw_factory, "subempty")
    raw.send(frame(0x82, b"\x00\x01", props()))
    closed_with(raw, ReasonCode.PROTOCOL_ERROR)


@pytest.mark.mqtt5("MQTT-3.8.3-3")
def test_no_local_keeps_a_clients_own_messages_from_it(raw_factory: Factory) -> None:
    own = v5(raw_factory, "nolocal")
    subscribe(own, "nl/t", 0, no_local=True)
    other = v5(raw_factory, "nolocal-other")
    subscribe(other, "nl/t", 0, no_local=True)
    publish(own, "nl/t", b"mine", 0)
    assert [p.payload for p in _published(other)] == [b"mine"]
    publish(other, "nl/t", b"theirs", 0)
    assert [p.payload for p in _published(own)] == [b"theirs"]


@pytest.mark.mqtt5("MQTT-3.8.3-3")
def test_no_local_applies_per_subscription(raw_factory: Factory) -> None:
    own = v5(raw_factory, "nolocal-mixed")
    subscribe(own, "nlm/t", 0, no_local=True)
    subscribe(own, "nlm/#", 1, packet_id=2, no_local=False)
    own.send(Publish("nlm/t", b"mine", 1, packet_id=1))
    packets = drain(own)
    assert PubAck(1) in packets
    assert [(p.payload, p.qos) for p in packets if isinstance(p, Publish)] == [(b"mine", 1)]


@pytest.mark.mqtt5("MQTT-3.8.3-4")
def test_no_local_on_a_shared_subscription_is_a_protocol_error(raw_factory: Factory) -> None:
    raw = v5(raw_factory, "nolocal-share")
    raw.send(Subscribe(1, [Subscription("$share/g/nls/t", 0, no_local=True)]))
    closed_with(raw, ReasonCode.PROTOCOL_ERROR)


@pytest.mark.mqtt5("MQTT-3.8.3-5")
@pytest.mark.parametrize("options", [0x40, 0x80, 0xC1])
def test_reserved_subscription_option_bits_are_malformed(raw_factory: Factory,
                                                         options: int) -> None:
    raw = v5(raw_factory, "subopts")
    raw.send(frame(0x82, b"\x00\x01", props(), s("so/t"), bytes((options,))))
    closed_with(raw, ReasonCode.MALFORMED_PACKET)


@pytest.mark.mqtt5("MQTT-3.8.4-1", "MQTT-3.8.4-2", "MQTT-2.2.1-6")
@pytest.mark.parametrize("packet_id", [1, 258, 65535])
def test_every_subscribe_gets_a_suback_with_its_packet_identifier(raw_factory: Factory,
                                                                  packet_id: int) -> None:
    raw = v5(raw_factory, f"suback{packet_id}")
    raw.send(Subscribe(packet_id, [Subscription("sa/t", 1)]))
    suback = next_of(raw, SubAck)
    assert (suback.packet_id, suback.reason_codes) == (packet_id, [1])


@pytest.mark.mqtt5("MQTT-3.8.4-3")
def test_an_identical_filter_replaces_the_subscription(raw_factory: Factory) -> None:
    raw = v5(raw_factory, "replace")
    assert subscribe(raw, "rp/t", 0) == [0]
    assert subscribe(raw, "rp/t", 1, packet_id=2) == [1]
    publish(v5(raw_factory, "replace-pub"), "rp/t", b"x", 1)
    got = _published(raw)
    assert [(p.payload, p.qos) for p in got] == [(b"x", 1)]


@pytest.mark.mqtt5("MQTT-3.8.4-4")
def test_replacing_a_subscription_loses_no_message(raw_factory: Factory) -> None:
    raw = v5(raw_factory, "replace-flow")
    subscribe(raw, "rf/t", 1)
    pub = v5(raw_factory, "replace-flow-pub")
    for index in range(20):
        pub.send(Publish("rf/t", b"%d" % index, 1, packet_id=index + 1))
        if index == 10:
            raw.send(Subscribe(50, [Subscription("rf/t", 1)]))
    payloads = [p.payload for p in _published(raw, 0.5)]
    assert payloads == [b"%d" % i for i in range(20)]


@pytest.mark.mqtt5("MQTT-3.8.4-5", "MQTT-3.8.4-6", "MQTT-3.9.3-1", "MQTT-3.9.3-2")
def test_several_filters_get_one_suback_with_a_code_each_in_order(
    broker_factory: Factory, raw_factory: Factory,
) -> None:
    running = broker_factory(allow_anonymous=False, plugins=[("acl", Acl())])
    raw = v5(raw_factory, "multi", port=running.port)
    raw.send(Subscribe(7, [Subscription("mu/a", 2), Subscription("secret/x", 1),
                           Subscription("$share/+bad/mu", 0), Subscription("mu/b", 1),
                           Subscription("mu/c", 0)]))
    suback = next_of(raw, SubAck)
    assert suback.packet_id == 7
    assert suback.reason_codes == [2, ReasonCode.NOT_AUTHORIZED,
                                   ReasonCode.TOPIC_FILTER_INVALID, 1, 0]
    assert set(suback.reason_codes) <= SUBACK_CODES
    quiet(raw)  # one SUBACK only
    publish(v5(raw_factory, "multi-pub", port=running.port), "mu/b", b"b", 1)
    assert expect_publish(raw).payload == b"b"


@pytest.mark.mqtt5("MQTT-3.8.4-7")
def test_the_reason_code_is_the_granted_qos_or_a_failure(broker_factory: Factory,
                                                         raw_factory: Factory) -> None:
    running = broker_factory(maximum_qos=1, allow_anonymous=False, plugins=[("acl", Acl())])
    raw = v5(raw_factory, "granted", port=running.port)
    raw.send(Subscribe(1, [Subscription("g/0", 0), Subscription("g/1", 1),
                           Subscription("g/2", 2), Subscription("secret/g", 2)]))
    assert next_of(raw, SubAck).reason_codes == [0, 1, 1, ReasonCode.NOT_AUTHORIZED]


@pytest.mark.mqtt5("MQTT-3.8.4-8")
@pytest.mark.parametrize(("granted", "published", "delivered"), [
    (0, 2, 0), (1, 2, 1), (2, 1, 1), (2, 0, 0), (1, 0, 0), (2, 2, 2)])
def test_messages_are_delivered_at_the_lower_qos(raw_factory: Factory, granted: int,
                                                published: int, delivered: int) -> None:
    raw = v5(raw_factory, "minqos")
    subscribe(raw, "mq/t", granted)
    publish(v5(raw_factory, "minqos-pub"), "mq/t", b"x", published)
    assert expect_publish(raw).qos == delivered


@pytest.mark.mqtt5("MQTT-3.9.2-1", "MQTT-3.9.2-2", "MQTT-3.11.2-1", "MQTT-3.11.2-2")
def test_suback_and_unsuback_carry_no_reason_string_for_a_small_client(
    broker_factory: Factory, raw_factory: Factory,
) -> None:
    running = broker_factory(allow_anonymous=False, plugins=[("acl", Acl())])
    raw = v5(raw_factory, "tiny-acks", port=running.port, maximum_packet_size=16)
    raw.send(Subscribe(1, [Subscription("secret/t", 0), Subscription("$share//x", 0)]))
    suback = next_of(raw, SubAck)
    assert suback.reason_codes == [ReasonCode.NOT_AUTHORIZED, ReasonCode.TOPIC_FILTER_INVALID]
    assert not suback.properties
    assert unsubscribe(raw, "never/held", packet_id=2) == [ReasonCode.NO_SUBSCRIPTION_EXISTED]


# -- UNSUBSCRIBE -----------------------------------------------------------------------------


@pytest.mark.mqtt5("MQTT-3.10.1-1", "MQTT-2.1.3-1")
@pytest.mark.parametrize("byte0", [0xA0, 0xA3, 0xA8])
def test_unsubscribe_with_wrong_fixed_header_flags_is_malformed(raw_factory: Factory,
                                                                byte0: int) -> None:
    raw = v5(raw_factory, "unsubflags")
    raw.send(frame(byte0, b"\x00\x01", props(), s("uf/t")))
    closed_with(raw, ReasonCode.MALFORMED_PACKET)


@pytest.mark.mqtt5("MQTT-3.10.3-2")
def test_unsubscribe_without_a_topic_filter_is_a_protocol_error(raw_factory: Factory) -> None:
    raw = v5(raw_factory, "unsubempty")
    raw.send(frame(0xA2, b"\x00\x01", props()))
    closed_with(raw, ReasonCode.PROTOCOL_ERROR)


@pytest.mark.mqtt5("MQTT-3.10.4-1", "MQTT-3.10.4-2")
def test_unsubscribe_deletes_only_the_exactly_matching_filter(raw_factory: Factory) -> None:
    raw = v5(raw_factory, "unsub-exact")
    subscribe(raw, "ux/+", 0)
    subscribe(raw, "ux/t", 1, packet_id=2)
    assert unsubscribe(raw, "ux/t", "ux/#", packet_id=3) == [
        ReasonCode.SUCCESS, ReasonCode.NO_SUBSCRIPTION_EXISTED]
    publish(v5(raw_factory, "unsub-exact-pub"), "ux/t", b"x", 1)
    assert [(p.payload, p.qos) for p in _published(raw)] == [(b"x", 0)]
    assert unsubscribe(raw, "ux/+", packet_id=4) == [ReasonCode.SUCCESS]
    publish(v5(raw_factory, "unsub-exact-pub2"), "ux/t", b"y", 1)
    quiet(raw)


@pytest.mark.mqtt5("MQTT-3.10.4-3")
def test_deliveries_started_before_unsubscribe_are_completed(raw_factory: Factory) -> None:
    raw = v5(raw_factory, "unsub-inflight")
    subscribe(raw, "ui/t", 2)
    publish(v5(raw_factory, "unsub-inflight-pub"), "ui/t", b"x", 2)
    delivery = expect_publish(raw, ack=False)
    assert unsubscribe(raw, "ui/t", packet_id=2) == [0]
    raw.send(PubRec(delivery.packet_id))
    assert next_of(raw, PubRel) == PubRel(delivery.packet_id)  # 0x00: the flow still exists


@pytest.mark.mqtt5("MQTT-3.10.4-4", "MQTT-3.10.4-5", "MQTT-3.10.4-6", "MQTT-3.11.3-1",
                   "MQTT-3.11.3-2", "MQTT-2.2.1-6")
def test_unsuback_has_the_packet_identifier_and_a_code_per_filter(raw_factory: Factory) -> None:
    raw = v5(raw_factory, "unsuback")
    subscribe(raw, "ua/1", 0)
    subscribe(raw, "ua/3", 0, packet_id=2)
    assert unsubscribe(raw, "ua/2", packet_id=300) == [ReasonCode.NO_SUBSCRIPTION_EXISTED]
    codes = unsubscribe(raw, "ua/1", "ua/2", "ua/3", "ua/1", packet_id=301)
    assert codes == [0, 0x11, 0, 0x11] and set(codes) <= UNSUBACK_CODES
    quiet(raw)
    raw.send(frame(0xA2, b"\x01\x2e", props(), s("ua/9")))
    assert next_of(raw, UnsubAck).packet_id == 302


# -- topic names and filters -----------------------------------------------------------------


@pytest.mark.mqtt5("MQTT-4.7.1-1", "MQTT-4.7.1-2", "MQTT-4.13.1-1")
@pytest.mark.parametrize("bad", ["a/#/b", "a#", "#/a", "a/b#", "a+/b", "a/+b", "++"])
def test_misplaced_wildcards_are_refused(raw_factory: Factory, bad: str) -> None:
    raw = v5(raw_factory, "badfilter")
    raw.send(Subscribe(1, [Subscription(bad, 0)]))
    answer = raw.packets_until_close()
    assert answer[-1].reason_code == ReasonCode.TOPIC_FILTER_INVALID, answer


@pytest.mark.mqtt5("MQTT-4.7.1-1", "MQTT-4.7.1-2", "MQTT-3.3.2-3")
def test_wildcards_match_whole_levels(raw_factory: Factory) -> None:
    raw = v5(raw_factory, "wildmatch")
    subscribe(raw, "sport/tennis/#", 0, sid=1)
    subscribe(raw, "+/+", 0, packet_id=2, sid=2)
    subscribe(raw, "+", 0, packet_id=3, sid=3)
    subscribe(raw, "x/+/z", 0, packet_id=4, sid=4)
    pub = v5(raw_factory, "wildmatch-pub")
    cases = {"sport/tennis": [1, 2], "sport/tennis/p1/r": [1], "sport": [3], "/x": [2],
             "x//z": [4], "x/y/z": [4], "x/y/z/w": []}
    for topic in cases:
        publish(pub, topic, topic.encode(), 0)
    got = {p.topic: sorted(p.properties.get(Property.SUBSCRIPTION_IDENTIFIER, []))
           for p in _published(raw)}
    assert got == {topic: ids for topic, ids in cases.items() if ids}


@pytest.mark.mqtt5("MQTT-4.7.2-1")
def test_leading_wildcards_do_not_match_dollar_topics(broker: Any,
                                                      raw_factory: Factory) -> None:
    wild = v5(raw_factory, "dollar-wild")
    subscribe(wild, "#", 0)
    subscribe(wild, "+/x", 0, packet_id=2)
    exact = v5(raw_factory, "dollar-exact")
    subscribe(exact, "$app/x", 0)
    subscribe(exact, "$app/#", 0, packet_id=2)

    async def send() -> None:
        await broker.broker.publish("$app/x", b"d")

    broker.call(send)
    assert [p.topic for p in _published(exact)] == ["$app/x"]
    quiet(wild)


@pytest.mark.mqtt5("MQTT-4.7.3-1")
def test_empty_topic_filters_and_names_are_refused(raw_factory: Factory) -> None:
    raw = v5(raw_factory, "empty-filter")
    raw.send(frame(0x82, b"\x00\x01", props(), s(""), b"\x00"))
    assert raw.packets_until_close()[-1].reason_code == ReasonCode.TOPIC_FILTER_INVALID
    name = v5(raw_factory, "empty-name")
    name.send(frame(0x30, s(""), b"\x00", b"x"))
    closed_with(name, ReasonCode.PROTOCOL_ERROR)


@pytest.mark.mqtt5("MQTT-4.7.3-3")
def test_a_topic_of_65535_bytes_is_routed(raw_factory: Factory) -> None:
    topic = "t" + "é" * 32767  # 65,535 bytes of UTF-8
    assert len(topic.encode()) == 65535
    raw = v5(raw_factory, "longtopic")
    subscribe(raw, topic, 0)
    publish(v5(raw_factory, "longtopic-pub"), topic, b"long", 0)
    assert expect_publish(raw).topic == topic


@pytest.mark.mqtt5("MQTT-4.7.3-4")
def test_matching_does_not_normalize_topics(raw_factory: Factory) -> None:
    raw = v5(raw_factory, "nonorm")
    subscribe(raw, "caf\u00e9/x", 0)  # precomposed
    subscribe(raw, "A/b", 0, packet_id=2)
    pub = v5(raw_factory, "nonorm-pub")
    for topic in ("cafe\u0301/x", "a/b", "A/b/", "A//b", " A/b", "A/b"):
        publish(pub, topic, b"x", 0)
    assert [p.topic for p in _published(raw)] == ["A/b"]


# -- shared subscriptions --------------------------------------------------------------------


@pytest.mark.mqtt5("MQTT-4.8.2-1", "MQTT-4.8.2-2")
@pytest.mark.parametrize("bad", ["$share//t", "$share/g", "$share/g/", "$share/g+/t",
                                 "$share/#/t"])
def test_malformed_shared_subscriptions_are_refused(raw_factory: Factory, bad: str) -> None:
    raw = v5(raw_factory, "badshare")
    assert subscribe(raw, bad, 0) == [ReasonCode.TOPIC_FILTER_INVALID]


@pytest.mark.mqtt5("MQTT-4.8.2-1", "MQTT-4.8.2-2")
def test_a_shared_subscription_gives_each_message_to_one_member(raw_factory: Factory) -> None:
    members = [v5(raw_factory, f"member{i}") for i in range(3)]
    for raw in members:
        assert subscribe(raw, "$share/grp/sh/#", 0) == [0]
    pub = v5(raw_factory, "share-pub")
    for index in range(9):
        publish(pub, "sh/t", b"%d" % index, 0)
    got = [[p.payload for p in _published(raw)] for raw in members]
    assert sorted(p for each in got for p in each) == sorted(b"%d" % i for i in range(9))
    assert all(got), got  # all three took part


@pytest.mark.mqtt5("MQTT-4.8.2-3")
def test_each_shared_member_gets_its_own_granted_qos(raw_factory: Factory) -> None:
    low = v5(raw_factory, "share-low")
    high = v5(raw_factory, "share-high")
    subscribe(low, "$share/q/sq/t", 0)
    subscribe(high, "$share/q/sq/t", 2)
    pub = v5(raw_factory, "share-qos-pub")
    for index in range(4):
        publish(pub, "sq/t", b"%d" % index, 1, packet_id=index + 1)
    assert {p.qos for p in _published(low)} == {0}
    assert {p.qos for p in _published(high)} == {1}


@pytest.mark.mqtt5("MQTT-4.8.2-4")
def test_a_shared_delivery_cut_off_is_completed_when_the_member_returns(
    raw_factory: Factory,
) -> None:
    member = v5(raw_factory, "share-back", expiry=300)
    subscribe(member, "$share/b/sb/t", 1)
    publish(v5(raw_factory, "share-back-pub"), "sb/t", b"x", 1)
    first = expect_publish(member, ack=False)
    member.close()
    back = v5(raw_factory, "share-back", clean=False, expiry=300)
    again = expect_publish(back, ack=False)
    assert (again.payload, again.packet_id, again.dup) == (b"x", first.packet_id, True)


@pytest.mark.mqtt5("MQTT-4.8.2-5")
def test_a_shared_delivery_whose_session_ended_goes_to_no_other_member(
    raw_factory: Factory,
) -> None:
    leaving = v5(raw_factory, "share-end")  # session expiry 0: ends with the connection
    subscribe(leaving, "$share/e/se/t", 1)
    publish(v5(raw_factory, "share-end-pub"), "se/t", b"x", 1)
    expect_publish(leaving, ack=False)
    other = v5(raw_factory, "share-end-other")
    subscribe(other, "$share/e/se/t", 1)
    leaving.close()
    quiet(other, 0.5)


@pytest.mark.mqtt5("MQTT-4.8.2-6")
def test_a_refused_shared_delivery_goes_to_no_other_member(raw_factory: Factory) -> None:
    first = v5(raw_factory, "share-refuse1")
    second = v5(raw_factory, "share-refuse2")
    subscribe(first, "$share/r/sr/t", 1)
    subscribe(second, "$share/r/sr/t", 1)
    publish(v5(raw_factory, "share-refuse-pub"), "sr/t", b"x", 1)
    # whoever got it refuses it
    got = None
    for raw in (first, second):
        try:
            packet = raw.recv(timeout=0.3)
        except AssertionError:
            continue
        assert isinstance(packet, Publish)
        raw.send(PubAck(packet.packet_id, ReasonCode.UNSPECIFIED_ERROR))
        got = raw
    assert got is not None
    quiet(first, 0.4)
    quiet(second, 0.1)


def test_no_retained_messages_on_a_shared_subscribe(raw_factory: Factory) -> None:
    publish(v5(raw_factory, "share-ret-pub"), "shr/t", b"kept", 1, retain=True)
    shared = v5(raw_factory, "share-ret")
    assert subscribe(shared, "$share/g/shr/#", 1) == [1]
    quiet(shared)
    publish(v5(raw_factory, "share-ret-pub2"), "shr/t", b"live", 1)
    assert expect_publish(shared).payload == b"live"
