"""Flapping detection: off by default; a client id that drops too often is refused a while."""

from __future__ import annotations

from engine_harness import Harness

from midge.codec import PROTOCOL_311, ConnAck, Connect, Disconnect


def _cycle(harness: Harness, client_id: str, times: int) -> None:
    for _ in range(times):
        peer = harness.client(client_id)
        peer.send(Disconnect())
        peer.conn.transport_lost()


def test_off_by_default() -> None:
    harness = Harness()
    _cycle(harness, "c", 50)
    harness.client("c")
    assert harness.engine.stats.connections_refused_flapping == 0


def test_a_flapping_client_is_refused_for_the_ban_and_then_let_in() -> None:
    harness = Harness(flap_max_drops=3, flap_window=10, flap_ban=30)
    _cycle(harness, "c", 3)
    harness.client("c").conn.transport_lost()  # the fourth end within 10 s: banned
    peer = harness.client("c", connack=0x9F)
    assert peer.conn.closing
    v3 = harness.open(level=PROTOCOL_311)
    v3.send(Connect("c", PROTOCOL_311))
    assert v3.expect(ConnAck).reason_code == 3  # server unavailable
    harness.client("other")  # others are not affected
    assert harness.engine.stats.connections_refused_flapping == 2
    harness.tick(29)
    harness.client("c", connack=0x9F)
    harness.tick(2)
    harness.client("c")  # the ban is over


def test_drops_spread_over_more_than_the_window_are_not_flapping() -> None:
    harness = Harness(flap_max_drops=3, flap_window=10, flap_ban=30)
    for _ in range(10):
        _cycle(harness, "c", 1)
        harness.tick(4)  # three ends per 10 s at most
    harness.client("c")


def test_by_address_counts_every_client_id_from_one_address() -> None:
    harness = Harness(flap_max_drops=2, flap_window=10, flap_ban=30, flap_by_address=True)
    for i in range(3):
        _cycle(harness, f"c{i}", 1)
    harness.client("fresh", connack=0x9F)


def test_the_table_is_pruned() -> None:
    harness = Harness(flap_max_drops=5, flap_window=1, flap_ban=1)
    for i in range(5000):
        _cycle(harness, f"c{i}", 1)
        if i % 1000 == 999:
            harness.tick(2)
    assert len(harness.engine.flapping) < 4096 + 1000
