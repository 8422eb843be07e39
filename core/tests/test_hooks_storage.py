"""The storage_backend hook and durable acknowledgements, over real sockets.

A storage whose commits the test holds back shows what waits for a commit (the CONNACK
of a persistent session, SUBACK, the PUBACK of a message queued for a persistent
session) and what does not (clean sessions, QoS 0, QoS 1 to an online clean subscriber).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import anyio
import pytest
from conftest import RawClient, RunningBroker

from midge import hookimpl
from midge.codec import ConnAck, PubAck, Publish, SubAck, Subscribe, Subscription
from midge.codec import Connect as ConnectPacket
from midge.records import Batch
from midge.storage_contract import MemoryStorage


class GatedStorage(MemoryStorage):
    """Commits wait until the test opens the gate."""

    def __init__(self) -> None:
        super().__init__()
        self.gate: anyio.Event | None = None
        self.batches: list[Batch] = []

    def close_gate(self) -> None:
        self.gate = anyio.Event()

    def open_gate(self) -> None:
        if self.gate is not None:
            self.gate.set()

    async def commit(self, batch: Batch) -> None:
        if self.gate is not None:
            await self.gate.wait()
        await super().commit(batch)
        self.batches.append(batch)


@pytest.fixture
def storage() -> GatedStorage:
    return GatedStorage()


class Provider:
    """A storage plugin as a third party writes one: the hook, returning its backend."""

    def __init__(self, storage: GatedStorage) -> None:
        self.storage = storage

    @hookimpl
    def storage_backend(self) -> GatedStorage:
        return self.storage


@pytest.fixture
def plugins(storage: GatedStorage) -> list[tuple[str, Any]]:
    return [("storage", Provider(storage))]


def _silent(raw: RawClient, wait: float = 0.4) -> bool:
    try:
        raw.recv(wait)
    except AssertionError:
        return True
    return False


def test_storage_backend_is_opened_and_acks_wait_for_their_commit(
        broker: RunningBroker, raw_factory: Callable[..., RawClient],
        storage: GatedStorage) -> None:
    assert broker.broker.storage is not None
    broker.call(storage.close_gate)
    sub = raw_factory()
    sub.send(ConnectPacket("keeper", 4, clean_start=False))
    assert _silent(sub), "CONNACK of a persistent session came before its commit"
    broker.call(storage.open_gate)
    assert sub.recv() == ConnAck(0, False)
    broker.call(storage.close_gate)
    sub.send(Subscribe(1, [Subscription("q/#", 1)]))
    assert _silent(sub), "SUBACK came before its commit"
    broker.call(storage.open_gate)
    assert sub.recv() == SubAck(1, [1])
    sub.close()

    broker.call(storage.close_gate)
    pub = raw_factory()
    assert pub.connect("pub") == ConnAck(0, False)  # a clean session costs nothing
    pub.send(Publish("q/1", b"kept", 1, packet_id=5))
    assert _silent(pub), "PUBACK for a message queued to a persistent session came early"
    broker.call(storage.open_gate)
    assert pub.recv() == PubAck(5)
    stored = [b for b in storage.batches if b.deliveries]
    assert stored and any(d is not None and d.message.payload == b"kept"
                          for b in stored for _, d in b.delivery_records())


def test_what_outlives_no_connection_costs_no_commit(
        broker: RunningBroker, raw_factory: Callable[..., RawClient],
        storage: GatedStorage) -> None:
    broker.call(storage.close_gate)
    sub = raw_factory()
    assert sub.connect("clean-sub") == ConnAck(0, False)
    sub.subscribe("live/#", 1)
    pub = raw_factory()
    assert pub.connect("clean-pub") == ConnAck(0, False)
    pub.send(Publish("live/1", b"now", 1, packet_id=9))
    pub.send(Publish("live/0", b"zero", 0))
    assert pub.recv() == PubAck(9)  # no commit needed, none awaited
    got = [sub.recv(), sub.recv()]
    assert {p.payload for p in got if isinstance(p, Publish)} == {b"now", b"zero"}
    broker.call(storage.open_gate)
    assert storage.commits == 0


def test_a_failing_commit_is_retried_and_holds_its_ack(
        broker: RunningBroker, raw_factory: Callable[..., RawClient],
        storage: GatedStorage) -> None:
    sub = raw_factory()
    assert sub.connect("keeper2", clean_start=False) == ConnAck(0, False)
    sub.subscribe("f/#", 1)
    sub.close()
    storage.fail = OSError("disk full")
    pub = raw_factory()
    pub.connect("pub2")
    pub.send(Publish("f/1", b"x", 1, packet_id=3))
    assert _silent(pub, 0.6)
    storage.fail = None
    assert pub.recv(5) == PubAck(3)
