"""Subscription and message hooks over real sockets: on_acl_check, on_subscribe,
on_subscribed, on_unsubscribe, on_unsubscribed, on_select_subscribers, on_publish,
on_published, on_publish_dropped, on_retain_message, on_retain_published, on_qos_publish,
on_qos_complete, on_qos_dropped and on_packet_id_exhausted."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import anyio
import pytest
from conftest import Events

from midge import Message, RejectPublish, Route, hookimpl
from midge.codec import (
    ConnAck,
    PingReq,
    PingResp,
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
    UnsubAck,
    Unsubscribe,
)

Factory = Callable[..., Any]
LEVELS = pytest.mark.parametrize("level", [4, 5], ids=["v311", "v5"])


def _connect(raw_factory: Factory, port: int, cid: str, level: int = 4, **kwargs: Any) -> Any:
    raw = raw_factory(port=port, level=level)
    connack = raw.connect(cid, level, **kwargs)
    assert isinstance(connack, ConnAck) and connack.reason_code == 0, connack
    return raw




# -- on_acl_check --------------------------------------------------------------------------


class Acl:
    """Nobody writes to secret/#; nobody reads secret/# or hidden/t (writing it is fine)."""

    def __init__(self, events: Events) -> None:
        self.events = events

    @hookimpl
    def on_acl_check(self, client: Any, topic: str, write: bool) -> bool | None:
        self.events.add("on_acl_check", client.client_id, topic, write)
        if topic.startswith("secret/") or (topic == "hidden/t" and not write):
            return False
        return None  # abstain: the listener's anonymous access decides


@pytest.mark.parametrize(("level", "code"), [(5, 0x87), (4, 0)], ids=["v5", "v311"])
def test_on_acl_check_denial_blocks_a_publish(
    broker_factory: Factory, raw_factory: Factory, level: int, code: int
) -> None:
    events = Events()
    running = broker_factory(plugins=[("acl", Acl(events))])
    watcher = _connect(raw_factory, running.port, "watcher")
    watcher.subscribe("#", 1)
    raw = _connect(raw_factory, running.port, "writer", level)
    raw.send(Publish("secret/x", b"no", 1, packet_id=1))
    assert raw.recv() == PubAck(1, code)  # v3 still gets its PUBACK
    raw.send(Publish("secret/y", b"no", 2, packet_id=2))
    assert raw.recv() == PubRec(2, code)
    raw.send(Publish("open/x", b"yes", 1, packet_id=3))
    assert raw.recv().packet_id == 3
    delivered = watcher.recv()
    assert isinstance(delivered, Publish) and delivered.topic == "open/x"
    assert ("writer", "secret/x", True) in events.of("on_acl_check")


@pytest.mark.parametrize(("level", "code"), [(5, 0x87), (4, 0x80)], ids=["v5", "v311"])
def test_on_acl_check_denial_refuses_a_subscription(
    broker_factory: Factory, raw_factory: Factory, level: int, code: int
) -> None:
    events = Events()
    running = broker_factory(plugins=[("acl", Acl(events))])
    raw = _connect(raw_factory, running.port, "reader", level)
    raw.send(Subscribe(1, [Subscription("secret/#", 1), Subscription("open/#", 1)]))
    assert raw.recv() == SubAck(1, [code, 1])
    assert ("reader", "secret/#", False) in events.of("on_acl_check")


@pytest.mark.parametrize("qos", [0, 1])
def test_on_acl_check_denial_blocks_delivery(
    broker_factory: Factory, raw_factory: Factory, qos: int
) -> None:
    events = Events()

    class Dropped:
        @hookimpl
        def on_publish_dropped(self, client: Any, message: Message, reason: str) -> None:
            events.add("on_publish_dropped", client.client_id, message.topic, reason)

    running = broker_factory(plugins=[("acl", Acl(events)), ("d", Dropped())])
    reader = _connect(raw_factory, running.port, "reader")
    reader.subscribe("hidden/#", qos)  # the filter is allowed, the topic is not
    writer = _connect(raw_factory, running.port, "writer")
    writer.send(Publish("hidden/t", b"no", qos, packet_id=qos))
    writer.send(Publish("hidden/u", b"yes", qos, packet_id=2 * qos))
    delivered = reader.recv()
    assert isinstance(delivered, Publish) and delivered.topic == "hidden/u"
    assert events.wait("on_publish_dropped") == [("reader", "hidden/t", "not authorized")]
    assert ("reader", "hidden/t", False) in events.of("on_acl_check")


