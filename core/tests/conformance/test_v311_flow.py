"""MQTT 3.1.1 conformance: packet identifiers, the QoS 1 and 2 flows in both directions,
re-delivery on reconnect and message ordering (sections 2.3.1, 3.3.1.1, 4.3, 4.4, 4.6).

Over real loopback sockets against a real broker; each test names the normative
statements it checks with ``mqtt311``.
"""

from __future__ import annotations

import socket

import pytest

from midge.codec import PubAck, PubComp, Publish, PubRec, PubRel

try:
    from v311_helpers import (
        V31,
        V311,
        Factory,
        assert_rejected,
        expect,
        frame,
        nothing,
        online,
        publish_bytes,
        publish_qos,
        publishes,
        reconnect,
        string,
        subscribe,
        subscribe_bytes,
        unsubscribe_bytes,
    )
except ImportError:  # pragma: no cover - core/tests/conformance made a package
    from conformance.v311_helpers import (  # type: ignore[no-redef]
        V31,
        V311,
        Factory,
        assert_rejected,
        expect,
        frame,
        nothing,
        online,
        publish_bytes,
        publish_qos,
        publishes,
        reconnect,
        string,
        subscribe,
        subscribe_bytes,
        unsubscribe_bytes,
    )

LEVELS = pytest.mark.parametrize("level", [V311, V31], ids=["3.1.1", "3.1"])


# -- packet identifiers -------------------------------------------------------------------


@pytest.mark.mqtt311("MQTT-2.3.1-1", "MQTT-4.8.0-1")
@pytest.mark.parametrize("data", [
    pytest.param(publish_bytes("pid/t", b"x", byte0=0x32, packet_id=0), id="publish-qos1"),
    pytest.param(publish_bytes("pid/t", b"x", byte0=0x34, packet_id=0), id="publish-qos2"),
    pytest.param(subscribe_bytes(("pid/t", 0), packet_id=0), id="subscribe"),
    pytest.param(unsubscribe_bytes("pid/t", packet_id=0), id="unsubscribe"),
])
def test_packet_identifier_0_closes_the_connection(raw_factory: Factory, data: bytes) -> None:
    raw = online(raw_factory, client_id="pid0")
    assert assert_rejected(raw, data) == []


@pytest.mark.mqtt311("MQTT-2.3.1-1", "MQTT-2.3.1-4", "MQTT-4.3.2-1")
def test_deliveries_in_flight_have_distinct_nonzero_packet_ids(raw_factory: Factory) -> None:
    sub = online(raw_factory, client_id="pids")
    subscribe(sub, ("pids/t", 2))
    pub = online(raw_factory, client_id="pidspub")
    for index in range(10):
        publish_qos(pub, "pids/t", b"%d" % index, 1 + index % 2, packet_id=index + 1)
    got = publishes(sub, 10, ack=False)
    ids = [p.packet_id for p in got]
    assert 0 not in ids and len(set(ids)) == 10, ids
    assert all(not p.dup for p in got)


@pytest.mark.mqtt311("MQTT-2.3.1-5", "MQTT-4.3.1-1")
def test_a_qos_0_delivery_has_no_packet_identifier(raw_factory: Factory) -> None:
    sub = online(raw_factory, client_id="q0bytes")
    subscribe(sub, ("q0/t", 2))
    pub = online(raw_factory, client_id="q0pub")
    pub.send(Publish("q0/t", b"payload", 0))
    expected = frame(0x30, string("q0/t"), b"payload")
    sub.sock.settimeout(3)
    data = b""
    for _ in range(len(expected) + 1):  # bounded: at least one byte per read
        chunk = sub.sock.recv(100)
        data += chunk
        if not chunk or len(data) >= len(expected):
            break
    # exactly: fixed header with QoS 0 and DUP 0, topic, payload; nothing in between
    assert data == expected


# -- QoS 1 --------------------------------------------------------------------------------


@pytest.mark.mqtt311("MQTT-4.3.2-2")
def test_a_qos_1_packet_id_reused_after_puback_is_a_new_message(raw_factory: Factory) -> None:
    sub = online(raw_factory, client_id="q1sub")
    subscribe(sub, ("q1/t", 1))
    pub = online(raw_factory, client_id="q1pub")
    publish_qos(pub, "q1/t", b"one", 1, packet_id=42)
    pub.send(publish_bytes("q1/t", b"two", byte0=0x3A, packet_id=42))  # DUP set
    assert pub.recv() == PubAck(42)
    assert [p.payload for p in publishes(sub, 2)] == [b"one", b"two"]


@pytest.mark.mqtt311("MQTT-4.3.2-1")
def test_a_qos_1_delivery_stays_unacknowledged_until_puback(
    broker_factory: Factory, raw_factory: Factory
) -> None:
    running = broker_factory(max_inflight_messages=1)
    sub = online(raw_factory, running.port, client_id="win1")
    subscribe(sub, ("win/t", 1))
    pub = online(raw_factory, running.port, client_id="winpub")
    for index in range(3):
        publish_qos(pub, "win/t", b"%d" % index, 1, packet_id=index + 1)
    first = expect(sub, Publish)
    nothing(sub)  # the window holds one unacknowledged delivery
    sub.send(PubAck(first.packet_id % 65535 + 1))  # not its packet id
    nothing(sub, 0.2)
    sub.send(PubAck(first.packet_id))
    second = expect(sub, Publish)
    assert (first.payload, second.payload) == (b"0", b"1")


