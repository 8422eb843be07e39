"""Delivery: overlapping subscriptions, per-publisher order, UNSUBSCRIBE, PINGREQ,
DISCONNECT, a slow consumer that must not hold anyone up, and fan-out."""

from __future__ import annotations

import os
import queue
import threading
import time
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as paho
import pytest

from midge.codec import (
    ConnAck,
    Disconnect,
    PingReq,
    PingResp,
    Publish,
    SubAck,
    Subscribe,
    Subscription,
    UnsubAck,
    Unsubscribe,
    encode,
)

Factory = Callable[..., Any]
PROTOCOLS = pytest.mark.parametrize("protocol", [paho.MQTTv311, paho.MQTTv5], ids=["v311", "v5"])


@PROTOCOLS
def test_overlapping_subscriptions_deliver_once_at_the_highest_granted_qos(
    client_factory: Factory, protocol: int
) -> None:
    sub = client_factory(protocol=protocol)
    sub.subscribe("a/#", 0)
    sub.subscribe("a/b", 2)
    client_factory(protocol=protocol).publish("a/b", b"one copy", 2)
    message = sub.expect()
    assert (message.payload, message.qos) == (b"one copy", 2)
    sub.expect_none()


@PROTOCOLS
def test_messages_of_one_publisher_arrive_in_order(
    client_factory: Factory, protocol: int
) -> None:
    sub = client_factory(protocol=protocol)
    sub.subscribe("order/t", 1)
    pub = client_factory(protocol=protocol)
    infos = [pub.paho.publish("order/t", str(n).encode(), 1) for n in range(200)]
    infos[-1].wait_for_publish(10)
    received = [int(sub.expect(5).payload) for _ in range(200)]
    assert received == list(range(200))


@PROTOCOLS
def test_unsubscribe_stops_delivery(client_factory: Factory, protocol: int) -> None:
    sub = client_factory(protocol=protocol)
    sub.subscribe("uns/t", 1)
    pub = client_factory(protocol=protocol)
    pub.publish("uns/t", b"before", 1)
    assert sub.expect().payload == b"before"
    done: queue.Queue[Any] = queue.Queue()
    sub.paho.on_unsubscribe = lambda *args: done.put(args)
    sub.paho.unsubscribe("uns/t")
    done.get(timeout=3)
    pub.publish("uns/t", b"after", 1)
    sub.expect_none()


def test_v5_unsuback_reports_no_subscription_existed(raw_factory: Factory) -> None:
    raw = raw_factory(level=5)
    connack = raw.connect("unsub", 5)
    assert isinstance(connack, ConnAck) and connack.reason_code == 0
    raw.send(Subscribe(1, [Subscription("known/t", 1)]))
    assert isinstance(raw.recv(), SubAck)
    raw.send(Unsubscribe(2, ["known/t", "never/subscribed"]))
    assert raw.recv() == UnsubAck(2, [0x00, 0x11])


@pytest.mark.parametrize("level", [3, 4, 5], ids=["v31", "v311", "v5"])
def test_pingreq_gets_pingresp(raw_factory: Factory, level: int) -> None:
    raw = raw_factory(level=level)
    connack = raw.connect("pinger", level)
    assert isinstance(connack, ConnAck) and connack.reason_code == 0
    for _ in range(3):
        raw.send(PingReq())
        assert raw.recv() == PingResp()


@pytest.mark.parametrize("level", [4, 5], ids=["v311", "v5"])
def test_disconnect_closes_the_connection(
    broker: Any, raw_factory: Factory, level: int
) -> None:
    raw = raw_factory(level=level)
    connack = raw.connect("leaver", level)
    assert isinstance(connack, ConnAck) and connack.reason_code == 0
    raw.send(Disconnect())
    assert raw.packets_until_close() == []
    assert broker.call(lambda: "leaver" in broker.broker.engine.clients) is False


def test_slow_consumer_does_not_block_the_publisher_or_a_fast_subscriber(
    broker: Any, client_factory: Factory, raw_factory: Factory
) -> None:
    count = 20_000
    body = os.urandom(1024 - 8)
    frame_size = len(encode(Publish("load/t", b"%08d" % 0 + body), 4))
    subscribers = []
    for cid in ("slow", "fast"):
        raw = raw_factory()
        assert raw.connect(cid).reason_code == 0
        raw.send(Subscribe(1, [Subscription("load/t", 0)]))
        assert isinstance(raw.recv(), SubAck)
        subscribers.append(raw)
    _slow, fast = subscribers  # the slow subscriber never reads its socket again
    data = bytearray()

    def read_fast() -> None:
        deadline = time.monotonic() + 60
        fast.sock.settimeout(1)
        while len(data) < count * frame_size and time.monotonic() < deadline:
            try:
                chunk = fast.sock.recv(1 << 20)
            except TimeoutError:
                continue
            if not chunk:
                return
            data.extend(chunk)

    reader = threading.Thread(target=read_fast)
    reader.start()
    pub = client_factory()
    for n in range(count):
        pub.paho.publish("load/t", b"%08d" % n + body, 0)
    # the publisher is served all along: a QoS 1 publish after the burst completes
    info = pub.paho.publish("load/done", b"", 1)
    info.wait_for_publish(30)
    assert info.is_published()
    reader.join(65)
    assert not reader.is_alive()
    fast.decoder.feed(bytes(data))
    received = []
    while (packet := fast.decoder.next_packet()) is not None:
        assert isinstance(packet, Publish) and packet.payload[8:] == body
        received.append(int(packet.payload[:8]))
    assert received == list(range(count))
    # the slow subscriber really was stalled: the broker shed its backlog
    assert broker.call(lambda: broker.broker.stats.messages_dropped) > 0
    assert broker.call(lambda: "slow" in broker.broker.engine.clients)


def test_one_message_fans_out_intact_to_20_subscribers(client_factory: Factory) -> None:
    subscribers = [client_factory() for _ in range(20)]
    for sub in subscribers:
        sub.subscribe("fan/t", 1)
    payload = os.urandom(64 * 1024)
    client_factory().publish("fan/t", payload, 1)
    for sub in subscribers:
        message = sub.expect(5)
        assert (message.topic, message.payload, message.qos) == ("fan/t", payload, 1)
    # no subscriber gets a second copy: wait once, two seconds, long enough for a late
    # duplicate (a resend, a second routing pass), then look at every subscriber
    time.sleep(2.0)
    for sub in subscribers:
        sub.expect_none(0.01)
