"""Backpressure and the inbound rate: the engine holds publishers instead of dropping.

Driven without sockets: a held connection's ``feed`` stops with ``more_input`` and an
``input_delay``, and ``on_input_ready`` is called when what held it is over.
"""

from __future__ import annotations

import pytest
from engine_harness import Harness, Peer

from midge.codec import PubAck, Publish, encode
from midge.config import ConfigError, parse


def _flood(peer: Peer, count: int, topic: str = "t/x") -> None:
    peer.conn.feed(b"".join(encode(Publish(topic, b"%d" % i, qos=1, packet_id=i), 5)
                            for i in range(1, count + 1)))


def _ack_all(sub: Peer) -> list[bytes]:
    deliveries = [p for p in sub.received() if isinstance(p, Publish)]
    if deliveries:
        sub.send(*(PubAck(p.packet_id) for p in deliveries))
    return [p.payload for p in deliveries]


def test_a_publisher_is_held_while_a_live_subscribers_queue_is_full() -> None:
    harness = Harness(queue_full="backpressure", max_queued_messages=10,
                      max_inflight_messages=2, packets_per_turn=0)
    sub = harness.client("sub")
    sub.subscribe("t/#", qos=1)
    pub = harness.client("pub")
    woken: list[int] = []
    pub.conn.on_input_ready = lambda: woken.append(1)
    _flood(pub, 200)
    assert pub.conn.more_input and pub.conn.input_delay > 0
    acked = [p for p in pub.received() if isinstance(p, PubAck)]
    # 2 inflight + 10 queued; the 13th finds the queue full: queued, and its publisher held
    assert len(acked) == 13
    got: list[bytes] = []
    for _ in range(1000):
        got += _ack_all(sub)
        if pub.conn.more_input:
            pub.conn.feed(b"")
        elif not got or len(got) == 200:
            break
    assert got == [b"%d" % i for i in range(1, 201)]
    assert harness.engine.stats.messages_dropped == 0
    assert woken  # released the moment the queue was down to half
    assert harness.engine.stats.publishers_held >= 1
    # nothing is kept once the queues are empty and the connections are gone
    sub.conn.transport_lost()
    pub.conn.transport_lost()
    assert len(harness.engine.throttle) == 0


def test_a_stuck_subscriber_is_dropped_and_slows_nobody() -> None:
    harness = Harness(queue_full="backpressure", max_queued_messages=10,
                      max_inflight_messages=2, stuck_timeout=5, packets_per_turn=0)
    stuck = harness.client("stuck")
    stuck.subscribe("t/#", qos=1)
    healthy = harness.client("healthy")
    healthy.subscribe("t/#", qos=1)
    pub = harness.client("pub")
    _flood(pub, 100)
    assert pub.conn.more_input  # held by both at first
    got: list[bytes] = []
    for _ in range(200):
        got += _ack_all(healthy)
        pub.conn.feed(b"")
    assert pub.conn.more_input  # the stuck one still holds it within stuck_timeout
    harness.clock.advance(6)
    for _ in range(200):
        got += _ack_all(healthy)
        if not pub.conn.more_input:
            break
        pub.conn.feed(b"")
    while more := _ack_all(healthy):
        got += more
    assert not pub.conn.more_input
    assert got == [b"%d" % i for i in range(1, 101)]  # the healthy one lost nothing
    assert harness.engine.stats.subscribers_stuck == 1
    assert harness.engine.stats.messages_dropped > 0  # the stuck one's
    session = harness.engine.sessions["stuck"]
    assert len(session.pending) <= 2 * 10


def test_the_default_drops_and_counts_and_holds_nobody() -> None:
    harness = Harness(max_queued_messages=10, max_inflight_messages=2, packets_per_turn=0)
    sub = harness.client("sub")
    sub.subscribe("t/#", qos=1)
    pub = harness.client("pub")
    _flood(pub, 100)
    assert not pub.conn.more_input
    assert len([p for p in pub.received() if isinstance(p, PubAck)]) == 100
    assert harness.engine.stats.messages_dropped == 88


def test_the_inbound_rate_holds_a_fast_publisher() -> None:
    harness = Harness(max_inbound_rate=10, packets_per_turn=0)
    pub = harness.client("pub")
    pub.conn.feed(b"".join(encode(Publish("r/x", b"m"), 5) for _ in range(35)))
    assert pub.conn.more_input
    assert 0 < pub.conn.input_delay <= 0.1
    assert harness.engine.stats.messages_received == 10
    harness.clock.advance(1.0)
    pub.conn.feed(b"")
    assert harness.engine.stats.messages_received == 20
    harness.clock.advance(1.0)
    pub.conn.feed(b"")
    harness.clock.advance(1.0)
    pub.conn.feed(b"")
    assert harness.engine.stats.messages_received == 35
    assert harness.engine.stats.publishers_rate_limited >= 1
    # a held client is not closed for silence: it is silent because it is held
    assert pub.conn.last_seen == harness.clock.now


def test_queue_full_takes_only_its_two_values() -> None:
    listeners = [{"type": "tcp", "port": 1883}]
    settings = parse({"broker": {"queue_full": "backpressure"}, "listeners": listeners})
    assert settings.broker.queue_full == "backpressure"
    with pytest.raises(ConfigError, match=r"broker.queue_full: 'block' is not allowed; "
                                          r"allowed: drop, backpressure"):
        parse({"broker": {"queue_full": "block"}, "listeners": listeners})
