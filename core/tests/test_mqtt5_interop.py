"""Mixed protocol levels on the same topics, and a smoke test with gmqtt (an MQTT 5
client by default).

A v5 publisher's properties reach v5 subscribers unchanged and in order; a v3.1.1
subscriber on the same topic gets the same topic, payload and QoS without them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as paho
import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

Factory = Callable[..., Any]


def _v5_properties() -> Properties:
    props = Properties(PacketTypes.PUBLISH)
    props.UserProperty = [("first", "1"), ("second", "2"), ("first", "3")]
    props.ContentType = "text/plain"
    props.ResponseTopic = "replies/here"
    props.CorrelationData = b"\x00\x01corr"
    props.PayloadFormatIndicator = 1
    props.MessageExpiryInterval = 3600
    return props


def test_v5_properties_forwarded_to_v5_and_dropped_for_v3(client_factory: Factory) -> None:
    v5_sub = client_factory(protocol=paho.MQTTv5)
    v5_sub.subscribe("mixed/#", 1)
    v3_sub = client_factory(protocol=paho.MQTTv311)
    v3_sub.subscribe("mixed/#", 1)
    publisher = client_factory(protocol=paho.MQTTv5)
    publisher.publish("mixed/t", b"hello", 1, properties=_v5_properties())

    got5 = v5_sub.expect()
    assert (got5.topic, got5.payload, got5.qos) == ("mixed/t", b"hello", 1)
    props = got5.properties
    assert props.UserProperty == [("first", "1"), ("second", "2"), ("first", "3")]
    assert props.ContentType == "text/plain"
    assert props.ResponseTopic == "replies/here"
    assert props.CorrelationData == b"\x00\x01corr"
    assert props.PayloadFormatIndicator == 1
    assert 3590 <= props.MessageExpiryInterval <= 3600

    got3 = v3_sub.expect()
    assert (got3.topic, got3.payload, got3.qos) == ("mixed/t", b"hello", 1)
    assert got3.properties is None


def test_v3_publisher_reaches_v5_subscriber_without_properties(client_factory: Factory) -> None:
    v5_sub = client_factory(protocol=paho.MQTTv5)
    v5_sub.subscribe("mixed3/#", 2)
    publisher = client_factory(protocol=paho.MQTTv311)
    publisher.publish("mixed3/t", b"from v3", 2)
    got = v5_sub.expect()
    assert (got.topic, got.payload, got.qos) == ("mixed3/t", b"from v3", 2)
    assert not getattr(got.properties, "UserProperty", None)


def test_gmqtt_smoke(broker: Any) -> None:
    gmqtt = pytest.importorskip("gmqtt")

    async def scenario() -> list[tuple[str, bytes, int, dict[str, Any]]]:
        received: list[tuple[str, bytes, int, dict[str, Any]]] = []
        arrived = asyncio.Event()

        def on_message(client: Any, topic: str, payload: bytes, qos: int,
                       properties: dict[str, Any]) -> int:
            received.append((topic, payload, qos, properties))
            arrived.set()
            return 0

        subscriber = gmqtt.Client("gmqtt-sub")
        subscriber.on_message = on_message
        subscribed = asyncio.Event()
        subscriber.on_subscribe = lambda *args: subscribed.set()
        await subscriber.connect("127.0.0.1", broker.port)
        subscriber.subscribe("gm/#", qos=1)
        await asyncio.wait_for(subscribed.wait(), 5)
        publisher = gmqtt.Client("gmqtt-pub")
        await publisher.connect("127.0.0.1", broker.port)
        publisher.publish("gm/t", b"smoke", qos=1, user_property=("k", "v"),
                          content_type="text/plain")
        await asyncio.wait_for(arrived.wait(), 5)
        await publisher.disconnect()
        await subscriber.disconnect()
        return received

    [(topic, payload, qos, properties)] = asyncio.run(scenario())
    assert (topic, payload, qos) == ("gm/t", b"smoke", 1)
    assert properties["user_property"] == [("k", "v")]
    assert properties["content_type"] == ["text/plain"]
