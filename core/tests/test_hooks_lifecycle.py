"""Lifecycle and stored-state hooks over a real broker: on_started, on_stopped, on_reload,
on_sys_info_tick, on_client_expired, on_retained_expired and the stored_* hooks that
restore sessions, subscriptions, queued deliveries, retained messages and counters."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import anyio
import pytest
from conftest import Events, RunningBroker

from midge import Broker, Message, hookimpl
from midge.codec import ConnAck, Property, PubAck, Publish, SubAck, Subscribe, Subscription

Factory = Callable[..., Any]


class Lifecycle:
    def __init__(self, events: Events) -> None:
        self.events = events

    @hookimpl
    def on_started(self, broker: Broker) -> None:
        self.events.add("on_started", broker, list(broker.addresses))

    @hookimpl
    def on_stopped(self, broker: Broker) -> None:
        self.events.add("on_stopped", broker, len(broker.engine.connections))

    @hookimpl
    def on_reload(self, broker: Broker) -> None:
        self.events.add("on_reload", broker)

    @hookimpl
    def on_sys_info_tick(self, broker: Broker, info: dict[str, Any]) -> None:
        self.events.add("on_sys_info_tick", broker, dict(info))


@pytest.fixture
def plugins(events: Events) -> list[tuple[str, Any]]:
    return [("lifecycle", Lifecycle(events))]


def _stop(running: RunningBroker) -> None:
    running.call(running.broker.shutdown)


def test_on_started_fires_once_after_the_listeners_are_bound(
    broker: RunningBroker, events: Events
) -> None:
    [(started_broker, addresses)] = events.wait("on_started")
    assert started_broker is broker.broker
    assert addresses == [("127.0.0.1", broker.port)]
    assert events.names().count("on_started") == 1


def test_async_on_started_is_awaited_before_the_first_client_is_served(
    broker_factory: Factory, raw_factory: Factory
) -> None:
    events = Events()
    class SlowStart:
        @hookimpl
        async def on_started(self, broker: Broker) -> None:
            await anyio.sleep(0.3)
            events.add("on_started done")

        @hookimpl
        def on_connect(self, client: Any, packet: Any) -> None:
            events.add("on_connect")

    running = broker_factory(plugins=[("slow", SlowStart())])
    raw = raw_factory(port=running.port)
    assert isinstance(raw.connect("early"), ConnAck)
    assert events.names()[:2] == ["on_started done", "on_connect"]


def test_on_stopped_fires_once_at_the_end_of_a_graceful_shutdown(
    broker: RunningBroker, raw_factory: Factory, events: Events
) -> None:
    raw = raw_factory()
    raw.connect("leaving")
    assert events.of("on_stopped") == []
    _stop(broker)
    [(stopped_broker, open_connections)] = events.wait("on_stopped")
    assert stopped_broker is broker.broker
    assert open_connections == 0  # every connection was closed before it fired
    assert raw.closed()


def test_async_on_stopped_is_awaited(broker_factory: Factory) -> None:
    events = Events()
    class Flush:
        @hookimpl
        async def on_stopped(self, broker: Broker) -> None:
            await anyio.sleep(0.1)
            events.add("flushed")

    running = broker_factory(plugins=[("flush", Flush())])
    _stop(running)
    events.wait("flushed")


def test_on_reload_fires_with_the_broker(broker: RunningBroker, events: Events) -> None:
    broker.call(broker.broker.reload)
    [(reloaded,)] = events.wait("on_reload")
    assert reloaded is broker.broker


def test_on_reload_forgets_cached_acl_decisions(
    broker_factory: Factory, raw_factory: Factory
) -> None:
    events = Events()
    class Acl:
        allow = True

        @hookimpl
        def on_acl_check(self, client: Any, topic: str, write: bool) -> bool:
            events.add("on_acl_check", topic, write)
            return self.allow

    acl = Acl()
    running = broker_factory(plugins=[("acl", acl)])
    raw = raw_factory(port=running.port, level=5)
    raw.connect("pub", 5)
    raw.send(Publish("acl/t", b"1", 1, packet_id=1))
    assert raw.recv() == PubAck(1, 0x10)  # allowed (no subscribers)
    acl.allow = False
    raw.send(Publish("acl/t", b"2", 1, packet_id=2))
    assert raw.recv() == PubAck(2, 0x10)  # still allowed: the decision is cached
    running.call(running.broker.reload)
    raw.send(Publish("acl/t", b"3", 1, packet_id=3))
    assert raw.recv() == PubAck(3, 0x87)
    assert events.of("on_acl_check") == [("acl/t", True), ("acl/t", True)]


def test_on_sys_info_tick_fires_every_sys_interval_with_the_counters(
    broker_factory: Factory, raw_factory: Factory
) -> None:
    events = Events()
    running = broker_factory(plugins=[("lifecycle", Lifecycle(events))], sys_interval=1)
    raw = raw_factory(port=running.port)
    raw.connect("counted")
    raw.send(Publish("sys/t", b"x", 1, packet_id=1))
    assert isinstance(raw.recv(), PubAck)
    ticks = events.wait("on_sys_info_tick", count=2, timeout=10)
    ticked_broker, info = ticks[-1]
    assert ticked_broker is running.broker
    for key in ("clients_connected", "messages_received", "messages_sent",
                "messages_dropped", "uptime"):
        assert key in info, key
    assert info["clients_connected"] == 1
    assert info["messages_received"] >= 1


def test_async_on_sys_info_tick_is_run(broker_factory: Factory) -> None:
    events = Events()
    class AsyncTick:
        @hookimpl
        async def on_sys_info_tick(self, broker: Broker, info: dict[str, Any]) -> None:
            await anyio.sleep(0)
            events.add("on_sys_info_tick", info["uptime"])

    broker_factory(plugins=[("tick", AsyncTick())], sys_interval=1)
    events.wait("on_sys_info_tick", timeout=10)


def test_no_sys_info_tick_when_sys_interval_is_zero(
    broker_factory: Factory, raw_factory: Factory
) -> None:
    events = Events()
    running = broker_factory(plugins=[("lifecycle", Lifecycle(events))], sys_interval=0)
    events.wait("on_started")
    raw = raw_factory(port=running.port)
    raw.connect("quiet")
    assert not raw.closed(timeout=1.5)
    assert events.of("on_sys_info_tick") == []


def test_on_client_expired_fires_when_an_offline_session_expires(
    broker_factory: Factory, raw_factory: Factory
) -> None:
    events = Events()
    class Expiry:
        @hookimpl
        def on_client_expired(self, client_id: str) -> None:
            events.add("on_client_expired", client_id)

    running = broker_factory(plugins=[("expiry", Expiry())])
    raw = raw_factory(port=running.port, level=5)
    raw.connect("short", 5, clean_start=True,
                properties={Property.SESSION_EXPIRY_INTERVAL: 1})
    raw.close()
    assert events.wait("on_client_expired") == [("short",)]
    assert not running.call(lambda: "short" in running.broker.engine.sessions)


def test_on_client_expired_does_not_fire_for_a_session_that_ends_with_its_connection(
    broker_factory: Factory, raw_factory: Factory
) -> None:
    events = Events()
    class Expiry:
        @hookimpl
        def on_client_expired(self, client_id: str) -> None:
            events.add("on_client_expired", client_id)

        @hookimpl
        def on_disconnect(self, client: Any, error: str | None, expire: bool) -> None:
            events.add("on_disconnect", client.client_id)

    running = broker_factory(plugins=[("expiry", Expiry())])
    raw = raw_factory(port=running.port)
    raw.connect("clean")
    raw.close()
    events.wait("on_disconnect")
    events.none("on_client_expired", wait=1.5)  # three sweeps


def test_on_retained_expired_fires_when_a_retained_message_expires(
    broker_factory: Factory, raw_factory: Factory
) -> None:
    events = Events()
    class RetainExpiry:
        @hookimpl
        def on_retained_expired(self, topic: str) -> None:
            events.add("on_retained_expired", topic)

    running = broker_factory(plugins=[("retained", RetainExpiry())])
    raw = raw_factory(port=running.port, level=5)
    raw.connect("pub", 5)
    raw.send(Publish("short/lived", b"x", 1, True, packet_id=1,
                     properties={Property.MESSAGE_EXPIRY_INTERVAL: 1}))
    assert isinstance(raw.recv(), PubAck)
    assert events.wait("on_retained_expired", timeout=4) == [("short/lived",)]


# -- stored state ------------------------------------------------------------------------


class Storage:
    """Returns stored state, as a storage plugin does at start."""

    def __init__(self, events: Events) -> None:
        self.events = events

    @hookimpl
    def stored_clients(self) -> list[dict[str, Any]]:
        self.events.add("stored_clients")
        return [{"client_id": "keeper", "expiry_interval": None}]

    @hookimpl
    def stored_subscriptions(self) -> list[dict[str, Any]]:
        self.events.add("stored_subscriptions")
        return [
            {"client_id": "keeper", "subscription": Subscription("live/#", 1), "identifier": 0},
            {"client_id": "nobody", "subscription": Subscription("x/#", 1), "identifier": 0},
        ]

    @hookimpl
    def stored_inflight_messages(self) -> list[dict[str, Any]]:
        self.events.add("stored_inflight_messages")
        return [{"client_id": "keeper", "message": Message("live/queued", b"waiting", 1),
                 "qos": 1, "retain": False}]

    @hookimpl
    def stored_retained_messages(self) -> list[Message]:
        self.events.add("stored_retained_messages")
        return [Message("kept/topic", b"retained before", 1, True)]

    @hookimpl
    def stored_sys_info(self) -> dict[str, Any]:
        self.events.add("stored_sys_info")
        return {"messages_received": 1000, "connections_total": 50}


def _restored_session_works(running: RunningBroker, raw_factory: Factory) -> None:
    raw = raw_factory(port=running.port)
    connack = raw.connect("keeper", 4, clean_start=False)
    assert connack == ConnAck(0, True)  # the stored session is present
    queued = raw.recv()
    assert isinstance(queued, Publish)
    assert (queued.topic, queued.payload, queued.qos) == ("live/queued", b"waiting", 1)
    raw.send(PubAck(queued.packet_id))
    raw.send(Publish("live/now", b"routed", 1, packet_id=7))
    got = [raw.recv(), raw.recv()]
    live = next(p for p in got if isinstance(p, Publish))
    assert (live.topic, live.payload) == ("live/now", b"routed")  # restored subscription
    assert PubAck(7) in got
    raw.send(Subscribe(2, [Subscription("kept/#", 1)]))
    assert raw.recv() == SubAck(2, [1])
    retained = raw.recv()
    assert isinstance(retained, Publish)
    assert (retained.topic, retained.payload, retained.retain) == (
        "kept/topic", b"retained before", True)


def test_stored_hooks_restore_sessions_subscriptions_queues_and_retained_messages(
    broker_factory: Factory, raw_factory: Factory
) -> None:
    events = Events()
    running = broker_factory(plugins=[("storage", Storage(events))])
    events.wait("stored_sys_info")
    assert events.names()[:5] == [
        "stored_clients", "stored_subscriptions", "stored_inflight_messages",
        "stored_retained_messages", "stored_sys_info",
    ]
    assert running.call(lambda: "nobody" in running.broker.engine.sessions) is False
    _restored_session_works(running, raw_factory)


def test_stored_sys_info_counters_are_continued(
    broker_factory: Factory, raw_factory: Factory
) -> None:
    events = Events()
    running = broker_factory(plugins=[("storage", Storage(events)),
                                      ("lifecycle", Lifecycle(events))], sys_interval=1)
    raw = raw_factory(port=running.port)
    raw.connect("counter")
    raw.send(Publish("c/t", b"x", 1, packet_id=1))
    assert isinstance(raw.recv(), PubAck)
    info = events.wait("on_sys_info_tick", timeout=10)[-1][1]
    assert info["messages_received"] >= 1001
    assert info["connections_total"] >= 51


def test_async_stored_hooks_are_awaited(
    broker_factory: Factory, raw_factory: Factory
) -> None:
    events = Events()
    storage = Storage(events)

    class AsyncStorage:
        @hookimpl
        async def stored_clients(self) -> list[dict[str, Any]]:
            await anyio.sleep(0)
            return storage.stored_clients()

        @hookimpl
        async def stored_subscriptions(self) -> list[dict[str, Any]]:
            await anyio.sleep(0)
            return storage.stored_subscriptions()

        @hookimpl
        async def stored_inflight_messages(self) -> list[dict[str, Any]]:
            await anyio.sleep(0)
            return storage.stored_inflight_messages()

        @hookimpl
        async def stored_retained_messages(self) -> list[Message]:
            await anyio.sleep(0)
            return storage.stored_retained_messages()

        @hookimpl
        async def stored_sys_info(self) -> dict[str, Any]:
            await anyio.sleep(0)
            return storage.stored_sys_info()

    running = broker_factory(plugins=[("storage", AsyncStorage())])
    _restored_session_works(running, raw_factory)
    assert running.call(lambda: running.broker.stats.messages_received) >= 1000
