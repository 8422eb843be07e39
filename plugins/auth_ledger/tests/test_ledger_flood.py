"""The login flood: attackers hammering a known user with wrong passwords must not keep a
legitimate user out.

A real broker with auth_ledger and real PBKDF2 hashes (600,000 iterations); 100
attacker connections from ten loopback source addresses (127.0.0.2-11) send CONNECT
with ``alice`` and wrong passwords, reconnecting as soon as they are answered, for 10
s, from another process; meanwhile, from its third second on, ``bob`` logs in from
127.0.0.1 every half second. Every one of bob's logins
must complete within 1 s. Bounded: 10 s of attack, 100 sockets at a time.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from midge_auth_ledger import hash_password

from midge.testing import RunningBroker

BrokerFactory = Callable[..., RunningBroker]

ATTACKERS = 100
SOURCES = [f"127.0.0.{n}" for n in range(2, 12)]
ATTACK_SECONDS = 10.0


def _string(data: bytes) -> bytes:
    return len(data).to_bytes(2, "big") + data


def connect_packet(client_id: str, username: str, password: str) -> bytes:
    """A raw MQTT 3.1.1 CONNECT with a user name and password, clean session."""
    body = (_string(b"MQTT") + bytes([4, 0xC2]) + (30).to_bytes(2, "big")
            + _string(client_id.encode()) + _string(username.encode())
            + _string(password.encode()))
    out = bytearray(b"\x10")
    n = len(body)
    while True:
        n, digit = divmod(n, 128)
        out.append(digit | (0x80 if n else 0))
        if not n:
            break
    return bytes(out) + body


async def login(host: str, port: int, packet: bytes, source: str | None = None,
                timeout: float = 15.0) -> int | None:
    """Send ``packet`` and return the CONNACK return code (None: closed without one)."""
    local = (source, 0) if source else None
    reader, writer = await asyncio.open_connection(host, port, local_addr=local)
    try:
        writer.write(packet)
        answer = await asyncio.wait_for(reader.readexactly(4), timeout)
        return answer[3]
    except (asyncio.IncompleteReadError, ConnectionError, TimeoutError):
        return None
    finally:
        writer.close()


async def attack(host: str, port: int, attackers: int, seconds: float) -> dict[str, Any]:
    """``attackers`` connections sending CONNECT for alice with wrong passwords, each
    reconnecting as soon as it is answered, for ``seconds``; what they got."""
    stop = time.monotonic() + seconds
    answered: dict[str, int] = {}
    sent = 0

    async def attacker(index: int) -> None:
        nonlocal sent
        source = SOURCES[index % len(SOURCES)]
        attempt = 0
        while time.monotonic() < stop:
            attempt += 1
            sent += 1
            packet = connect_packet(f"evil-{index}-{attempt}", "alice", f"guess{attempt}")
            try:
                code = await login(host, port, packet, source,
                                   timeout=max(0.1, stop - time.monotonic()))
            except OSError:
                code = None
                await asyncio.sleep(0.05)
            answered[str(code)] = answered.get(str(code), 0) + 1

    await asyncio.gather(*(attacker(i) for i in range(attackers)))
    return {"attempts": sent, "answered": answered}


def run_flood(broker: RunningBroker, attackers: int = ATTACKERS,
              seconds: float = ATTACK_SECONDS) -> dict[str, Any]:
    """The attack in another process (as an attacker would be: no share of this
    process's interpreter), bob's logins from here; the figures."""
    script = (f"import asyncio, json, sys; sys.path.insert(0, {str(Path(__file__).parent)!r}); "
              "import test_ledger_flood as f; "
              f"print(json.dumps(asyncio.run(f.attack({broker.host!r}, {broker.port}, "
              f"{attackers}, {seconds}))))")
    attackers_process = subprocess.Popen([sys.executable, "-c", script],
                                         stdout=subprocess.PIPE, text=True)
    latencies: list[float] = []
    codes: list[int | None] = []

    async def legitimate() -> None:
        stop = time.monotonic() + seconds
        # the attack builds up first: its first attempts from each address are as
        # unsuspicious as bob's and may hold the workers for one hash
        await asyncio.sleep(2.0)
        n = 0
        while time.monotonic() < stop - 0.5:
            n += 1
            start = time.monotonic()
            code = await login(broker.host, broker.port,
                               connect_packet(f"bob-{n}", "bob", "bob-pw"), "127.0.0.1")
            latencies.append(time.monotonic() - start)
            codes.append(code)
            await asyncio.sleep(0.5)

    try:
        asyncio.run(legitimate())
        out, _ = attackers_process.communicate(timeout=seconds + 30)
    finally:
        attackers_process.kill()
    figures: dict[str, Any] = json.loads(out)
    figures.update(latencies=latencies, codes=codes)
    return figures


def _ledger() -> dict[str, Any]:
    return {
        "users": {
            "alice": {"password": hash_password("alice-pw"), "acl": {"alice/#": 3}},
            "bob": {"password": hash_password("bob-pw"), "acl": {"bob/#": 3}},
        },
        "acl_default": "deny",
    }


def test_legitimate_login_completes_within_a_second_during_a_login_flood(
        midge_broker_factory: BrokerFactory) -> None:
    broker = midge_broker_factory(plugins={"auth_ledger": _ledger()})
    figures = run_flood(broker)
    latencies = figures["latencies"]
    print(f"\nbob's logins during the flood: n={len(latencies)} "  # noqa: T201
          f"median={statistics.median(latencies) * 1000:.0f} ms "
          f"max={max(latencies) * 1000:.0f} ms; codes {figures['codes']}; "
          f"attacker attempts {figures['attempts']}, answers {figures['answered']}")
    assert len(latencies) >= 5
    assert figures["codes"] == [0] * len(latencies)
    assert max(latencies) < 1.0, latencies
