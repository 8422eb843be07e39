"""The storage contract: a pytest suite every ``midge.records.Storage`` backend passes.

The rule: the suite speaks only the public Storage protocol and the broker's public
API, so a third party checks a fourth backend by subclassing ``StorageContract`` in a
test module and giving it a ``storage_factory`` fixture: a callable that returns a new,
unopened Storage object on the same store each time it is called (calling it again is
a restart). ``MemoryStorage`` is the reference implementation (no I/O, for tests).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import anyio

from .codec import Property, Subscription
from .config import ListenerSettings, Settings
from .hooks import hookimpl
from .records import (
    Batch,
    DeliveryRecord,
    Durability,
    MessageRecord,
    SessionRecord,
    Snapshot,
    Storage,
    SubscriptionRecord,
    WillRecord,
    encode_delivery,
    snapshot_from_items,
)

StorageFactory = Callable[[], Storage]

__all__ = ["MemoryStorage", "StorageContract", "StorageFactory", "StorageProvider"]


class MemoryStorage:
    """A Storage in a dict (its state outlives ``close``, so it can be reopened)."""

    def __init__(self, durability: Durability = "sync", flush_interval: float = 1.0) -> None:
        self.name = "memory"
        self.durability: Durability = durability
        self.flush_interval = flush_interval
        self.data: dict[tuple[bytes, bytes], bytes] = {}
        self.commits = 0
        #: set to an exception to make commits fail (fault tests)
        self.fail: Exception | None = None

    async def open(self) -> None:
        return None

    async def load(self) -> Snapshot:
        return snapshot_from_items((g, f, v) for (g, f), v in self.data.items())

    async def commit(self, batch: Batch) -> None:
        if self.fail is not None:
            raise self.fail
        groups, items = batch.items()
        if groups:
            drop = set(groups)
            for key in [key for key in self.data if key[0] in drop]:
                del self.data[key]
        for group, name, value in items:
            if value is None:
                self.data.pop((group, name), None)
            else:
                self.data[(group, name)] = value
        self.commits += 1

    async def close(self) -> None:
        return None


class StorageProvider:
    """A plugin object that offers ``storage`` through the ``storage_backend`` hook."""

    def __init__(self, storage: Storage) -> None:
        self.storage = storage

    @hookimpl
    def storage_backend(self) -> Storage:
        return self.storage


# -- sample records: every field set, binary payloads, repeated user properties --------

NOW = 1_900_000_000.0
PROPS: dict[int, Any] = {
    Property.PAYLOAD_FORMAT_INDICATOR: 0,
    Property.MESSAGE_EXPIRY_INTERVAL: 86400,
    Property.CONTENT_TYPE: "application/octet-stream",
    Property.RESPONSE_TOPIC: "reply/here",
    Property.CORRELATION_DATA: b"\x00\xff\x10corr",
    Property.USER_PROPERTY: [("k", "v1"), ("a", "b"), ("k", "v1"), ("k", "v2")],
}
BINARY = bytes(range(256)) * 3


def sample_message(n: int = 0, topic: str = "a/b") -> MessageRecord:
    return MessageRecord(topic, BINARY + n.to_bytes(4, "big"), 1, False, dict(PROPS),
                         "publisher", NOW + n, NOW + n + 86400)


def sample_session(cid: str = "c1", will: bool = True) -> SessionRecord:
    w = WillRecord("will/t", b"\x00gone\xff", 2, True,
                   {Property.WILL_DELAY_INTERVAL: 30,
                    Property.USER_PROPERTY: [("x", "1"), ("x", "1")]},
                   NOW + 30) if will else None
    return SessionRecord(cid, 3600, NOW, "alice", 5, w)


def sample_batch(seq: int = 1) -> Batch:
    batch = Batch(seq)
    batch.sessions["c1"] = sample_session("c1")
    batch.sessions["c2"] = SessionRecord("c2", None, None, None, 4, None)
    batch.subscriptions[("c1", "a/#")] = SubscriptionRecord(
        "c1", Subscription("a/#", 2, True, True, 2), 77)
    batch.subscriptions[("c1", "$share/g/x/+")] = SubscriptionRecord(
        "c1", Subscription("$share/g/x/+", 1), 0)
    batch.subscriptions[("c2", "b")] = SubscriptionRecord("c2", Subscription("b", 0), 0)
    batch.deliveries[("c1", 1)] = DeliveryRecord("c1", 1, sample_message(1), 2, True,
                                                 (77, 3), 9, True)
    batch.deliveries[("c1", 2)] = DeliveryRecord("c1", 2, sample_message(2), 1, False,
                                                 (), 10, False)
    batch.deliveries[("c1", 3)] = DeliveryRecord("c1", 3, sample_message(3), 1, False)
    batch.inbound[("c1", 5)] = True
    batch.inbound[("c1", 65535)] = True
    batch.retained["r/1"] = sample_message(4, "r/1")
    batch.retained["r/2"] = MessageRecord("r/2", b"", 0, True, {}, "", NOW, None)
    batch.counters = {"messages_received": 12, "connections_total": 3}
    return batch


def run(func: Callable[[], Awaitable[Any]]) -> Any:
    return anyio.run(func)


class StorageContract:
    """Subclass it in a test module with a ``storage_factory`` fixture."""

    async def _commit_and_reload(self, storage_factory: StorageFactory,
                                 *batches: Batch) -> Snapshot:
        storage = storage_factory()
        await storage.open()
        try:
            for batch in batches:
                await storage.commit(batch)
        finally:
            await storage.close()
        again = storage_factory()
        await again.open()
        try:
            return await again.load()
        finally:
            await again.close()

    def test_a_new_store_is_empty(self, storage_factory: StorageFactory) -> None:
        async def main() -> Snapshot:
            storage = storage_factory()
            await storage.open()
            try:
                return await storage.load()
            finally:
                await storage.close()

        snap = run(main)
        assert not snap
        assert snap.subscriptions == snap.deliveries == snap.inbound == []

    def test_every_record_round_trips_byte_exact(self,
                                                 storage_factory: StorageFactory) -> None:
        batch = sample_batch()
        snap = run(lambda: self._commit_and_reload(storage_factory, batch))
        assert sorted(snap.sessions, key=lambda s: s.client_id) == [
            batch.sessions["c1"], batch.sessions["c2"]]
        assert sorted(snap.subscriptions, key=lambda s: (s.client_id, s.subscription.topic_filter)
                      ) == sorted((s for s in batch.subscriptions.values() if s),
                                  key=lambda s: (s.client_id, s.subscription.topic_filter))
        assert snap.deliveries == [batch.deliveries[("c1", n)] for n in (1, 2, 3)]
        message = snap.deliveries[0].message
        assert message.payload == BINARY + (1).to_bytes(4, "big")
        assert message.properties[Property.USER_PROPERTY] == PROPS[Property.USER_PROPERTY]
        assert list(message.properties) == list(PROPS)
        assert sorted(snap.inbound) == [("c1", 5), ("c1", 65535)]
        assert sorted(snap.retained, key=lambda m: m.topic) == [
            batch.retained["r/1"], batch.retained["r/2"]]
        assert snap.counters == {"messages_received": 12, "connections_total": 3}

    def test_retained_set_replaced_and_cleared(self,
                                               storage_factory: StorageFactory) -> None:
        first = Batch(1, retained={"t/1": sample_message(1, "t/1"),
                                   "t/2": sample_message(2, "t/2")})
        second = Batch(2, retained={"t/1": sample_message(9, "t/1"), "t/2": None})
        snap = run(lambda: self._commit_and_reload(storage_factory, first, second))
        assert snap.retained == [sample_message(9, "t/1")]

    def test_subscriptions_and_deliveries_added_and_removed(
            self, storage_factory: StorageFactory) -> None:
        first = sample_batch(1)
        second = Batch(2)
        second.subscriptions[("c1", "a/#")] = None
        second.subscriptions[("c1", "new/+")] = SubscriptionRecord(
            "c1", Subscription("new/+", 1), 5)
        second.deliveries[("c1", 1)] = None
        second.deliveries[("c1", 2)] = DeliveryRecord("c1", 2, sample_message(2), 1, False,
                                                      (), 11, False)
        second.inbound[("c1", 5)] = False
        snap = run(lambda: self._commit_and_reload(storage_factory, first, second))
        filters = sorted((s.client_id, s.subscription.topic_filter) for s in snap.subscriptions)
        assert filters == [("c1", "$share/g/x/+"), ("c1", "new/+"), ("c2", "b")]
        assert [(d.order, d.packet_id) for d in snap.deliveries] == [(2, 11), (3, 0)]
        assert snap.inbound == [("c1", 65535)]

    def test_a_cleared_session_takes_everything_it_owns(
            self, storage_factory: StorageFactory) -> None:
        first = sample_batch(1)
        second = Batch(2, cleared={"c1", "c2"})
        # c2 starts afresh in the same batch: only what comes after the clear stays
        second.sessions["c2"] = SessionRecord("c2", 60, None, "bob", 5, None)
        second.subscriptions[("c2", "fresh")] = SubscriptionRecord(
            "c2", Subscription("fresh", 1), 0)
        snap = run(lambda: self._commit_and_reload(storage_factory, first, second))
        assert snap.sessions == [SessionRecord("c2", 60, None, "bob", 5, None)]
        assert [(s.client_id, s.subscription.topic_filter) for s in snap.subscriptions] == [
            ("c2", "fresh")]
        assert snap.deliveries == [] and snap.inbound == []
        assert len(snap.retained) == 2  # not owned by a session

    def test_many_batches_leave_only_what_is_live(self,
                                                  storage_factory: StorageFactory) -> None:
        async def main() -> Snapshot:
            storage = storage_factory()
            await storage.open()
            try:
                await storage.commit(Batch(1, sessions={"q": sample_session("q", False)}))
                for seq in range(2, 202):
                    batch = Batch(seq)
                    for n in range(50):
                        order = seq * 100 + n
                        batch.deliveries[("q", order)] = DeliveryRecord(
                            "q", order, sample_message(n), 1, False)
                        batch.deliveries[("q", order - 100)] = None
                    await storage.commit(batch)
                return await storage.load()
            finally:
                await storage.close()

        snap = run(main)
        assert [d.order for d in snap.deliveries] == [201 * 100 + n for n in range(50)]

    def test_encoded_deliveries_round_trip_as_their_records(
            self, storage_factory: StorageFactory) -> None:
        # the journal hands deliveries over encoded, and says which are new
        records = [d for d in sample_batch().deliveries.values()
                   if isinstance(d, DeliveryRecord)]
        batch = Batch(1, deliveries={(d.client_id, d.order): encode_delivery(d)
                                     for d in records},
                      created={(d.client_id, d.order) for d in records})
        snap = run(lambda: self._commit_and_reload(storage_factory, batch))
        assert snap.deliveries == records
        assert [record for _, record in batch.delivery_records()] == records

    def test_new_deliveries_deleted_in_later_batches_leave_nothing(
            self, storage_factory: StorageFactory) -> None:
        # a stream through a persistent session: each delivery is new in one batch and
        # deleted in a later one, across restarts (a restart continues the orders)
        async def stream(first: int, count: int, seq: int) -> Snapshot:
            storage = storage_factory()
            await storage.open()
            try:
                for order in range(first, first + count):
                    key = ("q", order)
                    await storage.commit(Batch(seq, deliveries={
                        key: encode_delivery(DeliveryRecord("q", order, sample_message(order),
                                                            1, False)),
                        ("q", order - 1): None}, created={key}))
                    seq += 1
                return await storage.load()
            finally:
                await storage.close()

        async def main() -> list[list[int]]:
            seen = [[d.order for d in (await stream(1, 300, 1)).deliveries]]
            seen.append([d.order for d in (await stream(301, 300, 400)).deliveries])
            final = storage_factory()
            await final.open()
            try:
                await final.commit(Batch(800, deliveries={("q", 600): None}))
                seen.append([d.order for d in (await final.load()).deliveries])
            finally:
                await final.close()
            again = storage_factory()
            await again.open()
            try:
                seen.append([d.order for d in (await again.load()).deliveries])
            finally:
                await again.close()
            return seen

        assert run(main) == [[300], [600], [], []]

    # -- through the broker: restore, expiry across a restart, wills ---------------------

    def _settings(self) -> Settings:
        return Settings(listeners=(ListenerSettings(port=0, allow_anonymous=True),))

    def test_the_broker_restores_and_drops_what_expired_while_down(
            self, storage_factory: StorageFactory) -> None:
        import time

        from .broker import Broker

        wall = time.time()
        batch = Batch(1)
        # expired two minutes ago: its due will is published, the session is not restored
        batch.sessions["old"] = SessionRecord(
            "old", 60, wall - 180, None, 5,
            WillRecord("wills/old", b"bye", 0, True, {Property.WILL_DELAY_INTERVAL: 10}, None))
        batch.subscriptions[("old", "x")] = SubscriptionRecord("old", Subscription("x", 1))
        batch.sessions["live"] = SessionRecord("live", 3600, wall - 10, None, 4, None)
        batch.subscriptions[("live", "t/#")] = SubscriptionRecord("live", Subscription("t/#", 1))
        fresh = MessageRecord("t/1", b"keep", 1, False, {}, "p", wall - 5, None)
        stale = MessageRecord("t/2", b"stale", 1, False,
                              {Property.MESSAGE_EXPIRY_INTERVAL: 2}, "p", wall - 5, wall - 3)
        batch.deliveries[("live", 1)] = DeliveryRecord("live", 1, fresh, 1, False)
        batch.deliveries[("live", 2)] = DeliveryRecord("live", 2, stale, 1, False)
        batch.retained["gone"] = MessageRecord("gone", b"x", 0, True,
                                               {Property.MESSAGE_EXPIRY_INTERVAL: 1}, "",
                                               wall - 10, wall - 9)

        async def main() -> tuple[dict[str, Any], Snapshot]:
            storage = storage_factory()
            await storage.open()
            await storage.commit(batch)
            await storage.close()
            broker = Broker(self._settings(), plugins=[("storage", StorageProvider(
                storage_factory()))])
            async with broker:
                engine = broker.engine
                seen = {
                    "sessions": sorted(engine.sessions),
                    "queued": [out.message.payload for out in engine.sessions["live"].pending],
                    "retained": sorted(m.topic for m in engine.router.retained.match("#")),
                }
            reopened = storage_factory()
            await reopened.open()
            try:
                return seen, await reopened.load()
            finally:
                await reopened.close()

        seen, snap = run(main)
        assert seen == {"sessions": ["live"], "queued": [b"keep"], "retained": ["wills/old"]}
        assert [s.client_id for s in snap.sessions] == ["live"]
        assert [(s.client_id, s.subscription.topic_filter) for s in snap.subscriptions] == [
            ("live", "t/#")]
        assert [d.order for d in snap.deliveries] == [1]
        assert [m.topic for m in snap.retained] == ["wills/old"]
