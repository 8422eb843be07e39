"""The anyio-stream connection driver, used on event loops other than asyncio (trio here).

The asyncio driver serves every other test; these run the same broker on trio so the
reader/writer-task driver in midge.listeners.tcp is exercised for real: delivery in both
directions, a will on an abrupt close, a protocol error answered and closed, graceful
shutdown with DISCONNECT 0x8B.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import paho.mqtt.client as paho
import pytest

from midge.codec import (
    ConnAck,
    Disconnect,
    Publish,
    ReasonCode,
    Subscribe,
    Subscription,
    Will,
)

pytest.importorskip("trio")

Factory = Callable[..., Any]


def test_publish_and_subscribe_on_trio(broker_factory: Factory, raw_factory: Factory) -> None:
    running = broker_factory(backend="trio")
    sub = raw_factory(port=running.port, level=5)
    connack = sub.connect("sub", 5)
    assert isinstance(connack, ConnAck) and connack.reason_code == 0
    sub.subscribe("t/#", 1)
    pub = raw_factory(port=running.port)
    assert isinstance(pub.connect("pub", 4), ConnAck)
    pub.send(Publish("t/x", b"over trio", 1, packet_id=9))
    assert pub.recv().packet_id == 9  # PUBACK
    delivered = sub.recv()
    assert isinstance(delivered, Publish)
    assert (delivered.topic, delivered.payload, delivered.qos) == ("t/x", b"over trio", 1)


def test_will_and_protocol_error_on_trio(broker_factory: Factory, raw_factory: Factory) -> None:
    running = broker_factory(backend="trio")
    watcher = raw_factory(port=running.port)
    assert isinstance(watcher.connect("watcher", 4), ConnAck)
    watcher.subscribe("wills/#", 0)
    dying = raw_factory(port=running.port)
    assert isinstance(dying.connect("dying", 4, will=Will("wills/dying", b"gone")), ConnAck)
    dying.sock.sendall(b"\x30\x05\x00")  # half a PUBLISH, then the socket closes
    dying.close()
    will = watcher.recv()
    assert isinstance(will, Publish) and (will.topic, will.payload) == ("wills/dying", b"gone")

    bad = raw_factory(port=running.port, level=5)
    assert isinstance(bad.connect("bad", 5), ConnAck)
    bad.send(Subscribe(1, [Subscription("a/#/b", 0)]), 5)  # invalid filter
    assert bad.packets_until_close() == [Disconnect(ReasonCode.TOPIC_FILTER_INVALID)]


def test_shutdown_on_trio_tells_v5_clients(broker_factory: Factory, raw_factory: Factory) -> None:
    running = broker_factory(backend="trio")
    client = raw_factory(port=running.port, level=5)
    assert isinstance(client.connect("leaving", 5), ConnAck)
    running.call(running.broker.shutdown)
    assert client.packets_until_close() == [Disconnect(ReasonCode.SERVER_SHUTTING_DOWN)]


def test_paho_client_on_trio(broker_factory: Factory, client_factory: Factory) -> None:
    running = broker_factory(backend="trio")
    sub = client_factory(protocol=paho.MQTTv311, port=running.port)
    sub.subscribe("p/#", 2)
    pub = client_factory(protocol=paho.MQTTv5, port=running.port)
    pub.publish("p/q", b"qos2", 2)
    message = sub.expect()
    assert (message.topic, message.payload, message.qos) == ("p/q", b"qos2", 2)