# -- subscribe and unsubscribe -------------------------------------------------------------


class SubWatch:
    """Caps subscriptions at QoS 1; turns an unsubscribe of swap/a into swap/b."""

    def __init__(self, events: Events) -> None:
        self.events = events

    @hookimpl
    def on_subscribe(self, client: Any, packet: Subscribe) -> Subscribe:
        self.events.add("on_subscribe", client.client_id, packet)
        subs = [dataclasses.replace(s, qos=min(s.qos, 1)) for s in packet.subscriptions]
        return dataclasses.replace(packet, subscriptions=subs)

    @hookimpl
    def on_subscribed(self, client: Any, packet: Subscribe, reason_codes: list[int]) -> None:
        self.events.add("on_subscribed", client.client_id, packet, list(reason_codes))

    @hookimpl
    def on_unsubscribe(self, client: Any, packet: Unsubscribe) -> Unsubscribe | None:
        self.events.add("on_unsubscribe", client.client_id, packet)
        if packet.topic_filters == ["swap/a"]:
            return dataclasses.replace(packet, topic_filters=["swap/b"])
        return None

    @hookimpl
    def on_unsubscribed(self, client: Any, packet: Unsubscribe) -> None:
        self.events.add("on_unsubscribed", client.client_id, packet)


def test_on_subscribe_can_change_the_subscription_and_on_subscribed_sees_the_codes(
    broker_factory: Factory, raw_factory: Factory
) -> None:
    events = Events()
    running = broker_factory(plugins=[("s", SubWatch(events))])
    raw = _connect(raw_factory, running.port, "sub", 5)
    raw.send(Subscribe(4, [Subscription("q/#", 2)]))
    assert raw.recv() == SubAck(4, [1])  # granted what the plugin made of it
    [(cid, packet)] = events.wait("on_subscribe")
    assert cid == "sub" and packet.subscriptions == [Subscription("q/#", 2)]
    [(cid, applied, codes)] = events.wait("on_subscribed")
    assert cid == "sub" and applied.subscriptions == [Subscription("q/#", 1)]
    assert codes == [1]


def test_on_unsubscribe_can_change_the_filters_and_on_unsubscribed_sees_them(
    broker_factory: Factory, raw_factory: Factory
) -> None:
    events = Events()
    running = broker_factory(plugins=[("s", SubWatch(events))])
    raw = _connect(raw_factory, running.port, "unsub")
    raw.subscribe("swap/a", 0, 1)
    raw.subscribe("swap/b", 0, 2)
    raw.send(Unsubscribe(3, ["swap/a"]))
    assert raw.recv() == UnsubAck(3)
    [(cid, packet)] = events.wait("on_unsubscribe")
    assert cid == "unsub" and packet.topic_filters == ["swap/a"]
    [(cid, removed)] = events.wait("on_unsubscribed")
    assert cid == "unsub" and removed.topic_filters == ["swap/b"]
    raw.send(Publish("swap/b", b"gone", 0))
    raw.send(Publish("swap/a", b"kept", 0))
    delivered = raw.recv()
    assert isinstance(delivered, Publish) and delivered.topic == "swap/a"


