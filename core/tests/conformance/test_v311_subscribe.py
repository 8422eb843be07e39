"""MQTT 3.1.1 conformance: SUBSCRIBE, SUBACK, UNSUBSCRIBE, UNSUBACK and topic matching
(sections 3.8 to 3.11, 4.7).

Over real loopback sockets against a real broker; each test names the normative
statements it checks with ``mqtt311``.
"""

from __future__ import annotations

import unicodedata
from typing import Any

import pytest

from midge import hookimpl
from midge.codec import (
    PubComp,
    Publish,
    PubRec,
    PubRel,
    SubAck,
    Subscribe,
    Subscription,
    UnsubAck,
    Unsubscribe,
)

try:
    from v311_helpers import (
        V31,
        V311,
        Factory,
        assert_rejected,
        expect,
        nothing,
        online,
        publish_qos,
        publishes,
        reconnect,
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
        expect,
        nothing,
        online,
        publish_qos,
        publishes,
        reconnect,
        subscribe,
        subscribe_bytes,
        unsubscribe_bytes,
    )

LEVELS = pytest.mark.parametrize("level", [V311, V31], ids=["3.1.1", "3.1"])


def unsubscribe(raw: Any, *filters: str, packet_id: int = 1) -> None:
    raw.send(Unsubscribe(packet_id, list(filters)))
    assert expect(raw, UnsubAck) == UnsubAck(packet_id)


def delivered_topics(raw_factory: Factory, filters: list[str], topics: list[str]) -> list[str]:
    """The topics of ``topics`` that a subscriber to ``filters`` receives (in order)."""
    sub = online(raw_factory, client_id="matcher")
    assert subscribe(sub, *((f, 0) for f in filters)) == [0] * len(filters)
    pub = online(raw_factory, client_id="matchpub")
    for topic in topics:
        pub.send(Publish(topic, b"m"))
    publish_qos(pub, "fence/matched/by/none/of/these", b"", 1)
    fence = online(raw_factory, client_id="fence")  # a later packet: all routed by now
    fence.close()
    got: list[str] = []
    for _ in range(len(topics) + 1):
        try:
            got.append(sub.recv(0.3).topic)  # type: ignore[union-attr]
        except AssertionError:
            break
    return got


# -- SUBSCRIBE ----------------------------------------------------------------------------


@pytest.mark.mqtt311("MQTT-3.8.4-1", "MQTT-3.8.4-2", "MQTT-2.3.1-7")
@LEVELS
def test_suback_carries_the_packet_id_of_its_subscribe(
    raw_factory: Factory, level: int
) -> None:
    raw = online(raw_factory, client_id="subid", level=level)
    for pid in (1, 0x1234, 0xFFFF):
        raw.send(Subscribe(pid, [Subscription("id/t", 1)]))
        assert raw.recv() == SubAck(pid, [1])


@pytest.mark.mqtt311("MQTT-3.8.3-3", "MQTT-4.8.0-1")
def test_a_subscribe_without_a_topic_filter_closes_the_connection(
    raw_factory: Factory
) -> None:
    raw = online(raw_factory, client_id="subempty")
    assert assert_rejected(raw, subscribe_bytes(packet_id=5)) == []


@pytest.mark.mqtt311("MQTT-3.8.3-4")
@pytest.mark.parametrize("options", [0x03, 0x04, 0x80, 0xFC, 0x41])
def test_requested_qos_byte_reserved_bits_and_qos_3_close(
    raw_factory: Factory, options: int
) -> None:
    raw = online(raw_factory, client_id="subbits")
    assert assert_rejected(raw, subscribe_bytes(("ok/t", 1), ("bits/t", options))) == []


@pytest.mark.mqtt311("MQTT-3.8.3-2")
def test_wildcard_filters_are_refused_when_wildcards_are_off(
    broker_factory: Factory, raw_factory: Factory
) -> None:
    running = broker_factory(wildcard_subscriptions=False)
    raw = online(raw_factory, running.port, client_id="nowild")
    assert subscribe(raw, ("a/+", 1), ("plain/t", 1), ("#", 0), ("x/#", 2)) == [
        0x80, 1, 0x80, 0x80]


