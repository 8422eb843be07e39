"""MQTT 3.1.1 conformance: PUBLISH, retained messages, delivery QoS (sections 3.3, 3.8.4).

Over real loopback sockets against a real broker; each test names the normative
statements it checks with ``mqtt311``.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from midge import hookimpl
from midge.codec import PubAck, Publish, PubRec

try:
    from v311_helpers import (
        V31,
        V311,
        Factory,
        assert_rejected,
        expect,
        nothing,
        online,
        publish_bytes,
        publish_qos,
        publishes,
        subscribe,
    )
except ImportError:  # pragma: no cover - core/tests/conformance made a package
    from conformance.v311_helpers import (  # type: ignore[no-redef]
        V31,
        V311,
        Factory,
        assert_rejected,
        expect,
        nothing,
        online,
        publish_bytes,
        publish_qos,
        publishes,
        subscribe,
    )

LEVELS = pytest.mark.parametrize("level", [V311, V31], ids=["3.1.1", "3.1"])


def drain(raw: Any, quiet: float = 0.5, limit: float = 20.0) -> list[Publish]:
    """Every PUBLISH until ``quiet`` seconds pass without one (at most ``limit`` s)."""
    out: list[Publish] = []
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        try:
            packet = raw.recv(quiet)
        except AssertionError as exc:
            if "no packet received" in str(exc):
                break
            raise
        assert isinstance(packet, Publish), packet
        if packet.qos == 1:
            raw.send(PubAck(packet.packet_id))
        out.append(packet)
    return out


# -- DUP and QoS in the fixed header ------------------------------------------------------


@pytest.mark.mqtt311("MQTT-3.3.1-3", "MQTT-4.3.2-1")
def test_an_incoming_dup_flag_is_not_propagated(raw_factory: Factory) -> None:
    sub = online(raw_factory, client_id="dupsub")
    subscribe(sub, ("dup/t", 1))
    pub = online(raw_factory, client_id="duppub")
    pub.send(publish_bytes("dup/t", b"first try", byte0=0x3A, packet_id=7))  # QoS 1, DUP
    assert pub.recv() == PubAck(7)
    delivered = expect(sub, Publish)
    assert (delivered.payload, delivered.qos, delivered.dup) == (b"first try", 1, False)


@pytest.mark.mqtt311("MQTT-3.3.1-2", "MQTT-4.3.1-1")
def test_qos_0_deliveries_have_dup_0(raw_factory: Factory) -> None:
    sub = online(raw_factory, client_id="dup0sub")
    subscribe(sub, ("dup0/t", 0))
    pub = online(raw_factory, client_id="dup0pub")
    pub.send(publish_bytes("dup0/t", b"resent", byte0=0x3C, packet_id=8))  # QoS 2, DUP
    assert pub.recv() == PubRec(8)
    delivered = expect(sub, Publish)
    assert (delivered.payload, delivered.qos, delivered.dup) == (b"resent", 0, False)


@pytest.mark.mqtt311("MQTT-3.3.1-4", "MQTT-4.8.0-1")
@LEVELS
def test_a_publish_with_qos_3_closes_the_connection(raw_factory: Factory, level: int) -> None:
    raw = online(raw_factory, client_id="qos3", level=level)
    assert assert_rejected(raw, publish_bytes("q/t", b"x", byte0=0x36, packet_id=1)) == []


# -- RETAIN -------------------------------------------------------------------------------


@pytest.mark.mqtt311("MQTT-3.3.1-5", "MQTT-3.3.1-8")
def test_a_retained_message_is_stored_with_its_qos(raw_factory: Factory) -> None:
    pub = online(raw_factory, client_id="rpub")
    publish_qos(pub, "ret/q1", b"replaced", 2, retain=True)
    publish_qos(pub, "ret/q1", b"kept at 1", 1, retain=True)  # replaces it, QoS included
    late = online(raw_factory, client_id="rlate")
    assert subscribe(late, ("ret/q1", 2)) == [2]
    [message] = publishes(late, 1)
    assert (message.payload, message.qos, message.retain) == (b"kept at 1", 1, True)
    nothing(late)


@pytest.mark.mqtt311("MQTT-3.3.1-6", "MQTT-3.3.1-8")
@LEVELS
def test_retained_messages_sent_on_subscribe(raw_factory: Factory, level: int) -> None:
    pub = online(raw_factory, client_id="rpub6")
    topics = [f"many/{i}/x" for i in range(50)]
    for topic in topics:
        pub.send(Publish(topic, topic.encode(), 0, True))
    pub.send(Publish("many/fence", b"", 0, False))  # not retained
    publish_qos(pub, "other/0", b"no match", 1, retain=True)
    late = online(raw_factory, client_id="rlate6", level=level)
    subscribe(late, ("many/+/x", 0))
    got = drain(late, quiet=0.4)
    assert sorted(p.topic for p in got) == sorted(topics)
    assert all(p.retain and p.payload == p.topic.encode() for p in got)


@pytest.mark.mqtt311("MQTT-3.3.1-6")
@pytest.mark.parametrize("qos", [0, 1])
def test_retained_messages_beyond_1000_are_all_sent_on_subscribe(
    raw_factory: Factory, qos: int
) -> None:
    count = 1500
    pub = online(raw_factory, client_id="bigpub")
    pub.send(b"".join(
        publish_bytes(f"big/{i}", b"r%d" % i, byte0=0x31) for i in range(count)
    ))
    publish_qos(pub, "big/last", b"done", 1, retain=True)  # all the above are in by now
    late = online(raw_factory, client_id="biglate")
    subscribe(late, ("big/#", qos))
    got = drain(late, quiet=1.0)
    assert len({p.topic for p in got}) == count + 1


@pytest.mark.mqtt311("MQTT-3.3.1-7")
def test_a_qos_0_retained_message_replaces_the_retained_one(raw_factory: Factory) -> None:
    pub = online(raw_factory, client_id="r7pub")
    publish_qos(pub, "ret/r7", b"old at 1", 1, retain=True)
    pub.send(Publish("ret/r7", b"new at 0", 0, True))
    publish_qos(pub, "ret/fence", b"x", 1)  # the QoS 0 publish is processed by now
    late = online(raw_factory, client_id="r7late")
    subscribe(late, ("ret/r7", 1))
    [message] = publishes(late, 1)
    assert (message.payload, message.qos) == (b"new at 0", 0)
    nothing(late)


@pytest.mark.mqtt311("MQTT-3.3.1-9")
@LEVELS
def test_live_deliveries_have_retain_0(raw_factory: Factory, level: int) -> None:
    sub = online(raw_factory, client_id="r9sub", level=level)
    subscribe(sub, ("ret/r9", 1))
    pub = online(raw_factory, client_id="r9pub")
    publish_qos(pub, "ret/r9", b"live", 1, retain=True)
    [message] = publishes(sub, 1)
    assert (message.payload, message.retain) == (b"live", False)


@pytest.mark.mqtt311("MQTT-3.3.1-10", "MQTT-3.3.1-11")
def test_an_empty_retained_publish_is_delivered_and_clears(raw_factory: Factory) -> None:
    pub = online(raw_factory, client_id="r10pub")
    publish_qos(pub, "ret/r10", b"to clear", 1, retain=True)
    sub = online(raw_factory, client_id="r10sub")
    subscribe(sub, ("ret/r10", 1))
    assert publishes(sub, 1)[0].payload == b"to clear"
    publish_qos(pub, "ret/r10", b"", 1, retain=True)
    [cleared] = publishes(sub, 1)  # processed as normal by the server
    assert (cleared.payload, cleared.retain) == (b"", False)
    late = online(raw_factory, client_id="r10late")
    subscribe(late, ("ret/#", 1))
    nothing(late)


@pytest.mark.mqtt311("MQTT-3.3.1-11")
def test_an_empty_retained_message_is_never_stored(raw_factory: Factory) -> None:
    pub = online(raw_factory, client_id="r11pub")
    publish_qos(pub, "ret/r11", b"", 1, retain=True)
    late = online(raw_factory, client_id="r11late")
    subscribe(late, ("ret/r11", 1))
    nothing(late)


@pytest.mark.mqtt311("MQTT-3.3.1-12")
def test_a_non_retained_publish_keeps_the_retained_message(raw_factory: Factory) -> None:
    pub = online(raw_factory, client_id="r12pub")
    publish_qos(pub, "ret/r12", b"kept", 1, retain=True)
    publish_qos(pub, "ret/r12", b"passing", 1, retain=False)
    publish_qos(pub, "ret/r12b", b"never kept", 1, retain=False)
    late = online(raw_factory, client_id="r12late")
    subscribe(late, ("ret/+", 1))
    [message] = publishes(late, 1)
    assert (message.topic, message.payload) == ("ret/r12", b"kept")
    nothing(late)


# -- topic names --------------------------------------------------------------------------


@pytest.mark.mqtt311("MQTT-3.3.2-2", "MQTT-4.7.1-1", "MQTT-4.8.0-1")
@pytest.mark.parametrize("topic", ["a/+", "a/#", "+", "#", "a+b", "a/b#"])
def test_a_topic_name_with_a_wildcard_closes_the_connection(
    raw_factory: Factory, topic: str
) -> None:
    raw = online(raw_factory, client_id="wild")
    assert assert_rejected(raw, publish_bytes(topic, b"x")) == []


@pytest.mark.mqtt311("MQTT-3.3.2-3")
def test_deliveries_carry_the_published_topic_name(raw_factory: Factory) -> None:
    sub = online(raw_factory, client_id="namesub")
    subscribe(sub, ("name/+/c", 0), ("name/#", 0))
    pub = online(raw_factory, client_id="namepub")
    pub.send(Publish("name/b/c", b"one"))
    pub.send(Publish("name/x", b"two"))
    assert [(p.topic, p.payload) for p in publishes(sub, 2)] == [
        ("name/b/c", b"one"), ("name/x", b"two")]


# -- responses and delivery QoS -----------------------------------------------------------


@pytest.mark.mqtt311("MQTT-3.3.4-1", "MQTT-4.3.2-2", "MQTT-4.3.3-2", "MQTT-2.3.1-6")
@LEVELS
def test_each_qos_gets_its_response(raw_factory: Factory, level: int) -> None:
    raw = online(raw_factory, client_id="resp", level=level)
    raw.send(Publish("resp/t", b"0", 0))
    nothing(raw, 0.2)
    raw.send(Publish("resp/t", b"1", 1, packet_id=0x1234))
    assert raw.recv() == PubAck(0x1234)
    raw.send(Publish("resp/t", b"2", 2, packet_id=0xFFFF))
    assert raw.recv() == PubRec(0xFFFF)


@pytest.mark.mqtt311("MQTT-3.3.5-1")
@pytest.mark.parametrize(("published", "expected"), [(2, 2), (1, 1), (0, 0)])
def test_overlapping_subscriptions_get_one_copy_at_the_highest_qos(
    raw_factory: Factory, published: int, expected: int
) -> None:
    sub = online(raw_factory, client_id="ovsub")
    assert subscribe(sub, ("ov/#", 0), ("ov/+", 2), ("ov/a", 1)) == [0, 2, 1]
    pub = online(raw_factory, client_id="ovpub")
    publish_qos(pub, "ov/a", b"once", published)
    [message] = publishes(sub, 1)
    assert (message.payload, message.qos) == (b"once", expected)
    nothing(sub)  # midge's choice: no further copies for the other subscriptions


@pytest.mark.mqtt311("MQTT-3.8.4-6", "MQTT-3.8.4-5")
@pytest.mark.parametrize("granted", [0, 1, 2])
def test_the_delivery_qos_is_the_lower_of_publish_and_grant(
    raw_factory: Factory, granted: int
) -> None:
    sub = online(raw_factory, client_id=f"min{granted}")
    assert subscribe(sub, ("minq/t", granted)) == [granted]
    pub = online(raw_factory, client_id="minpub")
    for qos in (0, 1, 2):
        publish_qos(pub, "minq/t", b"%d" % qos, qos, packet_id=qos + 1)
    got = publishes(sub, 3)
    assert [(p.payload, p.qos) for p in got] == [
        (b"%d" % qos, min(qos, granted)) for qos in (0, 1, 2)]


class DenyWrites:
    """Allows every connection; refuses publishing to ``deny/...``."""

    @hookimpl
    def on_connect_authenticate(self, client: Any, packet: Any) -> bool:
        return True

    @hookimpl
    def on_acl_check(self, client: Any, topic: str, write: bool) -> bool:
        return not (write and topic.startswith("deny/"))


@pytest.mark.mqtt311("MQTT-3.3.5-2")
def test_an_unauthorized_publish_is_acknowledged_and_dropped(
    broker_factory: Factory, raw_factory: Factory
) -> None:
    running = broker_factory(allow_anonymous=False, plugins=[("deny", DenyWrites())])
    sub = online(raw_factory, running.port, client_id="denysub")
    subscribe(sub, ("deny/#", 2))
    pub = online(raw_factory, running.port, client_id="denypub")
    pub.send(Publish("deny/t", b"q1", 1, packet_id=1))
    assert pub.recv() == PubAck(1)
    pub.send(Publish("deny/t", b"q2", 2, packet_id=2))
    assert pub.recv() == PubRec(2)
    nothing(sub)
