"""Fairness on real sockets: a flood in one write is handled a quantum per turn, in order,
completely, while another connection's packets are answered in between."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest

from midge.codec import PingReq, PingResp, Publish, encode

Factory = Callable[..., Any]


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_a_flood_in_one_write_is_all_handled_in_order(
    broker_factory: Factory, raw_factory: Factory, backend: str
) -> None:
    if backend == "trio":
        pytest.importorskip("trio")
    running = broker_factory(backend=backend, packets_per_turn=8, sys_interval=0)
    sub = raw_factory(running.port)
    sub.connect("sub")
    sub.subscribe("flood/#", qos=0)
    pub = raw_factory(running.port)
    pub.connect("pub")
    count = 5000
    pub.send(b"".join(encode(Publish("flood/x", b"%d" % i), 4) for i in range(count))
             + encode(PingReq(), 4))
    # another client's PINGREQ sent meanwhile is answered before the flood is worked off
    other = raw_factory(running.port)
    other.connect("other")
    started = time.monotonic()
    other.send(PingReq())
    assert isinstance(other.recv(), PingResp)
    assert time.monotonic() - started < 3
    got = [sub.recv(timeout=10).payload for _ in range(count)]
    assert got == [b"%d" % i for i in range(count)]
    assert isinstance(pub.recv(timeout=10), PingResp)