@pytest.mark.mqtt311("MQTT-3.8.4-3")
def test_an_identical_filter_replaces_the_subscription(raw_factory: Factory) -> None:
    pub = online(raw_factory, client_id="reppub")
    publish_qos(pub, "rep/t", b"retained", 2, retain=True)
    sub = online(raw_factory, client_id="repsub")
    assert subscribe(sub, ("rep/t", 0)) == [0]
    assert publishes(sub, 1)[0].payload == b"retained"
    publish_qos(pub, "rep/t", b"before", 2)
    sub.send(Subscribe(2, [Subscription("rep/t", 2)]))  # the same filter, a new QoS
    publish_qos(pub, "rep/t", b"after", 2)
    assert expect(sub, Publish).payload == b"before"
    assert sub.recv() == SubAck(2, [2])
    got = publishes(sub, 2)
    # the retained message re-sent, the next one at the new QoS: the flow went on, and
    # the old subscription is not also there (no second copy at QoS 0)
    assert [(p.payload, p.qos, p.retain) for p in got] == [
        (b"retained", 2, True), (b"after", 2, False)]
    nothing(sub)


@pytest.mark.mqtt311("MQTT-3.8.4-4", "MQTT-3.8.4-5", "MQTT-3.9.3-1")
def test_several_filters_act_as_subscribes_in_sequence_with_one_suback(
    raw_factory: Factory
) -> None:
    sub = online(raw_factory, client_id="seqsub")
    assert subscribe(sub, ("seq/a", 0), ("seq/b", 1), ("seq/a", 2), ("seq/c", 1)) == [
        0, 1, 2, 1]
    nothing(sub, 0.2)  # one SUBACK only
    pub = online(raw_factory, client_id="seqpub")
    for topic in ("seq/a", "seq/b", "seq/c"):
        publish_qos(pub, topic, topic.encode(), 2)
    got = publishes(sub, 3)
    assert [(p.topic, p.qos) for p in got] == [("seq/a", 2), ("seq/b", 1), ("seq/c", 1)]
    nothing(sub)


@pytest.mark.mqtt311("MQTT-3.8.4-5")
def test_the_granted_qos_may_be_lower_than_requested(
    broker_factory: Factory, raw_factory: Factory
) -> None:
    running = broker_factory(maximum_qos=1)
    raw = online(raw_factory, running.port, client_id="lowgrant")
    assert subscribe(raw, ("g/2", 2), ("g/1", 1), ("g/0", 0)) == [1, 1, 0]


class RefuseSecret:
    """Lets every client in; refuses subscriptions to ``secret/...``."""

    @hookimpl
    def on_connect_authenticate(self, client: Any, packet: Any) -> bool:
        return True

    @hookimpl
    def on_acl_check(self, client: Any, topic: str, write: bool) -> bool:
        return not topic.startswith("secret/")


@pytest.mark.mqtt311("MQTT-3.9.3-1", "MQTT-3.9.3-2", "MQTT-3.8.4-5")
@LEVELS
def test_a_refused_subscription_gets_0x80_in_its_place(
    broker_factory: Factory, raw_factory: Factory, level: int
) -> None:
    running = broker_factory(allow_anonymous=False, plugins=[("r", RefuseSecret())])
    raw = online(raw_factory, running.port, client_id="refused", level=level)
    assert subscribe(raw, ("open/a", 2), ("secret/a", 1), ("open/b", 0), ("secret/#", 0)) == [
        2, 0x80, 0, 0x80]


# -- UNSUBSCRIBE --------------------------------------------------------------------------


@pytest.mark.mqtt311("MQTT-3.10.3-2", "MQTT-4.8.0-1")
def test_an_unsubscribe_without_a_topic_filter_closes_the_connection(
    raw_factory: Factory
) -> None:
    raw = online(raw_factory, client_id="unsempty")
    assert assert_rejected(raw, unsubscribe_bytes(packet_id=3)) == []


@pytest.mark.mqtt311("MQTT-3.10.4-4", "MQTT-3.10.4-5", "MQTT-2.3.1-7")
@LEVELS
def test_unsuback_carries_the_packet_id_even_when_nothing_was_removed(
    raw_factory: Factory, level: int
) -> None:
    raw = online(raw_factory, client_id="unsid", level=level)
    subscribe(raw, ("uns/t", 0))
    raw.send(Unsubscribe(0x4321, ["uns/t"]))
    assert raw.recv() == UnsubAck(0x4321)
    raw.send(Unsubscribe(0x4322, ["never/subscribed"]))
    assert raw.recv() == UnsubAck(0x4322)


