"""The engine's PUBLISH, acknowledgement, subscription, will and expiry flows, without sockets.

Every exchange is bytes in, bytes out; time moves only with ``harness.tick``.
"""

from __future__ import annotations

from engine_harness import Harness

from midge.codec import (
    PROTOCOL_5,
    PROTOCOL_311,
    ConnAck,
    Connect,
    Disconnect,
    Property,
    PubAck,
    PubComp,
    Publish,
    PubRec,
    PubRel,
    ReasonCode,
    Subscription,
    Will,
)
from midge.session import Outbound

PERSISTENT = {Property.SESSION_EXPIRY_INTERVAL: 3600}


def test_qos0_is_delivered_at_once() -> None:
    harness = Harness()
    sub = harness.client("sub")
    assert sub.subscribe("t/#", qos=0) == [0]
    pub = harness.client("pub")
    pub.send(Publish("t/a", b"x"))
    got = sub.expect(Publish)
    assert (got.topic, got.payload, got.qos) == ("t/a", b"x", 0)
    assert pub.received() == []


def test_qos1_both_ways_with_separate_packet_id_spaces() -> None:
    harness = Harness()
    sub = harness.client("sub")
    sub.subscribe("t", qos=1)
    pub = harness.client("pub")
    pub.send(Publish("t", b"1", qos=1, packet_id=77))
    assert pub.expect(PubAck).packet_id == 77
    got = sub.expect(Publish)
    assert got.qos == 1 and got.packet_id == 1  # the broker's own id space
    sub.send(PubAck(got.packet_id))
    assert harness.engine.sessions["sub"].inflight == {}


def test_qos2_inbound_is_routed_once_and_released_by_pubrel() -> None:
    harness = Harness()
    sub = harness.client("sub")
    sub.subscribe("t", qos=2)
    pub = harness.client("pub")
    pub.send(Publish("t", b"once", qos=2, packet_id=5))
    assert pub.expect(PubRec).reason_code == 0
    pub.send(Publish("t", b"once", qos=2, packet_id=5, dup=True))  # a resend
    assert pub.expect(PubRec).packet_id == 5
    assert [p.payload for p in sub.received() if isinstance(p, Publish)] == [b"once"]
    pub.send(PubRel(5))
    assert pub.expect(PubComp).reason_code == 0
    pub.send(PubRel(5))  # released already
    assert pub.expect(PubComp).reason_code == ReasonCode.PACKET_IDENTIFIER_NOT_FOUND


def test_qos2_outbound_phases_and_acks_in_the_wrong_phase() -> None:
    harness = Harness()
    sub = harness.client("sub")
    sub.subscribe("t", qos=2)
    harness.client("pub").send(Publish("t", b"x", qos=2, packet_id=1))
    got = sub.expect(Publish)
    sub.send(PubComp(got.packet_id))  # PUBCOMP before PUBREC: nothing completes
    assert got.packet_id in harness.engine.sessions["sub"].inflight
    sub.send(PubRec(got.packet_id))
    assert sub.expect(PubRel).reason_code == 0
    sub.send(PubRec(999))  # unknown id
    assert sub.expect(PubRel).reason_code == ReasonCode.PACKET_IDENTIFIER_NOT_FOUND
    sub.send(PubComp(got.packet_id))
    assert harness.engine.sessions["sub"].inflight == {}


def test_puback_frees_the_window_and_the_next_queued_message_goes_out() -> None:
    harness = Harness(max_inflight_messages=2)
    sub = harness.client("sub")
    sub.subscribe("t", qos=1)
    pub = harness.client("pub")
    for n in range(4):
        pub.send(Publish("t", str(n).encode(), qos=1, packet_id=n + 1))
    first = [p for p in sub.received() if isinstance(p, Publish)]
    assert [p.payload for p in first] == [b"0", b"1"]  # the window is 2
    session = harness.engine.sessions["sub"]
    assert len(session.pending) == 2
    sub.send(PubAck(999))  # frees nothing
    assert sub.received() == [] and len(session.pending) == 2
    sub.send(PubAck(first[0].packet_id))
    assert [p.payload for p in sub.received()] == [b"2"]
    sub.send(PubAck(first[1].packet_id))
    assert [p.payload for p in sub.received()] == [b"3"]


