"""QoS 2 across kill -9: both directions keep their packet ids and phase, so the flows
finish after the restart without a duplicate."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from storage_helpers import (
    BACKENDS,
    BrokerProcess,
    Raw,
    RedisServer,
    broker_config,
    free_port,
    storage_table,
)

from midge.codec import PROTOCOL_5, PubComp, Publish, PubRec, PubRel


@pytest.fixture(params=BACKENDS)
def broker(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[BrokerProcess]:
    backend = request.param
    pytest.importorskip(f"midge_storage_{backend}")
    redis = None
    if backend == "redis":
        redis = RedisServer(tmp_path / "redis")
        redis.start()
    port = free_port()
    process = BrokerProcess(broker_config(tmp_path, port, storage_table(backend, tmp_path, redis)),
                            port, tmp_path / "broker.log")
    process.start()
    yield process
    if process.proc is not None and process.proc.poll() is None:
        process.stop()
    if redis is not None:
        redis.stop()


def test_an_inbound_pubrel_after_a_restart_is_answered(broker: BrokerProcess) -> None:
    sub = Raw(broker.port, PROTOCOL_5)
    sub.connect("watch", False, expiry=600)
    sub.subscribe("q2/#", 2)
    sub.close()
    pub = Raw(broker.port, PROTOCOL_5)
    pub.connect("pub2", False, expiry=600)
    pub.send(Publish("q2/a", b"once", 2, packet_id=42))
    assert pub.recv() == PubRec(42)
    pub.close()
    broker.kill()
    broker.start()
    pub = Raw(broker.port, PROTOCOL_5)
    assert pub.connect("pub2", False, expiry=600).session_present
    # the id is still known: 0x00, not 0x92 Packet Identifier not found
    pub.send(PubRel(42))
    assert pub.recv() == PubComp(42)
    # and the id is free again: a new message with it is routed, not taken as a resend
    pub.send(Publish("q2/b", b"next", 2, packet_id=42))
    assert pub.recv() == PubRec(42)
    pub.send(PubRel(42))
    assert pub.recv() == PubComp(42)
    pub.close()
    sub = Raw(broker.port, PROTOCOL_5)
    assert sub.connect("watch", False, expiry=600).session_present
    payloads = []
    for packet in sub.packets(1.5):
        if isinstance(packet, Publish):
            payloads.append(packet.payload)
            sub.send(PubRec(packet.packet_id))
        elif isinstance(packet, PubRel):
            sub.send(PubComp(packet.packet_id))
    sub.close()
    assert payloads == [b"once", b"next"]


def test_an_outbound_qos2_delivery_resumes_in_its_phase(broker: BrokerProcess) -> None:
    sub = Raw(broker.port, PROTOCOL_5)
    sub.connect("phase", False, expiry=600)
    sub.subscribe("p/#", 2)
    pub = Raw(broker.port, PROTOCOL_5)
    pub.connect("pubp", True)
    for n, topic in enumerate(("p/released", "p/sent"), start=1):
        pub.send(Publish(topic, topic.encode(), 2, packet_id=n))
        assert pub.recv() == PubRec(n)
        pub.send(PubRel(n))
        assert pub.recv() == PubComp(n)
    first = sub.recv()
    second = sub.recv()
    assert isinstance(first, Publish) and isinstance(second, Publish)
    sub.send(PubRec(first.packet_id))  # the first reaches its release phase
    assert sub.recv() == PubRel(first.packet_id)
    sub.close()
    pub.close()
    broker.kill()
    broker.start()
    sub = Raw(broker.port, PROTOCOL_5)
    assert sub.connect("phase", False, expiry=600).session_present
    got = [sub.recv(), sub.recv()]
    # the released one comes back as PUBREL with its id, the other as PUBLISH DUP with its id
    assert got[0] == PubRel(first.packet_id)
    again = got[1]
    assert isinstance(again, Publish) and again.dup and again.packet_id == second.packet_id
    assert again.payload == b"p/sent"
    sub.close()