def test_on_select_subscribers_can_drop_a_recipient(
    broker_factory: Factory, raw_factory: Factory
) -> None:
    events = Events()

    class NotVictim:
        @hookimpl
        def on_select_subscribers(self, message: Message, subscribers: list[Route]) -> list[Route]:
            self.seen = sorted(route.client_id for route in subscribers)
            events.add("on_select_subscribers", message.topic, message.payload, self.seen)
            return [route for route in subscribers if route.client_id != "victim"]

    running = broker_factory(plugins=[("sel", NotVictim())])
    victim = _connect(raw_factory, running.port, "victim")
    victim.subscribe("news/#", 0)
    reader = _connect(raw_factory, running.port, "reader")
    reader.subscribe("news/#", 0)
    writer = _connect(raw_factory, running.port, "writer")
    writer.send(Publish("news/1", b"hello", 0))
    delivered = reader.recv()
    assert isinstance(delivered, Publish) and delivered.payload == b"hello"
    assert events.wait("on_select_subscribers") == [("news/1", b"hello", ["reader", "victim"])]
    victim.send(PingReq())
    assert victim.recv() == PingResp()  # and no PUBLISH before it


# -- publish -------------------------------------------------------------------------------


class Censor:
    """Upper-cases payloads, rejects topics under banned/, records what it sees."""

    def __init__(self, events: Events) -> None:
        self.events = events

    @hookimpl
    def on_publish(self, client: Any, packet: Publish) -> Publish:
        self.events.add("on_publish", client.client_id, packet)
        if packet.topic.startswith("banned/"):
            raise RejectPublish(ReasonCode.TOPIC_NAME_INVALID)
        return dataclasses.replace(packet, payload=packet.payload.upper())

    @hookimpl
    def on_published(self, client: Any, packet: Publish) -> None:
        self.events.add("on_published", client.client_id, packet)


def test_on_publish_can_change_the_payload_and_on_published_sees_the_result(
    broker_factory: Factory, raw_factory: Factory
) -> None:
    events = Events()
    running = broker_factory(plugins=[("c", Censor(events))])
    reader = _connect(raw_factory, running.port, "reader")
    reader.subscribe("c/#", 1)
    writer = _connect(raw_factory, running.port, "writer")
    writer.send(Publish("c/t", b"shout", 1, packet_id=5))
    assert writer.recv() == PubAck(5)
    delivered = reader.recv()
    assert isinstance(delivered, Publish) and delivered.payload == b"SHOUT"
    [(cid, packet)] = events.wait("on_publish")
    assert cid == "writer" and (packet.topic, packet.payload) == ("c/t", b"shout")
    [(cid, routed)] = events.wait("on_published")
    assert cid == "writer" and routed.payload == b"SHOUT"


@pytest.mark.parametrize(("level", "code"), [(5, 0x90), (4, 0)], ids=["v5", "v311"])
def test_reject_publish_still_acknowledges_with_the_code(
    broker_factory: Factory, raw_factory: Factory, level: int, code: int
) -> None:
    events = Events()
    running = broker_factory(plugins=[("c", Censor(events))])
    reader = _connect(raw_factory, running.port, "reader")
    reader.subscribe("#", 1)
    writer = _connect(raw_factory, running.port, "writer", level)
    writer.send(Publish("banned/t", b"x", 1, packet_id=1))
    assert writer.recv() == PubAck(1, code)
    writer.send(Publish("banned/t", b"x", 2, packet_id=2))
    assert writer.recv() == PubRec(2, code)
    reader.send(PingReq())
    assert reader.recv() == PingResp()  # nothing was routed
    assert events.of("on_published") == []


def test_async_on_publish_is_awaited_before_puback(
    broker_factory: Factory, raw_factory: Factory
) -> None:
    events = Events()

    class Durable:
        @hookimpl
        async def on_publish(self, client: Any, packet: Publish) -> Publish:
            await anyio.sleep(0.2)
            events.add("stored", packet.packet_id)
            if packet.topic == "refused":
                raise RejectPublish(ReasonCode.QUOTA_EXCEEDED)
            return dataclasses.replace(packet, payload=b"async " + packet.payload)

    running = broker_factory(plugins=[("d", Durable())])
    reader = _connect(raw_factory, running.port, "reader")
    reader.subscribe("a/#", 1)
    writer = _connect(raw_factory, running.port, "writer", 5)
    writer.send(Publish("a/t", b"msg", 1, packet_id=9))
    assert writer.recv() == PubAck(9)
    assert events.of("stored") == [(9,)]  # awaited before the PUBACK was sent
    delivered = reader.recv()
    assert isinstance(delivered, Publish) and delivered.payload == b"async msg"
    writer.send(Publish("refused", b"x", 1, packet_id=10))
    assert writer.recv() == PubAck(10, ReasonCode.QUOTA_EXCEEDED)