# -- QoS 2 --------------------------------------------------------------------------------


@pytest.mark.mqtt311("MQTT-4.3.3-2", "MQTT-2.3.1-6")
@pytest.mark.parametrize("dup_flag", [0x08, 0x00], ids=["dup-1", "dup-0"])
def test_a_qos_2_resend_before_pubrel_is_not_delivered_twice(
    raw_factory: Factory, dup_flag: int
) -> None:
    sub = online(raw_factory, client_id="q2sub")
    subscribe(sub, ("q2/t", 2))
    pub = online(raw_factory, client_id="q2pub")
    pub.send(Publish("q2/t", b"exactly once", 2, packet_id=9))
    assert pub.recv() == PubRec(9)
    pub.send(publish_bytes("q2/t", b"exactly once", byte0=0x34 | dup_flag, packet_id=9))
    assert pub.recv() == PubRec(9)
    pub.send(PubRel(9))
    assert pub.recv() == PubComp(9)
    assert [p.payload for p in publishes(sub, 1)] == [b"exactly once"]
    nothing(sub)
    # after PUBCOMP the packet id starts a new message
    pub.send(Publish("q2/t", b"next", 2, packet_id=9))
    assert pub.recv() == PubRec(9)
    assert [p.payload for p in publishes(sub, 1)] == [b"next"]


@pytest.mark.mqtt311("MQTT-4.3.3-1", "MQTT-2.3.1-6")
def test_the_broker_as_qos_2_sender_releases_with_the_same_id(raw_factory: Factory) -> None:
    sub = online(raw_factory, client_id="q2out")
    subscribe(sub, ("q2out/t", 2))
    pub = online(raw_factory, client_id="q2outpub")
    publish_qos(pub, "q2out/t", b"x", 2)
    delivery = expect(sub, Publish)
    assert (delivery.qos, delivery.dup) == (2, False)
    nothing(sub, 0.2)  # unacknowledged: nothing more until PUBREC
    sub.send(PubRec(delivery.packet_id))
    assert sub.recv() == PubRel(delivery.packet_id)
    sub.send(PubComp(delivery.packet_id))
    nothing(sub)


@pytest.mark.mqtt311("MQTT-4.3.3-1", "MQTT-4.4.0-1")
def test_after_pubrel_only_pubrel_is_resent_never_the_publish(raw_factory: Factory) -> None:
    sub = online(raw_factory, client_id="relsub", clean=False)
    subscribe(sub, ("rel/t", 2))
    pub = online(raw_factory, client_id="relpub")
    publish_qos(pub, "rel/t", b"x", 2)
    delivery = expect(sub, Publish)
    sub.send(PubRec(delivery.packet_id))
    assert sub.recv() == PubRel(delivery.packet_id)
    sub.close()  # PUBCOMP never sent
    back = reconnect(raw_factory, "relsub")
    assert back.recv() == PubRel(delivery.packet_id)
    back.send(PubComp(delivery.packet_id))
    nothing(back)


# -- re-delivery on reconnect, order ------------------------------------------------------


@pytest.mark.mqtt311("MQTT-4.4.0-1", "MQTT-3.3.1-1", "MQTT-2.3.1-4", "MQTT-4.6.0-1")
@LEVELS
def test_unacknowledged_deliveries_are_resent_with_dup_and_their_ids(
    raw_factory: Factory, level: int
) -> None:
    sub = online(raw_factory, client_id="resend", level=level, clean=False)
    subscribe(sub, ("resend/t", 2))
    pub = online(raw_factory, client_id="resendpub")
    for index in range(4):
        publish_qos(pub, "resend/t", b"%d" % index, 1 + index % 2, packet_id=index + 1)
    first = publishes(sub, 4, ack=False)
    sub.close()
    back = reconnect(raw_factory, "resend", level)
    again = publishes(back, 4)
    assert [(p.packet_id, p.payload, p.qos) for p in again] == [
        (p.packet_id, p.payload, p.qos) for p in first]
    assert all(p.dup for p in again) and not any(p.dup for p in first)


@pytest.mark.mqtt311("MQTT-4.6.0-5", "MQTT-4.6.0-6")
@pytest.mark.parametrize("qos", [0, 1, 2])
def test_messages_from_one_client_arrive_in_the_order_sent(
    raw_factory: Factory, qos: int
) -> None:
    sub = online(raw_factory, client_id="ordsub")
    subscribe(sub, ("ord/t", 2))
    pub = online(raw_factory, client_id="ordpub")
    count = 200
    pub.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    # pipelined: every PUBLISH sent before any acknowledgement is read
    pub.send(b"".join(
        publish_bytes("ord/t", b"%d" % i, byte0=0x30 | qos << 1,
                      packet_id=(i + 1) if qos else None)
        for i in range(count)
    ))
    got = publishes(sub, count, timeout=15)
    assert [int(p.payload) for p in got] == list(range(count))
    assert {p.qos for p in got} == {qos}
