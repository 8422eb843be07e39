"""Clean and persistent sessions: session present, surviving subscriptions, the offline
queue (QoS 1/2 only, bounded) and MQTT 5 session expiry."""

from __future__ import annotations

import queue
import time
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as paho
import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

Factory = Callable[..., Any]
PROTOCOLS = pytest.mark.parametrize("protocol", [paho.MQTTv311, paho.MQTTv5], ids=["v311", "v5"])


def _join(
    client_factory: Factory, cid: str, protocol: int, clean: bool,
    expiry: int | None = 300, port: int | None = None,
) -> tuple[Any, bool]:
    """Connect ``cid``; returns the client and the CONNACK session present flag.

    ``expiry`` is the v5 Session Expiry Interval (None: property absent, that is 0).
    """
    props = None
    if protocol == paho.MQTTv5 and expiry is not None:
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = expiry
    client = client_factory(cid, protocol=protocol, clean=clean, properties=props, wait=False,
                            port=port)
    flags, rc, _props = client.connack.get(timeout=5)
    assert not rc.is_failure, rc
    return client, bool(flags.session_present)


def _leave(running: Any, client: Any, cid: str) -> None:
    """Disconnect normally and wait until the broker has seen the client ``cid`` go."""
    client.close()
    deadline = time.monotonic() + 5
    while running.call(lambda: cid in running.broker.engine.clients):
        assert time.monotonic() < deadline, f"{cid} still connected"
        time.sleep(0.02)


def _drain(client: Any, wait: float = 0.5) -> list[Any]:
    out = []
    for _ in range(10_000):
        try:
            out.append(client.messages.get(timeout=wait))
        except queue.Empty:
            break
    return out


@PROTOCOLS
def test_clean_session_discards_a_stored_session(
    broker: Any, client_factory: Factory, protocol: int
) -> None:
    sub, present = _join(client_factory, "cleaner", protocol, clean=False)
    assert not present
    sub.subscribe("clean/t", 1)
    _leave(broker, sub, "cleaner")
    again, present = _join(client_factory, "cleaner", protocol, clean=True, expiry=None)
    assert not present, "a clean session must not report a stored session"
    client_factory().publish("clean/t", b"gone", 1)
    again.expect_none()


@PROTOCOLS
def test_persistent_session_is_present_and_keeps_subscriptions(
    broker: Any, client_factory: Factory, protocol: int
) -> None:
    sub, present = _join(client_factory, "keeper", protocol, clean=False)
    assert not present
    sub.subscribe("keep/+", 1)
    _leave(broker, sub, "keeper")
    again, present = _join(client_factory, "keeper", protocol, clean=False)
    assert present
    client_factory().publish("keep/x", b"still here", 1)
    message = again.expect()
    assert (message.topic, message.payload) == ("keep/x", b"still here")


@PROTOCOLS
def test_qos1_and_qos2_queued_while_offline_but_not_qos0(
    broker: Any, client_factory: Factory, protocol: int
) -> None:
    sub, _ = _join(client_factory, "away", protocol, clean=False)
    sub.subscribe("away/#", 2)
    _leave(broker, sub, "away")
    pub = client_factory()
    for qos in (0, 1, 2):
        pub.publish(f"away/{qos}", f"q{qos}".encode(), qos)
    again, present = _join(client_factory, "away", protocol, clean=False)
    assert present
    got = sorted((m.topic, m.payload, m.qos) for m in _drain(again))
    assert got == [("away/1", b"q1", 1), ("away/2", b"q2", 2)]


def test_offline_queue_is_bounded_by_max_queued_messages(
    broker_factory: Factory, client_factory: Factory
) -> None:
    running = broker_factory(max_queued_messages=5)
    sub, _ = _join(client_factory, "bounded", paho.MQTTv311, clean=False, port=running.port)
    sub.subscribe("bounded/t", 1)
    _leave(running, sub, "bounded")
    pub = client_factory(port=running.port)
    for n in range(12):
        pub.publish("bounded/t", str(n).encode(), 1)
    again, present = _join(client_factory, "bounded", paho.MQTTv311, clean=False,
                           port=running.port)
    assert present
    assert [m.payload for m in _drain(again)] == [b"0", b"1", b"2", b"3", b"4"]
    assert running.call(lambda: running.broker.stats.messages_dropped) == 7


def test_v5_session_expiry_zero_ends_the_session_at_disconnect(
    broker: Any, client_factory: Factory
) -> None:
    sub, _ = _join(client_factory, "brief", paho.MQTTv5, clean=False, expiry=None)
    sub.subscribe("brief/t", 1)
    _leave(broker, sub, "brief")
    assert broker.call(lambda: "brief" in broker.broker.engine.sessions) is False
    client_factory().publish("brief/t", b"nobody home", 1)
    again, present = _join(client_factory, "brief", paho.MQTTv5, clean=False, expiry=None)
    assert not present
    again.expect_none()


def test_v5_session_expires_after_its_interval(broker: Any, client_factory: Factory) -> None:
    sub, _ = _join(client_factory, "mayfly", paho.MQTTv5, clean=False, expiry=1)
    sub.subscribe("mayfly/t", 1)
    _leave(broker, sub, "mayfly")
    assert broker.call(lambda: "mayfly" in broker.broker.engine.sessions)
    deadline = time.monotonic() + 5
    while broker.call(lambda: "mayfly" in broker.broker.engine.sessions):
        assert time.monotonic() < deadline, "the session did not expire"
        time.sleep(0.1)
    _again, present = _join(client_factory, "mayfly", paho.MQTTv5, clean=False)
    assert not present
