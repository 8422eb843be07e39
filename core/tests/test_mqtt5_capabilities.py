"""MQTT 5 CONNACK advertises what the broker enforces: Maximum QoS, Retain Available,
Wildcard / Subscription Identifier / Shared Subscription Available, all configurable in
[broker]; using a capability the broker said it does not offer gets its reason code."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from midge.codec import (
    ConnAck,
    Disconnect,
    Property,
    Publish,
    ReasonCode,
    SubAck,
    Subscribe,
    Subscription,
    Will,
)
from midge.config import ConfigError, parse

Factory = Callable[..., Any]
ADVERTISED = (Property.MAXIMUM_QOS, Property.RETAIN_AVAILABLE,
              Property.WILDCARD_SUBSCRIPTION_AVAILABLE,
              Property.SUBSCRIPTION_IDENTIFIER_AVAILABLE)
LIMITED = {
    "maximum_qos": 1, "retain_available": False, "wildcard_subscriptions": False,
    "subscription_identifiers": False, "shared_subscriptions": False,
}


@pytest.fixture
def limited(broker_factory: Factory) -> Any:
    return broker_factory(**LIMITED)


def _v5(raw_factory: Factory, cid: str, port: int | None = None, **kwargs: Any) -> Any:
    raw = raw_factory(port=port, level=5)
    connack = raw.connect(cid, 5, **kwargs)
    assert isinstance(connack, ConnAck) and connack.reason_code == 0, connack
    raw.connack = connack
    return raw


def _closed_with(raw: Any, code: int) -> None:
    packets = raw.packets_until_close()
    assert [(type(p), p.reason_code) for p in packets] == [(Disconnect, code)], packets


def test_defaults_advertise_everything_available(raw_factory: Factory) -> None:
    props = _v5(raw_factory, "full").connack.properties
    assert not any(key in props for key in ADVERTISED)  # absent means available
    assert props[Property.SHARED_SUBSCRIPTION_AVAILABLE] == 1


def test_limits_are_advertised(limited: Any, raw_factory: Factory) -> None:
    props = _v5(raw_factory, "told", port=limited.port).connack.properties
    assert props[Property.MAXIMUM_QOS] == 1
    assert props[Property.RETAIN_AVAILABLE] == 0
    assert props[Property.WILDCARD_SUBSCRIPTION_AVAILABLE] == 0
    assert props[Property.SUBSCRIPTION_IDENTIFIER_AVAILABLE] == 0
    assert props[Property.SHARED_SUBSCRIPTION_AVAILABLE] == 0


def test_subscriptions_are_granted_at_most_the_maximum_qos(
    limited: Any, raw_factory: Factory
) -> None:
    raw = _v5(raw_factory, "granted", port=limited.port)
    raw.send(Subscribe(1, [Subscription("q/a", 2), Subscription("q/b", 0)]))
    assert raw.recv() == SubAck(1, [1, 0])
    v3 = raw_factory(port=limited.port)
    v3.connect("granted-v3")
    v3.send(Subscribe(2, [Subscription("q/c", 2)]))
    assert v3.recv() == SubAck(2, [1])


def test_publish_above_the_maximum_qos_is_disconnected_with_0x9b(
    limited: Any, raw_factory: Factory
) -> None:
    raw = _v5(raw_factory, "too-high", port=limited.port)
    raw.send(Publish("q/a", b"x", 1, packet_id=1))
    assert raw.recv().reason_code == 0x10  # QoS 1 is fine (no subscribers)
    raw.send(Publish("q/a", b"x", 2, packet_id=2))
    _closed_with(raw, ReasonCode.QOS_NOT_SUPPORTED)
    v3 = raw_factory(port=limited.port)
    v3.connect("too-high-v3")
    v3.send(Publish("q/a", b"x", 2, packet_id=3))
    assert v3.packets_until_close() == []  # v3: just closed


def test_will_above_the_maximum_qos_or_retained_is_refused(
    limited: Any, raw_factory: Factory
) -> None:
    raw = raw_factory(port=limited.port, level=5)
    assert raw.connect("will-qos", 5, will=Will("w/t", b"x", 2)) == ConnAck(0x9B)
    raw = raw_factory(port=limited.port, level=5)
    assert raw.connect("will-retain", 5, will=Will("w/t", b"x", 1, True)) == ConnAck(0x9A)


def test_retained_publish_without_retain_available_is_disconnected_with_0x9a(
    limited: Any, raw_factory: Factory
) -> None:
    raw = _v5(raw_factory, "retainer", port=limited.port)
    raw.send(Publish("r/t", b"x", 0, retain=True))
    _closed_with(raw, ReasonCode.RETAIN_NOT_SUPPORTED)


@pytest.mark.parametrize(("topic_filter", "code"), [
    ("w/+", ReasonCode.WILDCARD_SUBSCRIPTIONS_NOT_SUPPORTED),
    ("w/#", ReasonCode.WILDCARD_SUBSCRIPTIONS_NOT_SUPPORTED),
    ("$share/g/w/t", ReasonCode.SHARED_SUBSCRIPTIONS_NOT_SUPPORTED),
])
def test_unavailable_subscriptions_are_a_protocol_error(
    limited: Any, raw_factory: Factory, topic_filter: str, code: int
) -> None:
    raw = _v5(raw_factory, "sub-v5", port=limited.port)
    raw.send(Subscribe(1, [Subscription("w/plain", 1)]))
    assert raw.recv() == SubAck(1, [1])
    raw.send(Subscribe(2, [Subscription(topic_filter, 1)]))
    _closed_with(raw, code)


@pytest.mark.parametrize("topic_filter", ["w/+", "$share/g/w/t"])
def test_v3_clients_get_a_suback_failure_instead(
    limited: Any, raw_factory: Factory, topic_filter: str
) -> None:
    raw = raw_factory(port=limited.port)
    raw.connect("sub-v3")
    raw.send(Subscribe(1, [Subscription(topic_filter, 1), Subscription("w/plain", 1)]))
    assert raw.recv() == SubAck(1, [0x80, 1])


def test_subscription_identifier_without_availability_is_disconnected_with_0xa1(
    limited: Any, raw_factory: Factory
) -> None:
    raw = _v5(raw_factory, "sid", port=limited.port)
    raw.send(Subscribe(1, [Subscription("s/t", 1)],
                       {Property.SUBSCRIPTION_IDENTIFIER: [7]}))
    _closed_with(raw, ReasonCode.SUBSCRIPTION_IDENTIFIERS_NOT_SUPPORTED)


def test_the_settings_are_validated() -> None:
    settings = parse({"broker": LIMITED, "listeners": [{}]})
    assert settings.broker.maximum_qos == 1 and not settings.broker.shared_subscriptions
    with pytest.raises(ConfigError, match="maximum_qos"):
        parse({"broker": {"maximum_qos": 3}, "listeners": [{}]})
    with pytest.raises(ConfigError, match="retain_available"):
        parse({"broker": {"retain_available": "no"}, "listeners": [{}]})
    with pytest.raises(ConfigError, match="response_information"):
        parse({"broker": {"response_information": 1}, "listeners": [{}]})
