"""Dropped messages are visible at the default log level, rate-limited, with counts."""

from __future__ import annotations

import logging

import pytest
from engine_harness import Harness

from midge.codec import Publish


def _warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.levelno == logging.WARNING and "dropped" in r.getMessage()]


def test_drops_are_logged_once_then_summarised_with_counts(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING)
    harness = Harness(max_queued_messages=10)
    sub = harness.client("slow")
    sub.subscribe("t/#", qos=0)
    sub.conn.outbox.report(10, 0)  # its socket holds 10 frames it has not sent
    pub = harness.client("pub")
    pub.send(*(Publish("t/x", b"m") for _ in range(500)))
    assert harness.engine.stats.messages_dropped == 500
    lines = _warnings(caplog)
    assert len(lines) == 1, lines
    assert "t/x" in lines[0] and "slow" in lines[0] and "outbound buffer full" in lines[0]
    harness.tick(5)
    assert len(_warnings(caplog)) == 1  # within the interval: counted, not logged
    harness.tick(6)
    lines = _warnings(caplog)
    assert len(lines) == 2, lines
    assert lines[1].startswith("499 messages dropped in the last 10 s")
    assert "outbound buffer full: 499" in lines[1] and "slow" in lines[1]
    harness.tick(20)
    assert len(_warnings(caplog)) == 2  # nothing new: nothing logged


def test_expired_messages_are_not_reported_as_losses(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING)
    harness = Harness()
    sub = harness.client("s", clean_start=False, properties={0x11: 300})
    sub.subscribe("t/#", qos=1)
    sub.conn.transport_lost()
    pub = harness.client("pub")
    pub.send(Publish("t/x", b"m", qos=1, packet_id=1, properties={0x02: 1}))
    harness.tick(5)
    harness.client("s", clean_start=False, properties={0x11: 300}, connack=0)
    assert harness.engine.stats.messages_dropped == 1
    assert _warnings(caplog) == []
