"""Restore at scale: 100,000 retained messages and 10,000 sessions (each with a
subscription and a queued message) come back on every backend, in bounded time."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest
from storage_helpers import BACKENDS, RedisServer

from midge import Broker
from midge.codec import Property, Subscription
from midge.config import ListenerSettings, Settings
from midge.records import (
    Batch,
    DeliveryRecord,
    MessageRecord,
    SessionRecord,
    Storage,
    SubscriptionRecord,
)
from midge.storage_contract import StorageProvider

RETAINED = 100_000
SESSIONS = 10_000
#: generous: the figures for the README come from the log line this test prints
BOUND_SECONDS = 120

log = logging.getLogger(__name__)


@pytest.fixture
def make_storage(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[object]:
    backend = request.param
    module = pytest.importorskip(f"midge_storage_{backend}")
    if backend == "sqlite":
        yield lambda: module.SQLiteStorage(tmp_path / "scale.db")
    elif backend == "lmdb":
        yield lambda: module.LMDBStorage(tmp_path / "scale-lmdb")
    else:
        server = RedisServer(tmp_path / "redis")
        server.start()
        try:
            yield lambda: module.RedisStorage(server.url, prefix="scale:")
        finally:
            server.stop()


@pytest.mark.parametrize("make_storage", BACKENDS, indirect=True)
def test_restore_of_100000_retained_and_10000_sessions(make_storage: object) -> None:
    factory = make_storage
    assert callable(factory)
    wall = time.time()

    async def main() -> tuple[float, int, int, int]:
        storage: Storage = factory()
        await storage.open()
        seq = 1
        for start in range(0, RETAINED, 10_000):
            batch = Batch(seq)
            seq += 1
            for n in range(start, start + 10_000):
                topic = f"fleet/{n % 100}/dev{n}/state"
                batch.retained[topic] = MessageRecord(
                    topic, b"%d" % n, 1, True, {Property.USER_PROPERTY: [("n", str(n))]},
                    "dev", wall)
            await storage.commit(batch)
        batch = Batch(seq)
        for n in range(SESSIONS):
            cid = f"client-{n}"
            batch.sessions[cid] = SessionRecord(cid, 86400, wall - 5, None, 4)
            batch.subscriptions[(cid, f"cmd/{n}")] = SubscriptionRecord(
                cid, Subscription(f"cmd/{n}", 1))
            batch.deliveries[(cid, n + 1)] = DeliveryRecord(
                cid, n + 1, MessageRecord(f"cmd/{n}", b"go", 1, False, {}, "", wall), 1, False)
        await storage.commit(batch)
        await storage.close()
        settings = Settings(listeners=(ListenerSettings(port=0, allow_anonymous=True),))
        broker = Broker(settings, plugins=[("storage", StorageProvider(factory()))])
        started = time.perf_counter()
        async with broker:
            took = time.perf_counter() - started
            engine = broker.engine
            return (took, len(engine.router.retained), len(engine.sessions),
                    sum(len(s.pending) for s in engine.sessions.values()))

    took, retained, sessions, queued = anyio.run(main)
    print(f"restore of {RETAINED} retained and {SESSIONS} sessions: {took:.2f} s")  # noqa: T201
    assert (retained, sessions, queued) == (RETAINED, SESSIONS, SESSIONS)
    assert took < BOUND_SECONDS