@pytest.mark.mqtt311("MQTT-3.10.4-1")
def test_unsubscribe_filters_compare_character_by_character(raw_factory: Factory) -> None:
    sub = online(raw_factory, client_id="unscmp")
    subscribe(sub, ("cmp/+", 0), ("cmp/a", 1))
    # a filter that would match, another case, a wildcard over both: none is identical
    unsubscribe(sub, "cmp/#", "CMP/a", "cmp/A", "cmp/+/")
    pub = online(raw_factory, client_id="unscmppub")
    publish_qos(pub, "cmp/a", b"still", 1)
    [message] = publishes(sub, 1)
    assert (message.payload, message.qos) == (b"still", 1)
    unsubscribe(sub, "cmp/a", packet_id=2)  # identical: only that one goes
    publish_qos(pub, "cmp/a", b"via plus", 1)
    [message] = publishes(sub, 1)
    assert (message.payload, message.qos) == (b"via plus", 0)


@pytest.mark.mqtt311("MQTT-3.10.4-2", "MQTT-3.10.4-6")
def test_after_unsubscribe_no_new_messages_are_added(raw_factory: Factory) -> None:
    sub = online(raw_factory, client_id="unsstop")
    subscribe(sub, ("stop/a", 1), ("stop/b", 1), ("stop/c", 1))
    sub.send(Unsubscribe(9, ["stop/a", "stop/b"]))
    assert sub.recv() == UnsubAck(9)
    nothing(sub, 0.2)  # one UNSUBACK for both
    pub = online(raw_factory, client_id="unsstoppub")
    for topic in ("stop/a", "stop/b", "stop/c"):
        publish_qos(pub, topic, topic.encode(), 1)
    assert [p.topic for p in publishes(sub, 1)] == ["stop/c"]
    nothing(sub)


@pytest.mark.mqtt311("MQTT-3.10.4-3")
def test_a_qos_2_delivery_under_way_is_completed_after_unsubscribe(
    raw_factory: Factory
) -> None:
    sub = online(raw_factory, client_id="unsq2", clean=False)
    subscribe(sub, ("flow/q2", 2))
    pub = online(raw_factory, client_id="unsq2pub")
    publish_qos(pub, "flow/q2", b"under way", 2)
    delivery = expect(sub, Publish)
    unsubscribe(sub, "flow/q2", packet_id=2)
    sub.close()  # neither PUBREC nor PUBCOMP sent yet
    # the delivery is still the session's to complete: sent again, then released
    back = reconnect(raw_factory, "unsq2")
    again = expect(back, Publish)
    assert (again.packet_id, again.payload, again.dup) == (delivery.packet_id, b"under way", True)
    back.send(PubRec(delivery.packet_id))
    assert back.recv() == PubRel(delivery.packet_id)
    back.send(PubComp(delivery.packet_id))
    nothing(back)


@pytest.mark.mqtt311("MQTT-3.10.4-3")
def test_a_qos_1_delivery_under_way_is_still_resent_after_unsubscribe(
    raw_factory: Factory
) -> None:
    sub = online(raw_factory, client_id="unsq1", clean=False)
    subscribe(sub, ("flow/q1", 1))
    pub = online(raw_factory, client_id="unsq1pub")
    publish_qos(pub, "flow/q1", b"under way", 1)
    delivery = expect(sub, Publish)
    unsubscribe(sub, "flow/q1", packet_id=2)
    sub.close()  # never acknowledged
    back = reconnect(raw_factory, "unsq1")
    again = expect(back, Publish)
    assert (again.packet_id, again.payload, again.dup) == (delivery.packet_id, b"under way", True)


# -- topic filters and names (4.7) --------------------------------------------------------


