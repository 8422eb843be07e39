"""MQTT 5 PUBACK/PUBREC reason codes: 0x99 payload format invalid (a payload declared
UTF-8 that is not), 0x91 packet identifier in use (a new QoS 2 PUBLISH on a packet id
still awaiting PUBREL)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from midge.codec import (
    ConnAck,
    Disconnect,
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
)

Factory = Callable[..., Any]
PFI = Property.PAYLOAD_FORMAT_INDICATOR
NOT_UTF8 = b"caf\xe9"  # Latin-1


def _client(raw_factory: Factory, cid: str, level: int = 5, **kwargs: Any) -> Any:
    raw = raw_factory(level=level)
    connack = raw.connect(cid, level, **kwargs)
    assert isinstance(connack, ConnAck) and connack.reason_code == 0, connack
    return raw


def _subscriber(raw_factory: Factory, cid: str, topic_filter: str) -> Any:
    raw = _client(raw_factory, cid)
    raw.send(Subscribe(1, [Subscription(topic_filter, 2)]))
    assert raw.recv() == SubAck(1, [2])
    return raw


@pytest.mark.parametrize(("qos", "ack"), [(1, PubAck), (2, PubRec)])
def test_payload_declared_utf8_that_is_not_gets_0x99(
    raw_factory: Factory, qos: int, ack: type
) -> None:
    sub = _subscriber(raw_factory, f"pfi-sub-{qos}", "pfi/#")
    pub = _client(raw_factory, f"pfi-pub-{qos}")
    pub.send(Publish("pfi/bad", NOT_UTF8, qos, packet_id=1, properties={PFI: 1}))
    answer = pub.recv()
    assert isinstance(answer, ack) and answer.packet_id == 1
    assert answer.reason_code == ReasonCode.PAYLOAD_FORMAT_INVALID
    assert answer.properties[Property.REASON_STRING]
    # valid UTF-8 declared as such, and bytes not declared as text, are routed as usual
    pub.send(Publish("pfi/good", "café".encode(), qos, packet_id=2, properties={PFI: 1}))
    pub.send(Publish("pfi/binary", NOT_UTF8, qos, packet_id=3, properties={PFI: 0}))
    received = []
    while len(received) < 2:
        packet = sub.recv()
        if isinstance(packet, Publish):
            received.append(packet)
            if packet.qos == 2:
                sub.send(PubRec(packet.packet_id))
    assert [(p.topic, p.properties.get(PFI)) for p in received] == [
        ("pfi/good", 1), ("pfi/binary", 0)
    ]


def test_qos0_payload_declared_utf8_that_is_not_is_disconnected_with_0x99(
    raw_factory: Factory,
) -> None:
    pub = _client(raw_factory, "pfi-qos0")
    pub.send(Publish("pfi/bad", NOT_UTF8, 0, properties={PFI: 1}))
    packets = pub.packets_until_close()
    assert [(type(p), p.reason_code) for p in packets] == [
        (Disconnect, ReasonCode.PAYLOAD_FORMAT_INVALID)
    ]


def test_new_qos2_publish_on_a_packet_id_awaiting_pubrel_gets_0x91(
    raw_factory: Factory,
) -> None:
    sub = _subscriber(raw_factory, "pid-sub", "pid/#")
    pub = _client(raw_factory, "pid-pub")
    pub.send(Publish("pid/t", b"first", 2, packet_id=5))
    assert pub.recv() == PubRec(5)
    # a resend (DUP=1) is acknowledged again and not routed again [MQTT-4.3.3-10]
    pub.send(Publish("pid/t", b"first", 2, dup=True, packet_id=5))
    assert pub.recv() == PubRec(5)
    # a first attempt (DUP=0) on the same id is another message: not routed, 0x91
    pub.send(Publish("pid/t", b"second", 2, packet_id=5))
    answer = pub.recv()
    assert isinstance(answer, PubRec) and answer.packet_id == 5
    assert answer.reason_code == ReasonCode.PACKET_IDENTIFIER_IN_USE
    # after a PUBREC of 0x80 or above the id starts afresh [MQTT-4.3.3-9]
    pub.send(PubRel(5))
    assert pub.recv() == PubComp(5, ReasonCode.PACKET_IDENTIFIER_NOT_FOUND)
    pub.send(Publish("pid/t", b"third", 2, packet_id=5))
    assert pub.recv() == PubRec(5)
    pub.send(PubRel(5))
    assert pub.recv() == PubComp(5)
    payloads = []
    while len(payloads) < 2:
        packet = sub.recv()
        if isinstance(packet, PubRel):
            sub.send(PubComp(packet.packet_id))
            continue
        assert isinstance(packet, Publish), packet
        payloads.append(packet.payload)
        sub.send(PubRec(packet.packet_id))
    assert payloads == [b"first", b"third"]


def test_v3_reuse_of_a_qos2_packet_id_is_a_plain_pubrec(raw_factory: Factory) -> None:
    pub = _client(raw_factory, "pid-v3", level=4)
    pub.send(Publish("pid/t", b"first", 2, packet_id=6))
    assert pub.recv() == PubRec(6)
    pub.send(Publish("pid/t", b"second", 2, packet_id=6))
    assert pub.recv() == PubRec(6)
