"""Topic matching over the wire: `+` and `#`, `a/#` matching `a`, `$`-topics kept away from
leading wildcards, and clients refused when they publish to a `$`-topic."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from midge.codec import ConnAck, PubAck, Publish
from midge.message import Message

Factory = Callable[..., Any]


def _received_before_marker(client: Any, marker_topic: str) -> list[str]:
    """Topics received up to and excluding ``marker_topic`` (which must arrive)."""
    topics: list[str] = []
    for _ in range(100):
        message = client.expect()
        if message.topic == marker_topic:
            return topics
        topics.append(message.topic)
    raise AssertionError("marker never arrived")


def test_plus_matches_exactly_one_level(client_factory: Factory) -> None:
    sub = client_factory()
    sub.subscribe("p/+/c", 1)
    pub = client_factory()
    for topic in ("p/b/c", "p/c", "p/b/x/c", "p//c", "p/b/c/d", "q/b/c"):
        pub.publish(topic, b"", 1)
    pub.publish("p/end/c", b"", 1)
    assert _received_before_marker(sub, "p/end/c") == ["p/b/c", "p//c"]


def test_hash_matches_all_remaining_levels(client_factory: Factory) -> None:
    sub = client_factory()
    sub.subscribe("h/#", 1)
    pub = client_factory()
    for topic in ("h/a", "hx/a", "h/a/b/c", "x/h/a", "h/"):
        pub.publish(topic, b"", 1)
    pub.publish("h/end", b"", 1)
    assert _received_before_marker(sub, "h/end") == ["h/a", "h/a/b/c", "h/"]


def test_hash_matches_the_parent_level(client_factory: Factory) -> None:
    sub = client_factory()
    sub.subscribe("a/#", 1)
    client_factory().publish("a", b"parent", 1)
    message = sub.expect()
    assert (message.topic, message.payload) == ("a", b"parent")


def test_dollar_topics_are_not_matched_by_leading_wildcards(
    broker: Any, client_factory: Factory
) -> None:
    everything = client_factory()
    everything.subscribe("#", 0)
    plus = client_factory()
    plus.subscribe("+/x", 0)
    system = client_factory()
    system.subscribe("$SYS/#", 0)
    # clients may not publish to $-topics, so the broker itself routes this one
    broker.call(broker.broker.engine.route, Message("$SYS/x", b"internal", 0))
    broker.call(broker.broker.engine.route, Message("n/x", b"normal", 0))
    assert system.expect().topic == "$SYS/x"
    assert everything.expect().topic == "n/x", "'#' matched a $-topic"
    assert plus.expect().topic == "n/x", "'+/x' matched a $-topic"
    system.expect_none(0.2)


@pytest.mark.parametrize(("level", "code"), [(4, 0x00), (5, 0x87)], ids=["v311", "v5"])
def test_clients_cannot_publish_to_dollar_topics(
    client_factory: Factory, raw_factory: Factory, level: int, code: int
) -> None:
    watcher = client_factory()
    watcher.subscribe("$SYS/#", 1)
    watcher.subscribe("ok/t", 1)
    raw = raw_factory(level=level)
    connack = raw.connect("intruder", level)
    assert isinstance(connack, ConnAck) and connack.reason_code == 0
    raw.send(Publish("$SYS/fake", b"forged", 1, retain=True, packet_id=1))
    assert raw.recv() == PubAck(1, code)
    raw.send(Publish("ok/t", b"fine", 1, packet_id=2))
    assert raw.recv() == PubAck(2)
    message = watcher.expect()
    assert (message.topic, message.payload) == ("ok/t", b"fine")
    late = client_factory()
    late.subscribe("$SYS/#", 1)
    late.expect_none(0.3)