@pytest.mark.mqtt311("MQTT-4.7.1-2", "MQTT-4.7.1-3", "MQTT-4.8.0-1")
@pytest.mark.parametrize("topic_filter", [
    "a/#/b", "a#", "#/a", "a/b#", "a+", "a/+b", "+a/b", "a/++", "#+",
])
def test_a_malformed_topic_filter_closes_the_connection(
    raw_factory: Factory, topic_filter: str
) -> None:
    raw = online(raw_factory, client_id="badfilter")
    assert assert_rejected(raw, subscribe_bytes((topic_filter, 0))) == []


@pytest.mark.mqtt311("MQTT-4.7.1-2")
def test_the_multi_level_wildcard_matches_the_parent_and_every_child(
    raw_factory: Factory
) -> None:
    topics = ["sport", "sport/tennis", "sport/tennis/player1", "sport/tennis/player1/x",
              "sports", "other/sport"]
    assert delivered_topics(raw_factory, ["sport/#"], topics) == topics[:4]


@pytest.mark.mqtt311("MQTT-4.7.1-2")
def test_a_lone_multi_level_wildcard_matches_every_topic(raw_factory: Factory) -> None:
    topics = ["a", "a/b", "/", "/a", "a/b/c/d/e"]
    got = delivered_topics(raw_factory, ["#"], topics)
    assert got[:len(topics)] == topics


@pytest.mark.mqtt311("MQTT-4.7.1-3")
def test_the_single_level_wildcard_matches_exactly_one_level(raw_factory: Factory) -> None:
    topics = ["sport/tennis/player1", "sport/tennis/player2", "sport/tennis/player1/ranking",
              "sport/", "sport", "/finance", "finance"]
    assert delivered_topics(raw_factory, ["sport/tennis/+"], topics) == topics[:2]
    assert delivered_topics(raw_factory, ["sport/+"], topics) == ["sport/"]
    assert delivered_topics(raw_factory, ["+/+"], topics) == ["sport/", "/finance"]
    assert delivered_topics(raw_factory, ["/+"], topics) == ["/finance"]
    assert delivered_topics(raw_factory, ["+"], topics) == ["sport", "finance"]


@pytest.mark.mqtt311("MQTT-4.7.2-1")
def test_leading_wildcards_do_not_match_dollar_topics(
    broker: Any, raw_factory: Factory
) -> None:
    broker.call(broker.broker.publish, "$ctl/retained", b"kept", 0, True)
    wild = online(raw_factory, client_id="wild")
    assert subscribe(wild, ("#", 1), ("+/live", 1), ("+/retained", 1)) == [1, 1, 1]
    dollar = online(raw_factory, client_id="dollar")
    assert subscribe(dollar, ("$ctl/#", 1)) == [1]
    [retained] = publishes(dollar, 1)
    assert (retained.topic, retained.retain) == ("$ctl/retained", True)
    broker.call(broker.broker.publish, "$ctl/live", b"now", 1)
    assert publishes(dollar, 1)[0].topic == "$ctl/live"
    nothing(wild)  # neither the retained nor the live $-message


@pytest.mark.mqtt311("MQTT-4.7.3-1", "MQTT-4.8.0-1")
@pytest.mark.parametrize("data", [
    pytest.param(b"\x30\x02\x00\x00", id="publish-empty-topic"),
    pytest.param(subscribe_bytes(("", 0)), id="subscribe-empty-filter"),
    pytest.param(unsubscribe_bytes(""), id="unsubscribe-empty-filter"),
])
def test_an_empty_topic_name_or_filter_closes_the_connection(
    raw_factory: Factory, data: bytes
) -> None:
    raw = online(raw_factory, client_id="empty")
    assert assert_rejected(raw, data) == []


@pytest.mark.mqtt311("MQTT-4.7.3-4", "MQTT-1.5.3-3")
def test_topics_are_matched_without_normalization(raw_factory: Factory) -> None:
    nfc = unicodedata.normalize("NFC", "caf\u00e9")
    nfd = unicodedata.normalize("NFD", nfc)
    assert nfc != nfd
    topics = [nfd, "ACCOUNTS", "\ufeffAccounts", "Accounts payable", nfc, "Accounts"]
    assert delivered_topics(raw_factory, [nfc, "Accounts"], topics) == [nfc, "Accounts"]
    assert delivered_topics(raw_factory, ["\ufeffAccounts"], topics) == ["\ufeffAccounts"]
