"""Bugs the engine fuzzer found, kept as plain regression tests."""

from __future__ import annotations

import logging

import pytest
from engine_harness import Harness

from midge.codec import PROTOCOL_311, ConnAck, Connect, Publish, Will


def test_a_takeover_publishing_the_old_wills_to_its_own_session(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # the old connection's will matches the session's own subscription: it arrives while
    # the session is between its two connections, and is sent once, fresh, to the new one
    caplog.set_level(logging.WARNING)
    harness = Harness()
    old = harness.open(level=PROTOCOL_311)
    old.send(Connect("p1", PROTOCOL_311, clean_start=False, will=Will("a/will", b"w", 1)))
    old.expect(ConnAck)
    old.subscribe("a/#", qos=1)
    new = harness.open(level=PROTOCOL_311)
    new.send(Connect("p1", PROTOCOL_311, clean_start=False))
    got = new.received()
    assert isinstance(got[0], ConnAck) and got[0].session_present
    assert [(p.topic, p.dup) for p in got[1:] if isinstance(p, Publish)] == [("a/will", False)]
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
