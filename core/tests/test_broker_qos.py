"""QoS 0/1/2 flows in both directions, packet identifier spaces, delivery QoS, and
redelivery of unfinished flows when a persistent session reconnects."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as paho
import pytest

from midge.codec import (
    ConnAck,
    Disconnect,
    Packet,
    PingReq,
    PingResp,
    Property,
    PubAck,
    PubComp,
    Publish,
    PubRec,
    PubRel,
)

Factory = Callable[..., Any]
LEVELS = pytest.mark.parametrize("level", [4, 5], ids=["v311", "v5"])


def _connect(raw: Any, cid: str, level: int, clean: bool = True) -> ConnAck:
    props = {} if clean or level != 5 else {Property.SESSION_EXPIRY_INTERVAL: 300}
    connack = raw.connect(cid, level, clean_start=clean, properties=props)
    assert isinstance(connack, ConnAck) and connack.reason_code == 0, connack
    return connack




def _recv_n(raw: Any, count: int) -> list[Packet]:
    return [raw.recv() for _ in range(count)]


def _wait_gone(running: Any, cid: str) -> None:
    deadline = time.monotonic() + 5
    while running.call(lambda: cid in running.broker.engine.clients):
        assert time.monotonic() < deadline, f"{cid} still connected"
        time.sleep(0.02)


@LEVELS
@pytest.mark.parametrize("qos", [0, 1, 2])
def test_qos_flows_complete_in_both_directions(
    raw_factory: Factory, level: int, qos: int
) -> None:
    sub = raw_factory(level=level)
    _connect(sub, "flow-sub", level)
    sub.subscribe("flow/t", qos)
    pub = raw_factory(level=level)
    _connect(pub, "flow-pub", level)

    # inbound: publisher -> broker
    pub.send(Publish("flow/t", b"payload", qos, packet_id=7 if qos else 0))
    if qos == 1:
        assert pub.recv() == PubAck(7)
    elif qos == 2:
        assert pub.recv() == PubRec(7)
        pub.send(PubRel(7))
        assert pub.recv() == PubComp(7)

    # outbound: broker -> subscriber
    delivery = sub.recv()
    assert isinstance(delivery, Publish)
    assert (delivery.topic, delivery.payload, delivery.qos) == ("flow/t", b"payload", qos)
    assert bool(delivery.packet_id) == bool(qos)
    pid = delivery.packet_id
    if qos == 1:
        sub.send(PubAck(pid))
    elif qos == 2:
        sub.send(PubRec(pid))
        assert sub.recv() == PubRel(pid)
        sub.send(PubComp(pid))
    # each flow is finished: both sides get nothing but the PINGRESP now
    for raw in (pub, sub):
        raw.send(PingReq())
        assert raw.recv() == PingResp()


def test_resent_qos2_publish_is_delivered_once(raw_factory: Factory) -> None:
    sub = raw_factory()
    _connect(sub, "once-sub", 4)
    sub.subscribe("once/t", 2)
    pub = raw_factory()
    _connect(pub, "once-pub", 4)
    pub.send(Publish("once/t", b"only once", 2, packet_id=3))
    assert pub.recv() == PubRec(3)
    pub.send(Publish("once/t", b"only once", 2, dup=True, packet_id=3))
    assert pub.recv() == PubRec(3)
    pub.send(PubRel(3))
    assert pub.recv() == PubComp(3)
    delivery = sub.recv()
    assert isinstance(delivery, Publish) and delivery.payload == b"only once"
    sub.send(PubRec(delivery.packet_id))
    assert sub.recv() == PubRel(delivery.packet_id)
    sub.send(PubComp(delivery.packet_id))
    sub.send(PingReq())
    assert sub.recv() == PingResp(), "the duplicate PUBLISH was delivered again"


@pytest.mark.parametrize("protocol", [paho.MQTTv311, paho.MQTTv5], ids=["v311", "v5"])
@pytest.mark.parametrize("published", [0, 1, 2])
@pytest.mark.parametrize("granted", [0, 1, 2])
def test_delivery_qos_is_min_of_published_and_granted(
    client_factory: Factory, protocol: int, published: int, granted: int
) -> None:
    sub = client_factory(protocol=protocol)
    sub.subscribe("minq/t", granted)
    pub = client_factory(protocol=protocol)
    pub.publish("minq/t", b"m", published)
    message = sub.expect()
    assert message.qos == min(published, granted)
    sub.expect_none(0.2)


@LEVELS
def test_inbound_and_outbound_packet_ids_are_separate(raw_factory: Factory, level: int) -> None:
    raw = raw_factory(level=level)
    _connect(raw, "ids", level)
    raw.subscribe("ids/t", 1)
    raw.send(Publish("ids/t", b"echo", 1, packet_id=1))
    packets = _recv_n(raw, 2)
    acks = [p for p in packets if isinstance(p, PubAck)]
    deliveries = [p for p in packets if isinstance(p, Publish)]
    assert acks == [PubAck(1)]
    assert len(deliveries) == 1 and deliveries[0].packet_id == 1
    assert deliveries[0].payload == b"echo"
    # acknowledging the broker's packet id 1 completes its delivery, nothing else
    raw.send(PubAck(1))
    raw.send(PingReq())
    assert raw.recv() == PingResp()


@LEVELS
def test_unacknowledged_qos1_is_redelivered_with_dup_on_reconnect(
    broker: Any, raw_factory: Factory, level: int
) -> None:
    sub = raw_factory(level=level)
    _connect(sub, "forgetful", level, clean=False)
    sub.subscribe("redo/t", 1)
    pub = raw_factory(level=level)
    _connect(pub, "redo-pub", level)
    pub.send(Publish("redo/t", b"again", 1, packet_id=9))
    assert pub.recv() == PubAck(9)
    first = sub.recv()
    assert isinstance(first, Publish) and not first.dup
    sub.close()  # no PUBACK, no DISCONNECT
    _wait_gone(broker, "forgetful")

    back = raw_factory(level=level)
    assert _connect(back, "forgetful", level, clean=False).session_present
    again = back.recv()
    assert isinstance(again, Publish)
    assert (again.packet_id, again.dup, again.payload, again.qos) == (
        first.packet_id, True, b"again", 1
    )
    back.send(PubAck(again.packet_id))
    back.send(PingReq())
    assert back.recv() == PingResp()


@LEVELS
def test_qos2_pubrel_is_resent_on_reconnect_after_pubrec(
    broker: Any, raw_factory: Factory, level: int
) -> None:
    sub = raw_factory(level=level)
    _connect(sub, "half-done", level, clean=False)
    sub.subscribe("rel/t", 2)
    pub = raw_factory(level=level)
    _connect(pub, "rel-pub", level)
    pub.send(Publish("rel/t", b"twice?", 2, packet_id=4))
    assert pub.recv() == PubRec(4)
    pub.send(PubRel(4))
    assert pub.recv() == PubComp(4)
    delivery = sub.recv()
    assert isinstance(delivery, Publish) and delivery.qos == 2
    sub.send(PubRec(delivery.packet_id))
    assert sub.recv() == PubRel(delivery.packet_id)
    sub.close()  # no PUBCOMP
    _wait_gone(broker, "half-done")

    back = raw_factory(level=level)
    assert _connect(back, "half-done", level, clean=False).session_present
    assert back.recv() == PubRel(delivery.packet_id), "PUBREL must be resent, not the PUBLISH"
    back.send(PubComp(delivery.packet_id))
    back.send(PingReq())
    assert back.recv() == PingResp()


def test_deliveries_too_large_for_the_client_do_not_stall_the_queue(
    broker: Any, raw_factory: Factory
) -> None:
    props = {Property.SESSION_EXPIRY_INTERVAL: 300, Property.RECEIVE_MAXIMUM: 2,
             Property.MAXIMUM_PACKET_SIZE: 200}
    sub = raw_factory(level=5)
    assert sub.connect("picky", 5, clean_start=False, properties=props).reason_code == 0
    sub.subscribe("big/#", 1)
    sub.send(Disconnect())
    assert sub.closed()
    _wait_gone(broker, "picky")
    pub = raw_factory(level=5)
    _connect(pub, "big-pub", 5)
    sizes = [500, 500, 500, 10, 10]  # the client's Maximum Packet Size is 200
    for pid, size in enumerate(sizes, 1):
        pub.send(Publish("big/t", bytes([pid]) * size, 1, packet_id=pid))
        assert isinstance(pub.recv(), PubAck)
    back = raw_factory(level=5)
    assert back.connect("picky", 5, clean_start=False, properties=props).session_present
    got = []
    for _ in range(2):
        delivery = back.recv()
        assert isinstance(delivery, Publish)
        got.append(delivery.payload)
        back.send(PubAck(delivery.packet_id))
    assert got == [bytes([4]) * 10, bytes([5]) * 10]