def test_on_publish_dropped_when_a_session_queue_is_full(
    broker_factory: Factory, raw_factory: Factory
) -> None:
    events = Events()

    class Dropped:
        @hookimpl
        def on_publish_dropped(self, client: Any, message: Message, reason: str) -> None:
            events.add("on_publish_dropped", client, message.payload, reason)

    running = broker_factory(plugins=[("d", Dropped())], max_queued_messages=1)
    away = _connect(raw_factory, running.port, "away", clean_start=False)
    away.subscribe("q/#", 1)
    away.close()
    writer = _connect(raw_factory, running.port, "writer")
    deadline_packets = [Publish("q/t", f"m{i}".encode(), 1, packet_id=i + 1) for i in range(2)]
    for packet in deadline_packets:
        writer.send(packet)
        assert writer.recv() == PubAck(packet.packet_id)
    [(client, payload, reason)] = events.wait("on_publish_dropped")
    assert client is None and payload == b"m1" and reason == "session queue full"


# -- retained messages ---------------------------------------------------------------------


class RetainWatch:
    def __init__(self, events: Events) -> None:
        self.events = events

    @hookimpl
    def on_retain_message(self, client: Any, message: Message, stored: bool) -> None:
        self.events.add("on_retain_message", client.client_id if client else None,
                        message.topic, message.payload, stored)

    @hookimpl
    def on_retain_published(self, client: Any, message: Message) -> None:
        self.events.add("on_retain_published", client.client_id, message.topic)


def test_on_retain_message_fires_when_set_and_cleared(
    broker_factory: Factory, raw_factory: Factory
) -> None:
    events = Events()
    running = broker_factory(plugins=[("r", RetainWatch(events))])
    writer = _connect(raw_factory, running.port, "writer")
    writer.send(Publish("r/t", b"kept", 1, True, packet_id=1))
    assert writer.recv() == PubAck(1)
    writer.send(Publish("r/t", b"", 1, True, packet_id=2))
    assert writer.recv() == PubAck(2)
    writer.send(Publish("r/u", b"not retained", 1, False, packet_id=3))
    assert writer.recv() == PubAck(3)
    assert events.wait("on_retain_message", count=2) == [
        ("writer", "r/t", b"kept", True), ("writer", "r/t", b"", False)]


def test_on_retain_published_fires_when_a_subscriber_gets_a_retained_message(
    broker_factory: Factory, raw_factory: Factory
) -> None:
    events = Events()
    running = broker_factory(plugins=[("r", RetainWatch(events))])
    writer = _connect(raw_factory, running.port, "writer")
    writer.send(Publish("r/t", b"kept", 1, True, packet_id=1))
    assert writer.recv() == PubAck(1)
    reader = _connect(raw_factory, running.port, "reader")
    reader.subscribe("r/#", 1)
    delivered = reader.recv()
    assert isinstance(delivered, Publish) and delivered.retain
    assert events.wait("on_retain_published") == [("reader", "r/t")]


# -- QoS flows -----------------------------------------------------------------------------


class QosWatch:
    def __init__(self, events: Events) -> None:
        self.events = events

    @hookimpl
    def on_qos_publish(self, client: Any, message: Message, packet_id: int, dup: bool) -> None:
        self.events.add("on_qos_publish", client.client_id, message.topic, packet_id, dup)

    @hookimpl
    def on_qos_complete(self, client: Any, packet_id: int) -> None:
        self.events.add("on_qos_complete", client.client_id, packet_id)

    @hookimpl
    def on_qos_dropped(self, client: Any, packet_id: int, reason: str) -> None:
        self.events.add("on_qos_dropped", client.client_id, packet_id, reason)


