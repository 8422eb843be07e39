"""$SYS/broker/...: mochi-mqtt's topics under its names and Mosquitto's load averages, all
retained and refreshed every sys_interval, plausible values, never matched by a leading
wildcard, never publishable by clients, and readable only where the ACL allows."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as paho
import pytest
from conftest import Client, RunningBroker

import midge
from midge import hookimpl
from midge.hooks.builtin import LoadAverages

MOCHI_TOPICS = [
    "version", "time", "uptime", "started", "load/bytes/received", "load/bytes/sent",
    "clients/connected", "clients/disconnected", "clients/maximum", "clients/total",
    "packets/received", "packets/sent", "messages/received", "messages/sent",
    "messages/dropped", "messages/inflight", "retained", "subscriptions", "system/memory",
    "system/threads",
]
LOAD_TOPICS = [f"load/{name}/{window}" for name in (
    "messages/received", "messages/sent", "bytes/received", "bytes/sent", "publish/dropped",
    "connections") for window in ("1min", "5min", "15min")]


@pytest.fixture
def broker(broker_factory: Callable[..., RunningBroker]) -> RunningBroker:
    return broker_factory(sys_interval=1)


def collect(client: Client, wanted: set[str], timeout: float = 6.0) -> dict[str, str]:
    """The latest payload per $SYS topic until every wanted topic has come."""
    seen: dict[str, str] = {}
    deadline = time.monotonic() + timeout
    while not wanted <= set(seen):
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(f"missing: {sorted(wanted - set(seen))}")
        message = client.expect(timeout=left)
        seen[message.topic] = message.payload.decode()
    return seen


def test_every_topic_is_present_and_plausible(
    broker: RunningBroker, client_factory: Callable[..., Client]
) -> None:
    others = [client_factory(f"other-{i}") for i in range(3)]
    others[0].subscribe("x/#", qos=1)
    for index in range(5):
        others[1].publish("x/y", f"m{index}", qos=1)
    for _ in range(5):
        others[0].expect()
    watcher = client_factory("watcher")
    watcher.subscribe("$SYS/#")
    wanted = {f"$SYS/broker/{t}" for t in MOCHI_TOPICS + LOAD_TOPICS}
    first = collect(watcher, wanted)
    # the retained values came at once; the next refresh reflects the watcher too
    time.sleep(1.2)
    values = collect(watcher, wanted)

    def number(topic: str) -> float:
        return float(values[f"$SYS/broker/{topic}"])

    assert values["$SYS/broker/version"] == f"midge {midge.__version__}"
    assert number("clients/connected") == 4
    assert number("clients/total") == 4
    assert number("clients/disconnected") == 0
    assert number("clients/maximum") >= 4
    assert number("messages/received") >= 5
    assert number("messages/sent") >= 5
    assert number("subscriptions") == 2
    assert number("messages/inflight") == 0
    assert number("system/memory") > 1_000_000
    assert number("system/threads") >= 1
    assert number("packets/received") > number("messages/received")
    assert number("load/bytes/received") > 0
    assert abs(number("time") - time.time()) < 5
    assert number("uptime") == number("time") - number("started")
    assert number("uptime") >= float(first["$SYS/broker/uptime"])
    for topic in LOAD_TOPICS:
        assert number(topic) >= 0
    assert number("load/messages/received/1min") > 0


def test_sys_topics_are_retained(broker: RunningBroker,
                                 client_factory: Callable[..., Client]) -> None:
    time.sleep(1.3)  # the first tick comes after sys_interval
    late = client_factory("late")
    late.subscribe("$SYS/broker/clients/connected")
    message = late.expect(timeout=3)
    assert message.retain


def test_hash_does_not_match_sys_and_clients_cannot_publish_there(
    broker: RunningBroker, client_factory: Callable[..., Client]
) -> None:
    everything = client_factory("everything")
    everything.subscribe("#")
    everything.subscribe("+/broker/#")
    watcher = client_factory("sys-watcher")
    watcher.subscribe("$SYS/broker/version")
    assert watcher.expect().payload.decode().startswith("midge ")
    forger = client_factory("forger")
    forger.publish("$SYS/broker/version", b"evil 1.0", qos=1, retain=True)
    time.sleep(1.5)  # a refresh or two
    while True:
        try:
            payload = watcher.expect(timeout=0.2).payload
        except Exception:
            break
        assert payload != b"evil 1.0"
    everything.expect_none(wait=0.3)


def test_sys_is_readable_only_where_the_acl_allows(
    broker_factory: Callable[..., RunningBroker], client_factory: Callable[..., Client]
) -> None:
    class Acl:
        """Everyone may connect; only "ops" may read $SYS."""

        @hookimpl
        def on_connect_authenticate(self, client: Any, packet: Any) -> bool:
            return True

        @hookimpl
        def on_acl_check(self, client: Any, topic: str, write: bool) -> bool:
            return not topic.startswith("$SYS") or client.client_id == "ops"

    running = broker_factory(allow_anonymous=False, plugins=[("acl", Acl())], sys_interval=1)
    received: dict[str, list[str]] = {"ops": [], "guest": []}
    clients = []
    for cid in received:
        client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=cid,
                             protocol=paho.MQTTv5)
        client.on_message = lambda c, u, m, cid=cid: received[cid].append(m.topic)
        client.connect("127.0.0.1", running.port)
        client.loop_start()
        client.subscribe("$SYS/#", 0)
        clients.append(client)
    deadline = time.monotonic() + 5
    while not received["ops"] and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(1.2)
    for client in clients:
        client.disconnect()
        client.loop_stop()
    assert "$SYS/broker/clients/connected" in received["ops"]
    assert received["guest"] == []


def test_load_averages_follow_the_rate() -> None:
    load = LoadAverages()
    load.update({"messages_received": 0, "uptime": 0}, 0.0)
    # 600 messages in 10 s: 3600 a minute
    for step in range(1, 200):
        values = load.update({"messages_received": 600 * step}, 10.0 * step)
    assert values["messages/received/1min"] == pytest.approx(3600, rel=1e-3)
    assert values["messages/received/15min"] == pytest.approx(3600, rel=0.15)
    # traffic stops: the 1-minute average falls faster than the 15-minute one
    for step in range(200, 212):
        values = load.update({"messages_received": 600 * 199}, 10.0 * step)
    assert values["messages/received/1min"] < values["messages/received/5min"]
    assert values["messages/received/5min"] < values["messages/received/15min"]
