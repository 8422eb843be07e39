"""Fairness between connections: one read handles at most ``packets_per_turn`` packets.

A publisher that writes thousands of PUBLISHes at once must not make the loop turn long
for everyone: the subscriber's acknowledgements are handled between its quanta, so the
subscriber's inflight window refills many times while the publisher's batch is worked off.
"""

from __future__ import annotations

from engine_harness import Harness

from midge.codec import PubAck, Publish, encode


def _publishes(count: int, start: int = 1) -> list[Publish]:
    return [Publish("t/x", b"%d" % i, qos=1, packet_id=i) for i in range(start, start + count)]


def test_one_feed_handles_one_quantum_and_the_rest_later_in_order() -> None:
    # the subscriber's window is full: deliveries wait, so the publisher yields
    harness = Harness(packets_per_turn=16, max_inflight_messages=1, max_queued_messages=500)
    sub = harness.client("sub")
    sub.subscribe("t/#", qos=1)
    pub = harness.client("pub")
    pub.conn.feed(b"".join(
        encode(p, 5) for p in _publishes(100)
    ))
    assert pub.conn.more_input
    assert len([p for p in pub.received() if isinstance(p, PubAck)]) == 16
    assert [p.payload for p in sub.received()] == [b"1"]
    while pub.conn.more_input:
        assert pub.conn.feed(b"") is None
    acks = [p.packet_id for p in pub.received() if isinstance(p, PubAck)]
    assert acks == list(range(17, 101))
    session = harness.engine.sessions["sub"]
    assert [o.message.payload for o in session.pending] == [b"%d" % i for i in range(2, 101)]


def test_without_contention_one_feed_handles_everything() -> None:
    # a QoS 0 subscriber whose socket takes everything: nobody waits, nobody yields
    harness = Harness(packets_per_turn=16)
    sub = harness.client("sub")
    sub.subscribe("t/#", qos=0)
    pub = harness.client("pub")
    pub.conn.feed(b"".join(encode(p, 5) for p in _publishes(100)))
    assert not pub.conn.more_input
    assert len(sub.received()) == 100


def test_a_subscribers_window_refills_between_a_publishers_quanta() -> None:
    # the publisher's 400 messages arrive in one read; the subscriber acknowledges what it
    # gets after every turn. Before the quantum, one feed routed all 400: 20 went out and
    # the queue took the rest; now the subscriber gets a new window every turn
    harness = Harness(packets_per_turn=20, max_inflight_messages=20, max_queued_messages=50)
    sub = harness.client("sub")
    sub.subscribe("t/#", qos=1)
    pub = harness.client("pub")
    pub.conn.feed(b"".join(encode(p, 5) for p in _publishes(400)))
    got: list[bytes] = []
    for _turn in range(1000):
        deliveries = [p for p in sub.received() if isinstance(p, Publish)]
        got += [p.payload for p in deliveries]
        if deliveries:
            sub.send(*(PubAck(p.packet_id) for p in deliveries))
        if pub.conn.more_input:
            pub.conn.feed(b"")
        elif not deliveries:
            break
    assert harness.engine.stats.messages_dropped == 0
    assert got == [b"%d" % i for i in range(1, 401)]


def test_quantum_zero_handles_everything_at_once() -> None:
    harness = Harness(packets_per_turn=0)
    pub = harness.client("pub")
    pub.conn.feed(b"".join(encode(p, 5) for p in _publishes(300)))
    assert not pub.conn.more_input
    assert len(pub.received()) == 300
