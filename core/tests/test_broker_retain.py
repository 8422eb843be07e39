"""Retained messages: stored, replaced, cleared, sent on subscribe with RETAIN=1, live
deliveries with RETAIN=0, nothing to non-subscribers, and the delivery QoS."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as paho
import pytest

from midge.message import Message

Factory = Callable[..., Any]
PROTOCOLS = pytest.mark.parametrize("protocol", [paho.MQTTv311, paho.MQTTv5], ids=["v311", "v5"])


@PROTOCOLS
def test_retained_message_is_sent_on_subscribe_with_retain_flag(
    client_factory: Factory, protocol: int
) -> None:
    client_factory(protocol=protocol).publish("ret/a", b"kept", 1, retain=True)
    late = client_factory(protocol=protocol)
    late.subscribe("ret/#", 1)
    message = late.expect()
    assert (message.topic, message.payload, message.retain) == ("ret/a", b"kept", True)
    late.expect_none(0.3)


@PROTOCOLS
def test_retained_message_is_replaced_by_the_next_one(
    client_factory: Factory, protocol: int
) -> None:
    pub = client_factory(protocol=protocol)
    pub.publish("ret/b", b"old", 1, retain=True)
    pub.publish("ret/b", b"new", 1, retain=True)
    late = client_factory(protocol=protocol)
    late.subscribe("ret/b", 1)
    assert late.expect().payload == b"new"
    late.expect_none(0.3)


@PROTOCOLS
def test_empty_retained_payload_clears_the_retained_message(
    broker: Any, client_factory: Factory, protocol: int
) -> None:
    pub = client_factory(protocol=protocol)
    pub.publish("ret/c", b"soon gone", 1, retain=True)
    pub.publish("ret/c", b"", 1, retain=True)
    assert broker.call(lambda: "ret/c" in broker.broker.engine.router.retained) is False
    late = client_factory(protocol=protocol)
    late.subscribe("ret/#", 1)
    late.expect_none()


@PROTOCOLS
def test_live_delivery_of_a_retained_publish_has_retain_0(
    client_factory: Factory, protocol: int
) -> None:
    sub = client_factory(protocol=protocol)
    sub.subscribe("ret/live", 1)
    client_factory(protocol=protocol).publish("ret/live", b"now", 1, retain=True)
    message = sub.expect()
    assert (message.payload, message.retain) == (b"now", False)


def test_retained_message_is_never_sent_to_a_client_that_did_not_subscribe(
    client_factory: Factory,
) -> None:
    idle = client_factory()
    elsewhere = client_factory()
    elsewhere.subscribe("other/#", 1)
    client_factory().publish("ret/d", b"private", 1, retain=True)
    # a later subscription by someone else triggers retained delivery to that client only
    late = client_factory()
    late.subscribe("ret/d", 1)
    assert late.expect().payload == b"private"
    idle.expect_none(0.3)
    elsewhere.expect_none(0.3)


@pytest.mark.parametrize("published", [0, 1, 2])
@pytest.mark.parametrize("granted", [0, 1, 2])
def test_retained_message_is_delivered_at_min_of_its_qos_and_granted_qos(
    broker: Any, client_factory: Factory, published: int, granted: int
) -> None:
    topic = f"ret/q{published}{granted}"
    client_factory().publish(topic, b"q", published, retain=True)
    # a QoS 0 PUBLISH is not acknowledged: wait until the broker has stored it
    deadline = time.monotonic() + 3
    while not broker.call(lambda: topic in broker.broker.engine.router.retained):
        assert time.monotonic() < deadline, "the retained message was not stored"
        time.sleep(0.02)
    late = client_factory(protocol=paho.MQTTv5)
    late.subscribe(topic, granted)
    message = late.expect()
    assert (message.retain, message.qos) == (True, min(published, granted))


@pytest.mark.parametrize(
    ("topic_filter", "expected"),
    [
        ("w/#", ["w", "w/x", "w/x/y"]),
        ("w/+", ["w/x"]),
        ("+/x", ["w/x"]),
        ("+", ["w"]),
        ("#", ["w", "w/x", "w/x/y"]),
        ("$SYS/#", ["$SYS/w"]),
        ("$SYS/+", ["$SYS/w"]),
    ],
)
def test_retained_messages_match_filters_like_live_messages(
    broker: Any, client_factory: Factory, topic_filter: str, expected: list[str]
) -> None:
    for topic in ("w", "w/x", "w/x/y", "$SYS/w"):
        # clients may not publish to $-topics, so the broker routes these itself
        broker.call(broker.broker.engine.route, Message(topic, b"r", 0, retain=True))
    late = client_factory()
    late.subscribe(topic_filter, 0)
    late.subscribe("marker/end", 0)
    client_factory().publish("marker/end", b"", 1)
    topics = []
    for _ in range(10):
        message = late.expect()
        if message.topic == "marker/end":
            break
        assert message.retain
        topics.append(message.topic)
    assert sorted(topics) == expected
