"""MQTT 5 topic aliases: inbound up to the advertised maximum, per connection; outbound,
assigned by the broker up to the client's own maximum, never to a client that allowed none."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from midge.codec import (
    ConnAck,
    Disconnect,
    Property,
    Publish,
)

Factory = Callable[..., Any]
ALIAS = Property.TOPIC_ALIAS


def _v5(raw_factory: Factory, cid: str, port: int | None = None, **props: int) -> Any:
    raw = raw_factory(port=port, level=5)
    properties = {Property[name]: value for name, value in props.items()}
    connack = raw.connect(cid, 5, properties=properties)
    assert isinstance(connack, ConnAck) and connack.reason_code == 0
    raw.connack = connack
    return raw




def _publishes(raw: Any, count: int) -> list[Publish]:
    out = []
    for _ in range(count):
        packet = raw.recv()
        assert isinstance(packet, Publish), packet
        out.append(packet)
    return out


def test_connack_advertises_the_configured_maximum(
    broker_factory: Factory, raw_factory: Factory, broker: Any
) -> None:
    assert _v5(raw_factory, "adv").connack.properties[Property.TOPIC_ALIAS_MAXIMUM] == 10
    small = broker_factory(topic_alias_maximum=3)
    raw = _v5(raw_factory, "adv3", port=small.port)
    assert raw.connack.properties[Property.TOPIC_ALIAS_MAXIMUM] == 3


def test_inbound_alias_is_set_used_and_remapped(raw_factory: Factory) -> None:
    sub = _v5(raw_factory, "in-sub")
    sub.subscribe("in/#", 0)
    pub = _v5(raw_factory, "in-pub")
    pub.send(Publish("in/a", b"1", properties={ALIAS: 1}))
    pub.send(Publish("", b"2", properties={ALIAS: 1}))
    pub.send(Publish("in/b", b"3", properties={ALIAS: 1}))
    pub.send(Publish("", b"4", properties={ALIAS: 1}))
    pub.send(Publish("", b"5", 1, packet_id=7, properties={ALIAS: 1}))
    received = _publishes(sub, 5)
    got = [(p.topic, p.payload) for p in received]
    assert got == [("in/a", b"1"), ("in/a", b"2"), ("in/b", b"3"), ("in/b", b"4"),
                   ("in/b", b"5")]
    assert all(ALIAS not in p.properties for p in received)  # a hop property
    ack = pub.recv()
    assert ack.packet_id == 7 and ack.reason_code == 0


def test_alias_above_the_maximum_is_disconnected_with_0x94(
    broker_factory: Factory, raw_factory: Factory, broker: Any
) -> None:
    small = broker_factory(topic_alias_maximum=2)
    raw = _v5(raw_factory, "over", port=small.port)
    raw.send(Publish("ok/t", b"x", properties={ALIAS: 2}))
    raw.send(Publish("ok/t", b"x", properties={ALIAS: 3}))
    packets = raw.packets_until_close()
    assert packets == [Disconnect(0x94)]


def test_alias_with_maximum_0_is_disconnected_with_0x94(
    broker_factory: Factory, raw_factory: Factory, broker: Any
) -> None:
    none = broker_factory(topic_alias_maximum=0)
    raw = _v5(raw_factory, "zero", port=none.port)
    assert raw.connack.properties[Property.TOPIC_ALIAS_MAXIMUM] == 0
    raw.send(Publish("ok/t", b"x", properties={ALIAS: 1}))
    assert raw.packets_until_close() == [Disconnect(0x94)]


def test_unknown_alias_is_a_protocol_error(raw_factory: Factory) -> None:
    raw = _v5(raw_factory, "unknown")
    raw.send(Publish("", b"x", properties={ALIAS: 4}))
    assert raw.packets_until_close() == [Disconnect(0x82)]


def test_inbound_aliases_belong_to_one_connection(raw_factory: Factory) -> None:
    first = _v5(raw_factory, "conn-a")
    first.send(Publish("per/conn", b"x", properties={ALIAS: 1}))
    other = _v5(raw_factory, "conn-b")
    other.send(Publish("", b"x", properties={ALIAS: 1}))
    assert other.packets_until_close() == [Disconnect(0x82)]
    first.send(Disconnect())
    assert first.packets_until_close() == []
    again = _v5(raw_factory, "conn-a")
    again.send(Publish("", b"x", properties={ALIAS: 1}))
    assert again.packets_until_close() == [Disconnect(0x82)]


def test_outbound_aliases_up_to_the_clients_maximum(raw_factory: Factory) -> None:
    sub = _v5(raw_factory, "out-sub", TOPIC_ALIAS_MAXIMUM=2)
    sub.subscribe("out/#", 1)
    pub = _v5(raw_factory, "out-pub")
    pub.send(Publish("out/a", b"1"))
    pub.send(Publish("out/a", b"2", 1, packet_id=1))
    pub.send(Publish("out/b", b"3"))
    pub.send(Publish("out/c", b"4"))
    pub.send(Publish("out/b", b"5", 1, packet_id=2))
    pub.send(Publish("out/c", b"6"))
    got = [(p.topic, p.properties.get(ALIAS), p.payload) for p in _publishes(sub, 6)]
    assert got == [
        ("out/a", 1, b"1"), ("", 1, b"2"), ("out/b", 2, b"3"), ("out/c", None, b"4"),
        ("", 2, b"5"), ("out/c", None, b"6"),
    ]


def test_outbound_aliases_are_per_connection_and_shared_frames_stay_plain(
    raw_factory: Factory,
) -> None:
    aliased = _v5(raw_factory, "al-yes", TOPIC_ALIAS_MAXIMUM=5)
    plain = _v5(raw_factory, "al-no")
    v3 = raw_factory(level=4)
    assert isinstance(v3.connect("al-v3", 4), ConnAck)
    for raw in (aliased, plain, v3):
        raw.subscribe("fan/t", 0)
    pub = _v5(raw_factory, "al-pub")
    for payload in (b"1", b"2"):
        pub.send(Publish("fan/t", payload))
    assert [(p.topic, p.properties.get(ALIAS)) for p in _publishes(aliased, 2)] == [
        ("fan/t", 1), ("", 1)]
    for raw in (plain, v3):
        assert [(p.topic, p.properties) for p in _publishes(raw, 2)] == [
            ("fan/t", {}), ("fan/t", {})]
    # a new connection of the aliased client starts without aliases
    aliased.send(Disconnect())
    aliased.packets_until_close()
    back = _v5(raw_factory, "al-yes", TOPIC_ALIAS_MAXIMUM=5)
    back.subscribe("fan/t", 0)
    pub.send(Publish("fan/t", b"3"))
    packet = _publishes(back, 1)[0]
    assert (packet.topic, packet.properties.get(ALIAS)) == ("fan/t", 1)
