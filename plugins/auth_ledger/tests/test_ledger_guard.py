"""The login-flood defences on their own: the hash gate's order and bounds, the failure
table, the dummy hash, and the configuration keys that tune them."""

from __future__ import annotations

import threading
import time
from typing import Any

import anyio
import pytest
from midge_auth_ledger import LedgerPlugin, hash_password
from midge_auth_ledger._guard import Busy, Failures, HashGate
from midge_auth_ledger._hashing import dummy_like, parse_password

from midge import PluginConfigError


def _gate_order(arrivals: list[str], standing: dict[str, int],
                per_address: int = 1) -> list[str]:
    """The order in which the gate (one worker) runs attempts from these addresses,
    all waiting behind a first attempt that holds the worker."""
    order: list[str] = []
    release = threading.Event()
    gate = HashGate(1, per_address, 10.0, 100, lambda a: standing.get(a, 0))

    def work(address: str) -> None:
        if address == "first":
            release.wait(5)
        order.append(address)

    async def main() -> None:
        async with anyio.create_task_group() as tg:
            tg.start_soon(gate.run, "first", lambda: False, work, "first")
            await anyio.sleep(0.05)
            for address in arrivals:
                tg.start_soon(gate.run, address, lambda: False, work, address)
                await anyio.sleep(0.01)
            release.set()

    anyio.run(main)
    return order[1:]


def test_one_address_cannot_make_others_wait_behind_all_its_attempts() -> None:
    assert _gate_order(["a", "a", "a", "b", "c"], {}) == ["b", "c", "a", "a", "a"]


def test_equal_addresses_are_served_in_arrival_order() -> None:
    assert _gate_order(["c", "a", "b"], {}) == ["c", "a", "b"]


def test_the_gate_serves_the_address_with_fewest_failures_first() -> None:
    order = _gate_order(["bad", "bad", "worse", "clean"], {"bad": 2, "worse": 5})
    assert order == ["clean", "bad", "bad", "worse"]


def test_the_gate_prefers_the_address_asking_least() -> None:
    order = _gate_order(["busy", "busy", "busy", "quiet"], {})
    assert order[0] == "quiet"


def test_the_gate_bounds_its_queue_and_the_wait() -> None:
    gate = HashGate(1, 1, 0.1, 2)
    results: list[str] = []

    async def attempt(address: str) -> None:
        try:
            await gate.run(address, lambda: False, time.sleep, 0.5)
            results.append("ran")
        except Busy:
            results.append("busy")

    async def main() -> None:
        async with anyio.create_task_group() as tg:
            for n in range(5):
                tg.start_soon(attempt, f"a{n}")
                await anyio.sleep(0.01)

    anyio.run(main)
    # one runs; two wait and time out; two find the queue full
    assert sorted(results) == ["busy"] * 4 + ["ran"]
    assert gate.busy == 4 and gate.waiting == 0


def test_the_gate_skips_attempts_whose_connection_went_away() -> None:
    gate = HashGate(1, 1, 1.0, 10)
    ran: list[int] = []

    async def main() -> None:
        assert await gate.run("a", lambda: True, ran.append, 1) == (False, None)
        assert await gate.run("a", lambda: False, ran.append, 2) == (True, None)

    anyio.run(main)
    assert ran == [2] and gate.skipped == 1


def test_failures_delay_then_ban_then_forget() -> None:
    now = [0.0]
    failures = Failures(3, 60, 30, base_delay=0.5, clock=lambda: now[0])
    assert failures.delay("x") == 0
    assert failures.failed("x") is False
    assert failures.delay("x") == 0.5
    assert failures.failed("x") is False
    assert failures.delay("x") == 1.0
    assert failures.failed("x") is True
    assert failures.banned("x") and not failures.banned("y")
    now[0] = 31
    assert not failures.banned("x")
    assert failures.bans == 1 and failures.refused == 1 and failures.failures == 3


def test_failures_outside_the_window_do_not_count() -> None:
    now = [0.0]
    failures = Failures(2, 10, 30, clock=lambda: now[0])
    failures.failed("x")
    now[0] = 11
    assert failures.failed("x") is False


def test_the_failure_table_is_bounded() -> None:
    failures = Failures(5, 60, 30, max_addresses=100)
    for n in range(1000):
        failures.failed(f"10.0.{n // 256}.{n % 256}")
    assert failures.recent("10.0.0.0") == 0 and failures.recent("10.0.3.231") == 1


def test_the_dummy_hash_costs_what_the_users_cost() -> None:
    stored = [parse_password(hash_password("x", iterations=1234)),
              parse_password(hash_password("y", iterations=1234)),
              parse_password(hash_password("z", "scrypt"))]
    dummy = dummy_like(stored)
    assert dummy is not None
    assert (dummy.scheme, dummy.iterations) == ("pbkdf2_sha256", 1234)
    assert dummy.salt != stored[0].salt
    assert dummy_like([parse_password("plain-text")]) is None


@pytest.mark.parametrize(("key", "value", "message"), [
    ("hash_workers", 0, "out of range"),
    ("hash_workers", 1.5, "must be an integer"),
    ("hash_queue_timeout", "3", "must be a number"),
    ("ban_after", True, "must be an integer"),
    ("use_username_as_clientid", "yes", "must be true or false"),
])
def test_bad_guard_settings_name_the_key(key: str, value: Any, message: str) -> None:
    with pytest.raises(PluginConfigError) as caught:
        LedgerPlugin({"users": {"a": {"password": "p"}}, key: value})
    assert caught.value.key == key and message in caught.value.message


def test_one_worker_is_kept_for_unsuspicious_addresses() -> None:
    # two workers; an address with failures and many attempts uses one of them, and a
    # clean address starts at once on the other
    gate = HashGate(2, 2, 10.0, 100, lambda a: 1 if a == "bad" else 0)
    started: dict[str, float] = {}
    release = threading.Event()

    def work(address: str) -> None:
        started.setdefault(address, time.monotonic())
        if address == "bad":
            release.wait(5)

    async def main() -> None:
        async with anyio.create_task_group() as tg:
            for _ in range(5):
                tg.start_soon(gate.run, "bad", lambda: False, work, "bad")
            await anyio.sleep(0.1)
            assert gate.waiting == 4  # one bad attempt runs (its share is two)
            begin = time.monotonic()
            await gate.run("good", lambda: False, work, "good")
            assert started["good"] - begin < 0.5
            release.set()

    anyio.run(main)
