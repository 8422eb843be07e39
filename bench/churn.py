"""Connection churn in waves: connect rate and the broker's RSS after each wave.

    python3 bench/churn.py --waves 6 --clients 2000 --concurrency 100

Each wave: ``--clients`` short-lived clients, ``--concurrency`` at a time, MQTT 3.1.1 and
5.0, about 40 % persistent sessions drawn from a pool of 400 ids, half with wills, 1-5
QoS 0/1 publishes each to 50 topics, ending by DISCONNECT, close or reset. Prints one
line per wave (seconds, connects/s, RSS) and a JSON summary; it measures, it does not
judge (the soak judges).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import time

from loadkit import V5, BrokerProcess, Client

from midge.codec import Will


async def one(port: int, n: int, rng: random.Random) -> bool:
    persistent = rng.random() < 0.4
    cid = f"churn-{rng.randrange(400)}" if persistent else f"churn-t{n}"
    level = rng.choice([4, V5])
    will = Will(f"churn/will/{n % 50}", b"gone", 0) if rng.random() < 0.5 else None
    props = {0x11: 300} if persistent and level == V5 else {}
    try:
        client, _ = await Client.connect(port, cid, level, clean=not persistent, will=will,
                                         properties=props)
    except (OSError, ConnectionError, TimeoutError, AssertionError):
        return False
    try:
        for _ in range(rng.randint(1, 5)):
            await client.publish(f"churn/{rng.randrange(50)}", b"c", rng.choice([0, 1]),
                                 timeout=5)
    except (OSError, ConnectionError, TimeoutError, RuntimeError):
        pass
    await client.close(rng.choice(["disconnect", "close", "reset"]))
    return True


async def wave(port: int, clients: int, concurrency: int, start: int,
               rng: random.Random) -> tuple[float, int]:
    began = time.monotonic()
    semaphore = asyncio.Semaphore(concurrency)
    done = 0

    async def limited(n: int) -> None:
        nonlocal done
        async with semaphore:
            ok = await one(port, n, rng)
        done += ok

    await asyncio.gather(*(limited(start + i) for i in range(clients)))
    return time.monotonic() - began, done


async def run(broker: BrokerProcess, waves: int, clients: int,
              concurrency: int) -> list[dict[str, float]]:
    rng = random.Random(7)
    out = []
    for index in range(waves):
        seconds, connected = await wave(broker.port, clients, concurrency,
                                        index * clients, rng)
        await asyncio.sleep(1.0)
        rss = broker.rss_kib() / 1024
        row = {"wave": index + 1, "seconds": round(seconds, 2),
               "connects_per_s": round(connected / seconds), "rss_mib": round(rss, 1)}
        sys.stderr.write(f"wave {index + 1}: {seconds:.2f} s, {connected / seconds:.0f} "
                         f"connects/s, RSS {rss:.1f} MiB\n")
        out.append(row)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--waves", type=int, default=6)
    parser.add_argument("--clients", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=100)
    parser.add_argument("--broker-arg", action="append", default=[])
    args = parser.parse_args(argv)
    broker = BrokerProcess(args.broker_arg)
    try:
        rss_start = broker.rss_kib() / 1024
        rows = asyncio.run(run(broker, args.waves, args.clients, args.concurrency))
    finally:
        code = broker.stop()
    result = {"rss_start_mib": round(rss_start, 1), "waves": rows, "broker_exit": code,
              "log_problems": broker.log_problems()[:5]}
    sys.stdout.write(json.dumps(result, indent=1) + "\n")
    return 0 if code == 0 and not result["log_problems"] else 1


if __name__ == "__main__":
    sys.exit(main())
