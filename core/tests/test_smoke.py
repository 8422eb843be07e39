"""End-to-end smoke test: one publish, one delivery, over each protocol level."""

from __future__ import annotations

import paho.mqtt.client as paho
import pytest


@pytest.mark.parametrize("protocol", [paho.MQTTv31, paho.MQTTv311, paho.MQTTv5])
def test_publish_reaches_subscriber(client_factory, protocol) -> None:
    sub = client_factory(protocol=protocol)
    sub.subscribe("smoke/#", 1)
    pub = client_factory(protocol=protocol)
    pub.publish("smoke/a", b"hello", 1)
    message = sub.expect()
    assert (message.topic, message.payload, message.qos) == ("smoke/a", b"hello", 1)