def test_default_window_is_100_lowered_by_a_v5_receive_maximum() -> None:
    # the window refills once per loop turn, so it is larger than Mosquitto's 20 (a busy
    # broker held a healthy QoS 1 subscriber far below its publishers' rate with 20)
    harness = Harness()
    v3 = harness.client("v3", level=4)
    v3.subscribe("t", qos=1)
    v5 = harness.client("v5", properties={Property.RECEIVE_MAXIMUM: 10})
    v5.subscribe("t", qos=1)
    pub = harness.client("pub")
    pub.send(*(Publish("t", b"m", qos=1, packet_id=n + 1) for n in range(150)))
    assert len([p for p in v3.received() if isinstance(p, Publish)]) == 100
    assert len(harness.engine.sessions["v3"].pending) == 50
    assert len([p for p in v5.received() if isinstance(p, Publish)]) == 10
    assert len(harness.engine.sessions["v5"].pending) == 140


def test_pubcomp_frees_the_window_for_qos2() -> None:
    harness = Harness(max_inflight_messages=1)
    sub = harness.client("sub")
    sub.subscribe("t", qos=2)
    pub = harness.client("pub")
    pub.send(Publish("t", b"a", qos=2, packet_id=1), Publish("t", b"b", qos=2, packet_id=2))
    got = sub.expect(Publish)
    sub.send(PubRec(got.packet_id))
    assert sub.expect(PubRel).packet_id == got.packet_id  # still in flight: no "b" yet
    sub.send(PubComp(got.packet_id))
    assert sub.expect(Publish).payload == b"b"


def test_packet_ids_wrap_around_and_skip_ids_in_flight() -> None:
    harness = Harness(max_inflight_messages=0)
    sub = harness.client("sub")
    sub.subscribe("t", qos=1)
    session = harness.engine.sessions["sub"]
    # id 2 is still in flight from long ago; the allocator is about to wrap
    session.inflight[2] = Outbound(session.inflight.get(2) or _dummy(), 1, False)
    session._next_id = 65535
    pub = harness.client("pub")
    for n in range(3):
        pub.send(Publish("t", b"x", qos=1, packet_id=n + 1))
    ids = [p.packet_id for p in sub.received() if isinstance(p, Publish)]
    assert ids == [65535, 1, 3]


def _dummy() -> object:
    from midge.message import Message

    return Message("old", b"")


def test_overlapping_subscriptions_deliver_once_at_the_highest_qos() -> None:
    harness = Harness()
    sub = harness.client("sub")
    sub.subscribe("a/+", qos=0)
    sub.subscribe("a/#", qos=1, packet_id=2)
    harness.client("pub").send(Publish("a/b", b"x", qos=1, packet_id=1))
    got = [p for p in sub.received() if isinstance(p, Publish)]
    assert len(got) == 1 and got[0].qos == 1


def test_no_local_and_retain_as_published_and_identifiers_on_delivery() -> None:
    harness = Harness()
    me = harness.client("me")
    me.subscribe(Subscription("t", 1, no_local=True))
    other = harness.client("other")
    other.subscribe(Subscription("t", 1, retain_as_published=True), packet_id=3,
                    properties={Property.SUBSCRIPTION_IDENTIFIER: [42]})
    me.send(Publish("t", b"r", qos=1, retain=True, packet_id=1))
    assert [type(p) for p in me.received()] == [PubAck]  # not its own message
    got = other.expect(Publish)
    assert got.retain is True
    assert got.properties[Property.SUBSCRIPTION_IDENTIFIER] == [42]


def test_topic_aliases_both_ways() -> None:
    harness = Harness(topic_alias_maximum=2)
    sub = harness.client("sub", properties={Property.TOPIC_ALIAS_MAXIMUM: 5})
    sub.subscribe("long/topic/name", qos=0)
    pub = harness.client("pub")
    pub.send(Publish("long/topic/name", b"1", properties={Property.TOPIC_ALIAS: 1}))
    pub.send(Publish("", b"2", properties={Property.TOPIC_ALIAS: 1}))
    first, second = sub.received()
    assert isinstance(first, Publish) and isinstance(second, Publish)
    assert first.topic == "long/topic/name" and first.properties[Property.TOPIC_ALIAS] == 1
    assert second.topic == "" and second.properties[Property.TOPIC_ALIAS] == 1
    pub.send(Publish("x", b"3", properties={Property.TOPIC_ALIAS: 3}))  # above the maximum
    assert pub.expect(Disconnect).reason_code == ReasonCode.TOPIC_ALIAS_INVALID


