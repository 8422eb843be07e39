"""Will messages: published when a connection ends abnormally (socket closed, keepalive
timeout, closed mid-packet, v5 DISCONNECT 0x04), not on a normal DISCONNECT; will retain."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest

from midge.codec import ConnAck, Disconnect, Publish, Will, encode

Factory = Callable[..., Any]
LEVELS = pytest.mark.parametrize("level", [4, 5], ids=["v311", "v5"])


def _watch(client_factory: Factory, topic: str = "will/#") -> Any:
    watcher = client_factory()
    watcher.subscribe(topic, 2)
    return watcher


def _dying(raw_factory: Factory, cid: str, level: int = 4, keepalive: int = 60,
           topic: str = "will/t", retain: bool = False) -> Any:
    raw = raw_factory(level=level)
    connack = raw.connect(cid, level, keepalive=keepalive,
                          will=Will(topic, f"{cid} died".encode(), 1, retain))
    assert isinstance(connack, ConnAck) and connack.reason_code == 0
    return raw


def _wait_gone(running: Any, cid: str, timeout: float = 5) -> None:
    deadline = time.monotonic() + timeout
    while running.call(lambda: cid in running.broker.engine.clients):
        assert time.monotonic() < deadline, f"{cid} still connected"
        time.sleep(0.02)


@LEVELS
def test_will_is_published_when_the_socket_closes_without_disconnect(
    client_factory: Factory, raw_factory: Factory, level: int
) -> None:
    watcher = _watch(client_factory)
    _dying(raw_factory, "crash", level).close()
    message = watcher.expect()
    assert (message.topic, message.payload, message.qos) == ("will/t", b"crash died", 1)


def test_will_is_published_on_keepalive_timeout(
    client_factory: Factory, raw_factory: Factory
) -> None:
    watcher = _watch(client_factory)
    raw = _dying(raw_factory, "silent", keepalive=1)
    message = watcher.expect(timeout=5)
    assert message.payload == b"silent died"
    assert raw.closed()


def test_will_is_published_when_the_connection_closes_mid_packet(
    client_factory: Factory, raw_factory: Factory
) -> None:
    watcher = _watch(client_factory)
    raw = _dying(raw_factory, "torn")
    frame = encode(Publish("some/topic", b"x" * 100, 1, packet_id=1), 4)
    raw.send(frame[: len(frame) // 2])
    raw.close()
    message = watcher.expect()
    assert message.payload == b"torn died"
    watcher.expect_none(0.3)


@LEVELS
def test_will_is_not_published_on_normal_disconnect(
    broker: Any, client_factory: Factory, raw_factory: Factory, level: int
) -> None:
    watcher = _watch(client_factory)
    raw = _dying(raw_factory, "polite", level)
    raw.send(Disconnect())
    assert raw.packets_until_close() == []
    _wait_gone(broker, "polite")
    watcher.expect_none()


@pytest.mark.parametrize("reason", [0x04, 0x80], ids=["with-will", "unspecified-error"])
def test_v5_disconnect_with_a_reason_other_than_normal_publishes_the_will(
    client_factory: Factory, raw_factory: Factory, reason: int
) -> None:
    watcher = _watch(client_factory)
    raw = _dying(raw_factory, "farewell", 5)
    raw.send(Disconnect(reason))
    assert raw.packets_until_close() == []
    assert watcher.expect().payload == b"farewell died"


@pytest.mark.parametrize("retain", [True, False])
def test_will_retain_flag_is_honoured(
    broker: Any, client_factory: Factory, raw_factory: Factory, retain: bool
) -> None:
    watcher = _watch(client_factory, "wret/t")
    _dying(raw_factory, "heir", topic="wret/t", retain=retain).close()
    live = watcher.expect()
    assert (live.payload, live.retain) == (b"heir died", False)
    late = client_factory()
    late.subscribe("wret/t", 1)
    if retain:
        message = late.expect()
        assert (message.payload, message.retain) == (b"heir died", True)
    else:
        late.expect_none()
        assert broker.call(lambda: "wret/t" in broker.broker.engine.router.retained) is False
