"""MQTT 5 message expiry: the forwarded interval is reduced by the time waited; expired
messages are dropped from session queues and the retained store; no expiry, no limit."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import anyio.from_thread
import paho.mqtt.client as paho
import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from midge import Broker, BrokerSettings, ListenerSettings, Settings, hookimpl
from midge.codec import ConnAck, Property, Publish, Subscribe, Subscription
from midge.message import Message

Factory = Callable[..., Any]
V5 = paho.MQTTv5


def _expiring(seconds: int) -> Properties:
    props = Properties(PacketTypes.PUBLISH)
    props.MessageExpiryInterval = seconds
    return props


def _persistent(expiry: int = 300) -> Properties:
    props = Properties(PacketTypes.CONNECT)
    props.SessionExpiryInterval = expiry
    return props


def _interval(message: paho.MQTTMessage) -> int | None:
    return getattr(message.properties, "MessageExpiryInterval", None)


def test_live_delivery_forwards_the_interval(client_factory: Factory) -> None:
    sub = client_factory(protocol=V5)
    sub.subscribe("exp/live", 1)
    pub = client_factory(protocol=V5)
    pub.publish("exp/live", b"x", 1, properties=_expiring(60))
    assert _interval(sub.expect()) == 60


def test_v3_subscriber_gets_no_expiry_property(client_factory: Factory, raw_factory: Factory,
                                               broker: Any) -> None:
    raw = raw_factory(level=4)
    assert isinstance(raw.connect("v3-sub", 4), ConnAck)
    raw.send(Subscribe(1, [Subscription("exp/v3", 1)]))
    raw.recv()
    pub = client_factory(protocol=V5)
    pub.publish("exp/v3", b"x", 0, properties=_expiring(60))
    packet = raw.recv()
    assert isinstance(packet, Publish) and packet.payload == b"x" and not packet.properties


def test_queued_messages_expire_and_the_rest_wait_less(client_factory: Factory) -> None:
    sub = client_factory("exp-queue", protocol=V5, properties=_persistent())
    sub.subscribe("exp/q", 2)
    sub.close()
    pub = client_factory(protocol=V5)
    pub.publish("exp/q", b"expires", 1, properties=_expiring(1))
    pub.publish("exp/q", b"expires too", 2, properties=_expiring(1))
    pub.publish("exp/q", b"stays", 1, properties=_expiring(30))
    pub.publish("exp/q", b"no expiry", 2)
    time.sleep(2.2)
    back = client_factory("exp-queue", protocol=V5, clean=False, properties=_persistent())
    first, second = back.expect(), back.expect()
    assert (first.payload, second.payload) == (b"stays", b"no expiry")
    interval = _interval(first)
    assert interval is not None and 26 <= interval <= 28
    assert _interval(second) is None
    back.expect_none()


def test_message_without_expiry_never_expires() -> None:
    message = Message("t", b"x", 1, created=time.monotonic() - 10 * 365 * 86400)
    assert message.expires_at is None and not message.expired()
    old = Message("t", b"x", 1, properties={Property.MESSAGE_EXPIRY_INTERVAL: 5},
                  created=time.monotonic() - 6)
    assert old.expired()


def test_qos0_fan_out_still_shares_one_frame() -> None:
    message = Message("t", b"x", 0)
    assert message.frame(5, 0, False) is message.frame(5, 0, False)
    expiring = Message("t", b"x", 0, properties={Property.MESSAGE_EXPIRY_INTERVAL: 100})
    assert expiring.frame(5, 0, False) is expiring.frame(5, 0, False)
    assert expiring.frame(4, 0, False) is expiring.frame(4, 0, False)


def test_retained_message_interval_is_reduced(client_factory: Factory) -> None:
    pub = client_factory(protocol=V5)
    pub.publish("exp/ret", b"kept", 1, retain=True, properties=_expiring(30))
    time.sleep(1.2)
    sub = client_factory(protocol=V5)
    sub.subscribe("exp/ret", 1)
    message = sub.expect()
    assert message.payload == b"kept" and message.retain
    interval = _interval(message)
    assert interval is not None and interval <= 29


class _ExpiryWatcher:
    def __init__(self) -> None:
        self.topics: list[str] = []

    @hookimpl
    def on_retained_expired(self, topic: str) -> None:
        self.topics.append(topic)


@pytest.fixture
def watched() -> Iterator[tuple[Broker, int, _ExpiryWatcher]]:
    watcher = _ExpiryWatcher()
    settings = Settings(
        broker=BrokerSettings(),
        listeners=(ListenerSettings(host="127.0.0.1", port=0, allow_anonymous=True),),
    )
    broker = Broker(settings, plugins=[("expiry-watcher", watcher)])
    with anyio.from_thread.start_blocking_portal() as portal:
        future, _ = portal.start_task(broker.run)
        try:
            yield broker, broker.addresses[0][1], watcher
        finally:
            portal.call(broker.shutdown)
            future.result(timeout=15)


def test_expired_retained_message_is_removed(
    watched: tuple[Broker, int, _ExpiryWatcher], client_factory: Factory
) -> None:
    broker, port, watcher = watched
    pub = client_factory(protocol=V5, port=port)
    pub.publish("exp/gone", b"short", 1, retain=True, properties=_expiring(1))
    pub.publish("exp/forever", b"long", 1, retain=True)
    time.sleep(1.5)
    sub = client_factory(protocol=V5, port=port)
    sub.subscribe("exp/#", 1)
    assert sub.expect().payload == b"long"
    sub.expect_none()
    assert "exp/gone" not in broker.engine.router.retained
    assert watcher.topics == ["exp/gone"]