def test_shared_subscriptions_take_turns() -> None:
    harness = Harness()
    workers = [harness.client(f"w{n}") for n in range(3)]
    for worker in workers:
        worker.subscribe("$share/g/jobs", qos=0)
    pub = harness.client("pub")
    for n in range(6):
        pub.send(Publish("jobs", str(n).encode()))
    counts = [len(worker.received()) for worker in workers]
    assert counts == [2, 2, 2]


def test_retained_messages_on_subscribe_and_cleared_by_an_empty_payload() -> None:
    harness = Harness()
    pub = harness.client("pub")
    for n in range(1500):
        pub.send(Publish(f"r/{n}", b"v", retain=True))
    pub.send(Publish("r/0", b"", retain=True))
    sub = harness.client("sub")
    sub.subscribe("r/#", qos=0)
    assert len(sub.received()) == 1499


def test_will_on_abnormal_close_only() -> None:
    harness = Harness()
    watcher = harness.client("watcher")
    watcher.subscribe("wills/#", qos=0)
    polite = harness.client("polite", will=Will("wills/polite", b"bye"))
    polite.send(Disconnect())
    rude = harness.client("rude", will=Will("wills/rude", b"gone"))
    rude.conn.transport_lost("reset")
    assert [p.topic for p in watcher.received()] == ["wills/rude"]


def test_will_delay_to_the_second_and_cancelled_by_a_reconnect() -> None:
    harness = Harness()
    watcher = harness.client("watcher")
    watcher.subscribe("wills/#", qos=0)
    will = Will("wills/late", b"late", properties={Property.WILL_DELAY_INTERVAL: 10})
    harness.client("late", will=will, clean_start=False,
                   properties=PERSISTENT).conn.transport_lost("")
    harness.tick(9.9)
    assert watcher.received() == []
    harness.tick(0.2)
    assert [p.topic for p in watcher.received()] == ["wills/late"]
    harness.client("back", will=Will("wills/back", b"b",
                                     properties={Property.WILL_DELAY_INTERVAL: 10}),
                   clean_start=False, properties=PERSISTENT).conn.transport_lost("")
    harness.tick(5)
    harness.client("back", clean_start=False, properties=PERSISTENT)
    harness.tick(20)
    assert watcher.received() == []


def test_session_expiry_by_tick() -> None:
    harness = Harness()
    peer = harness.client("s", clean_start=False,
                          properties={Property.SESSION_EXPIRY_INTERVAL: 30})
    peer.subscribe("keep", qos=1)
    peer.conn.transport_lost("")
    harness.tick(29.9)
    assert "s" in harness.engine.sessions
    harness.tick(0.2)
    assert "s" not in harness.engine.sessions
    assert len(harness.engine.router.subscriptions) == 0


def test_queued_messages_wait_for_an_offline_session_and_resend_with_dup() -> None:
    harness = Harness()
    sub = harness.client("s", level=PROTOCOL_311, clean_start=False)
    sub.subscribe("q", qos=1)
    pub = harness.client("pub")
    pub.send(Publish("q", b"inflight", qos=1, packet_id=1))
    assert sub.expect(Publish).payload == b"inflight"  # sent, never acknowledged
    sub.conn.transport_lost("")
    pub.send(Publish("q", b"queued", qos=1, packet_id=2))
    back = harness.open(level=PROTOCOL_311)
    back.send(Connect("s", PROTOCOL_311, clean_start=False))
    packets = back.received()
    assert isinstance(packets[0], ConnAck) and packets[0].session_present
    publishes = [p for p in packets if isinstance(p, Publish)]
    assert [(p.payload, p.dup) for p in publishes] == [(b"inflight", True), (b"queued", False)]


def test_message_expiry_is_counted_down_by_the_engine_clock() -> None:
    harness = Harness()
    sub = harness.client("s", clean_start=False, properties=PERSISTENT)
    sub.subscribe("e", qos=1)
    sub.conn.transport_lost("")
    pub = harness.client("pub")
    pub.send(Publish("e", b"x", qos=1, packet_id=1,
                     properties={Property.MESSAGE_EXPIRY_INTERVAL: 10}))
    harness.tick(4)
    back = harness.open()
    back.send(Connect("s", PROTOCOL_5, clean_start=False, properties=PERSISTENT))
    got = [p for p in back.received() if isinstance(p, Publish)]
    assert got[0].properties[Property.MESSAGE_EXPIRY_INTERVAL] == 6