def test_qos_hooks_follow_a_qos1_delivery_and_its_resend(
    broker_factory: Factory, raw_factory: Factory
) -> None:
    events = Events()
    running = broker_factory(plugins=[("q", QosWatch(events))])
    reader = _connect(raw_factory, running.port, "reader", clean_start=False)
    reader.subscribe("q/#", 1)
    writer = _connect(raw_factory, running.port, "writer")
    writer.send(Publish("q/t", b"x", 1, packet_id=1))
    first = reader.recv()
    assert isinstance(first, Publish) and not first.dup
    reader.close()  # without PUBACK
    again = _connect(raw_factory, running.port, "reader", clean_start=False)
    resent = again.recv()
    assert isinstance(resent, Publish) and resent.dup
    again.send(PubAck(resent.packet_id))
    assert events.wait("on_qos_publish", count=2) == [
        ("reader", "q/t", first.packet_id, False), ("reader", "q/t", first.packet_id, True)]
    assert events.wait("on_qos_complete") == [("reader", first.packet_id)]


def test_on_qos_complete_after_pubcomp(broker_factory: Factory, raw_factory: Factory) -> None:
    events = Events()
    running = broker_factory(plugins=[("q", QosWatch(events))])
    reader = _connect(raw_factory, running.port, "reader")
    reader.subscribe("q/#", 2)
    writer = _connect(raw_factory, running.port, "writer")
    writer.send(Publish("q/t", b"x", 2, packet_id=1))
    delivered = reader.recv()
    assert isinstance(delivered, Publish) and delivered.qos == 2
    reader.send(PubRec(delivered.packet_id))
    assert reader.recv() == PubRel(delivered.packet_id)
    assert events.of("on_qos_complete") == []
    reader.send(PubComp(delivered.packet_id))
    assert events.wait("on_qos_complete") == [("reader", delivered.packet_id)]


def test_on_qos_dropped_when_the_client_refuses_with_pubrec(
    broker_factory: Factory, raw_factory: Factory
) -> None:
    events = Events()
    running = broker_factory(plugins=[("q", QosWatch(events))])
    reader = _connect(raw_factory, running.port, "reader", 5)
    reader.subscribe("q/#", 2)
    writer = _connect(raw_factory, running.port, "writer")
    writer.send(Publish("q/t", b"x", 2, packet_id=1))
    delivered = reader.recv()
    assert isinstance(delivered, Publish)
    reader.send(PubRec(delivered.packet_id, 0x80))
    assert events.wait("on_qos_dropped") == [("reader", delivered.packet_id, "PUBREC 0x80")]
    assert events.of("on_qos_complete") == []


def test_on_packet_id_exhausted_when_every_packet_id_is_inflight(
    broker_factory: Factory, raw_factory: Factory
) -> None:
    events = Events()

    class Exhausted:
        @hookimpl
        def on_packet_id_exhausted(self, client: Any, message: Message) -> None:
            events.add("on_packet_id_exhausted", client.client_id, message.payload)

    running = broker_factory(plugins=[("e", Exhausted())], max_inflight_messages=0,
                             max_queued_messages=10)
    reader = _connect(raw_factory, running.port, "reader")
    reader.subscribe("x/#", 1)

    def flood() -> None:
        for index in range(65536):
            running.broker.engine.route(Message("x/t", str(index).encode(), 1))

    running.call(flood)  # the reader never acknowledges
    assert events.wait("on_packet_id_exhausted") == [("reader", b"65535")]


def test_message_expiry_property_reaches_on_publish(
    broker_factory: Factory, raw_factory: Factory
) -> None:
    events = Events()
    running = broker_factory(plugins=[("c", Censor(events))])
    writer = _connect(raw_factory, running.port, "writer", 5)
    writer.send(Publish("p/t", b"x", 1, packet_id=1,
                        properties={Property.MESSAGE_EXPIRY_INTERVAL: 30}))
    assert writer.recv().packet_id == 1
    [(_, packet)] = events.wait("on_publish")
    assert packet.properties[Property.MESSAGE_EXPIRY_INTERVAL] == 30
