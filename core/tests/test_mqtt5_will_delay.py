"""MQTT 5 Will Delay Interval: the will waits for min(delay, session expiry), is cancelled
when the client reconnects in time (and sent at once when the reconnect ends the session),
and DISCONNECT 0x04 follows the same rules."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from midge.codec import ConnAck, Disconnect, Property, Will

Factory = Callable[..., Any]


def _watch(client_factory: Factory) -> Any:
    watcher = client_factory()
    watcher.subscribe("delayed/#", 1)
    return watcher


def _dying(raw_factory: Factory, cid: str, delay: int, expiry: int | None,
           clean: bool = True) -> Any:
    raw = raw_factory(level=5)
    props = {} if expiry is None else {Property.SESSION_EXPIRY_INTERVAL: expiry}
    will = Will("delayed/" + cid, f"{cid} died".encode(), 1,
                properties={Property.WILL_DELAY_INTERVAL: delay})
    connack = raw.connect(cid, 5, clean_start=clean, will=will, properties=props)
    assert isinstance(connack, ConnAck) and connack.reason_code == 0
    return raw


def _arrival(watcher: Any, timeout: float = 5.0) -> tuple[float, bytes]:
    start = time.monotonic()
    message = watcher.expect(timeout)
    return time.monotonic() - start, message.payload


def test_will_waits_for_its_delay(client_factory: Factory, raw_factory: Factory) -> None:
    watcher = _watch(client_factory)
    _dying(raw_factory, "slow", delay=2, expiry=60).close()
    waited, payload = _arrival(watcher)
    assert payload == b"slow died"
    assert 1.5 <= waited <= 3.0


def test_will_delay_is_capped_by_the_session_expiry(
    client_factory: Factory, raw_factory: Factory
) -> None:
    watcher = _watch(client_factory)
    _dying(raw_factory, "capped", delay=30, expiry=1).close()
    waited, payload = _arrival(watcher)
    assert payload == b"capped died"
    assert 0.5 <= waited <= 2.0


def test_will_without_a_lasting_session_is_sent_at_once(
    client_factory: Factory, raw_factory: Factory
) -> None:
    watcher = _watch(client_factory)
    _dying(raw_factory, "ends", delay=30, expiry=None).close()
    waited, _ = _arrival(watcher)
    assert waited < 0.5


def test_disconnect_0x04_follows_the_delay(client_factory: Factory, raw_factory: Factory) -> None:
    watcher = _watch(client_factory)
    raw = _dying(raw_factory, "with-will", delay=1, expiry=60)
    raw.send(Disconnect(0x04))
    assert raw.packets_until_close() == []
    watcher.expect_none(0.4)
    assert watcher.expect(3).payload == b"with-will died"


def test_reconnect_in_time_cancels_the_will(
    client_factory: Factory, raw_factory: Factory, broker: Any
) -> None:
    watcher = _watch(client_factory)
    _dying(raw_factory, "back", delay=1, expiry=60).close()
    time.sleep(0.3)
    again = raw_factory(level=5)
    connack = again.connect("back", 5, clean_start=False,
                            properties={Property.SESSION_EXPIRY_INTERVAL: 60})
    assert isinstance(connack, ConnAck) and connack.session_present
    watcher.expect_none(1.8)
    assert broker.call(lambda: dict(broker.broker.engine.registry.pending_wills)) == {}


def test_reconnect_with_clean_start_sends_the_will_now(
    client_factory: Factory, raw_factory: Factory
) -> None:
    watcher = _watch(client_factory)
    _dying(raw_factory, "fresh", delay=30, expiry=60).close()
    watcher.expect_none(0.6)
    again = raw_factory(level=5)
    assert isinstance(again.connect("fresh", 5, clean_start=True), ConnAck)
    waited, payload = _arrival(watcher, 2)
    assert payload == b"fresh died" and waited < 0.5


def test_takeover_keeping_the_session_cancels_a_delayed_will(
    client_factory: Factory, raw_factory: Factory
) -> None:
    watcher = _watch(client_factory)
    first = _dying(raw_factory, "taken", delay=1, expiry=60)
    second = raw_factory(level=5)
    connack = second.connect("taken", 5, clean_start=False,
                             properties={Property.SESSION_EXPIRY_INTERVAL: 60})
    assert isinstance(connack, ConnAck) and connack.session_present
    assert first.packets_until_close() == [Disconnect(0x8E)]
    watcher.expect_none(2.0)


def test_takeover_with_clean_start_sends_the_will(
    client_factory: Factory, raw_factory: Factory
) -> None:
    watcher = _watch(client_factory)
    first = _dying(raw_factory, "replaced", delay=30, expiry=60)
    second = raw_factory(level=5)
    assert isinstance(second.connect("replaced", 5, clean_start=True), ConnAck)
    assert first.packets_until_close() == [Disconnect(0x8E)]
    assert watcher.expect(2).payload == b"replaced died"
