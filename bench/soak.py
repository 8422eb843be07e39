"""Soak: mixed load on a real broker for a given time; RSS and fds must stay flat.

    python3 bench/soak.py --seconds 1800            # the 30-minute soak
    python3 bench/soak.py --seconds 35 --warmup 10  # what .ci/run runs

The load, all on 127.0.0.1 against a broker this script starts (``python -m midge``):
QoS 1 and QoS 2 publishers whose every acknowledged message must reach a persistent
subscriber that reconnects now and then (nothing acknowledged may be lost); a QoS 0
stream; retained messages re-checked by fresh subscribers; a shared subscription whose
members must together get each message exactly once; and connection churn (MQTT 3.1.1
and 5.0, 40 % persistent sessions from a pool of 400 ids, half with wills, 1-5 QoS 0/1
publishes each, ending by DISCONNECT, close or reset).

It passes (exit 0) when, after the warm-up, RSS grows by less than ``--rss-slack`` MiB
(least-squares over the samples) and the open fds are back where they were, nothing
acknowledged was lost, the routing checks all passed and the broker logged no traceback
or ERROR. A JSON summary is printed on stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import sys
import time
from typing import Any

from loadkit import V5, BrokerProcess, Client, Samples

from midge.codec import Will

#: the persistent subscriber's CONNECT properties: Session Expiry Interval 300 s
DURABLE = {0x11: 300}


class Soak:
    def __init__(self, broker: BrokerProcess, seconds: float, rate: float) -> None:
        self.broker = broker
        self.port = broker.port
        self.seconds = seconds
        self.rate = rate
        self.stop = asyncio.Event()
        #: (topic, seq) acknowledged to the QoS 1/2 publishers
        self.acked: set[tuple[str, int]] = set()
        #: (topic, seq) the persistent subscriber received
        self.durable: set[tuple[str, int]] = set()
        self.shared_got: list[int] = []
        self.shared_sent = 0
        self.checks_ok = 0
        self.checks_failed: list[str] = []
        self.connects = 0
        self.wills = 0
        self.qos0_sent = 0
        self.qos0_got = 0
        #: after the stop: how long the persistent subscriber may take to catch up
        self.drain_deadline = float("inf")

    async def _paced(self, rate: float) -> None:
        await asyncio.sleep(random.expovariate(rate) if rate > 0 else 0)

    async def publisher(self, qos: int) -> None:
        topic = f"soak/q/{qos}"
        client, _ = await Client.connect(self.port, f"soak-pub{qos}", V5)
        seq = 0
        while not self.stop.is_set():
            seq += 1
            await client.publish(topic, b"%d" % seq, qos)
            self.acked.add((topic, seq))
            await self._paced(self.rate)
        await client.close()

    async def durable_subscriber(self, client: Client) -> None:
        """A persistent session (v5, expiry 300 s) that goes away for a while now and
        then; what was acknowledged meanwhile waits in its queue."""
        while True:
            online_until = time.monotonic() + random.uniform(2, 6)
            while time.monotonic() < online_until or self.stop.is_set():
                try:
                    msg = await asyncio.wait_for(client.messages.get(), 0.5)
                except TimeoutError:
                    if self.stop.is_set() and self.acked <= self.durable:
                        await client.close()
                        return
                    if self.stop.is_set() and time.monotonic() > self.drain_deadline:
                        await client.close()
                        return
                    continue
                self.durable.add((msg.topic, int(msg.payload)))
            await client.close(random.choice(["disconnect", "close"]))
            # what it received (and acknowledged) before it went away counts too
            while not client.messages.empty():
                msg = client.messages.get_nowait()
                self.durable.add((msg.topic, int(msg.payload)))
            await asyncio.sleep(random.uniform(0.2, 1.0))
            client, _ = await Client.connect(self.port, "soak-durable", V5, clean=False,
                                             properties=DURABLE)

    async def qos0(self) -> None:
        sub, _ = await Client.connect(self.port, "soak-z-sub")
        await sub.subscribe("soak/z", 0)
        pub, _ = await Client.connect(self.port, "soak-z-pub")

        async def count() -> None:
            while True:
                await sub.messages.get()
                self.qos0_got += 1

        counter = asyncio.create_task(count())
        while not self.stop.is_set():
            await pub.publish("soak/z", b"z" * 64)
            self.qos0_sent += 1
            await self._paced(self.rate * 2)
        await asyncio.sleep(1)
        counter.cancel()
        await pub.close()
        await sub.close()

    async def retained(self) -> None:
        """100 retained topics, rewritten in turn; every few seconds a fresh subscriber
        must receive exactly the current value of each."""
        pub, _ = await Client.connect(self.port, "soak-r-pub")
        values: dict[int, int] = {}
        round_ = 0
        while not self.stop.is_set():
            round_ += 1
            for i in range(100):
                if i % 7 == round_ % 7:
                    values[i] = round_
                    await pub.publish(f"soak/r/{i}", b"%d" % round_, 1, retain=True)
            sub, _ = await Client.connect(self.port, f"soak-r-{round_}")
            await sub.subscribe("soak/r/#", 0)
            got: dict[int, int] = {}
            with contextlib.suppress(TimeoutError):
                while len(got) < len(values):
                    msg = await asyncio.wait_for(sub.messages.get(), 5)
                    got[int(msg.topic.rsplit("/", 1)[1])] = int(msg.payload)
            await sub.close()
            if got == values:
                self.checks_ok += 1
            else:
                self.checks_failed.append(f"retained round {round_}: {len(got)} of "
                                          f"{len(values)} right")
            await asyncio.sleep(2)
        await pub.close()

    async def shared(self) -> None:
        members = []
        for name in ("a", "b"):
            client, _ = await Client.connect(self.port, f"soak-share-{name}", V5)
            await client.subscribe("$share/g/soak/s", 1)
            members.append(client)
        pub, _ = await Client.connect(self.port, "soak-share-pub", V5)

        async def collect(client: Client) -> None:
            while True:
                msg = await client.messages.get()
                self.shared_got.append(int(msg.payload))

        tasks = [asyncio.create_task(collect(m)) for m in members]
        seq = 0
        while not self.stop.is_set():
            seq += 1
            await pub.publish("soak/s", b"%d" % seq, 1)
            self.shared_sent = seq
            await self._paced(self.rate)
        await asyncio.sleep(1.5)
        for task in tasks:
            task.cancel()
        for client in (*members, pub):
            await client.close()

    async def churn(self, concurrency: int) -> None:
        will_sub, _ = await Client.connect(self.port, "soak-will-sub")
        await will_sub.subscribe("soak/will/#", 0)

        async def count_wills() -> None:
            while True:
                await will_sub.messages.get()
                self.wills += 1

        counter = asyncio.create_task(count_wills())

        async def one(n: int) -> None:
            persistent = random.random() < 0.4
            cid = f"churn-{random.randrange(400)}" if persistent else f"churn-t{n}"
            level = random.choice([4, V5])
            will = Will(f"soak/will/{n % 50}", b"gone", 0) if random.random() < 0.5 else None
            props = {0x11: 60} if persistent and level == V5 else {}
            try:
                client, _ = await Client.connect(self.port, cid, level, clean=not persistent,
                                                 will=will, properties=props)
            except (OSError, ConnectionError, TimeoutError, AssertionError):
                return
            self.connects += 1
            try:
                for _ in range(random.randint(1, 5)):
                    await client.publish(f"soak/c/{random.randrange(50)}", b"c",
                                         random.choice([0, 1]), timeout=5)
            except (OSError, ConnectionError, TimeoutError, RuntimeError):
                pass
            await client.close(random.choice(["disconnect", "close", "reset"]))

        n = 0
        running: set[asyncio.Task[None]] = set()
        while not self.stop.is_set():
            while len(running) < concurrency:
                n += 1
                task = asyncio.create_task(one(n))
                running.add(task)
                task.add_done_callback(running.discard)
            await asyncio.sleep(0.01)
        if running:
            await asyncio.wait(running, timeout=10)
        counter.cancel()
        await will_sub.close()

    async def run(self, warmup: float, sample_every: float, churn: int) -> dict[str, Any]:
        samples = Samples()
        started = time.monotonic()
        fds_before = self.broker.fds()
        rss_before = self.broker.rss_kib()
        durable, _ = await Client.connect(self.port, "soak-durable", V5, properties=DURABLE)
        await durable.subscribe("soak/q/#", 2)
        tasks = [
            asyncio.create_task(self.publisher(1)),
            asyncio.create_task(self.publisher(2)),
            asyncio.create_task(self.durable_subscriber(durable)),
            asyncio.create_task(self.qos0()),
            asyncio.create_task(self.retained()),
            asyncio.create_task(self.shared()),
            asyncio.create_task(self.churn(churn)),
        ]
        while time.monotonic() - started < self.seconds:
            await asyncio.sleep(sample_every)
            samples.add(self.broker, time.monotonic() - started)
            if any(t.done() and t.exception() for t in tasks):
                break
        self.stop.set()
        self.drain_deadline = time.monotonic() + 20
        await asyncio.wait(tasks, timeout=40)
        errors = [repr(t.exception()) for t in tasks if t.done() and t.exception()]
        for task in tasks:
            task.cancel()
        await asyncio.sleep(1.0)  # let the broker close what the clients closed
        fds_after = self.broker.fds()
        post = [r for t, r in zip(samples.times, samples.rss, strict=True) if t >= warmup]
        lost = sorted(self.acked - self.durable)
        shared_dups = len(self.shared_got) - len(set(self.shared_got))
        shared_missing = self.shared_sent - len(set(self.shared_got))
        return {
            "seconds": round(time.monotonic() - started, 1),
            "rss_kib": {"before": rss_before, "after_warmup": post[0] if post else None,
                        "peak": max(samples.rss, default=0),
                        "end": samples.rss[-1] if samples.rss else None},
            "rss_slope_kib_per_min": round(samples.slope_kib_per_min(warmup), 1),
            "fds": {"before": fds_before, "peak": max(samples.fds, default=0),
                    "after": fds_after},
            "acknowledged": len(self.acked), "lost": len(lost), "lost_sample": lost[:5],
            "shared": {"sent": self.shared_sent, "duplicates": shared_dups,
                       "missing": shared_missing},
            "qos0": {"sent": self.qos0_sent, "received": self.qos0_got},
            "retained_checks": {"ok": self.checks_ok, "failed": self.checks_failed[:5]},
            "churn_connects": self.connects, "wills_received": self.wills,
            "task_errors": errors,
            "samples": list(zip(samples.times, samples.rss, samples.fds, strict=True)),
        }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--warmup", type=float, default=15,
                        help="seconds before RSS must stay flat")
    parser.add_argument("--rate", type=float, default=100,
                        help="messages/s of each QoS 1/2 and shared publisher (QoS 0: 2x)")
    parser.add_argument("--churn", type=int, default=20, help="churn clients at once")
    parser.add_argument("--sample", type=float, default=2.0, help="seconds between samples")
    parser.add_argument("--rss-slack", type=float, default=4.0,
                        help="MiB RSS may grow after the warm-up")
    parser.add_argument("--broker-arg", action="append", default=[],
                        help="extra argument for the broker command")
    args = parser.parse_args(argv)
    broker = BrokerProcess(args.broker_arg)
    try:
        report = asyncio.run(Soak(broker, args.seconds, args.rate).run(
            args.warmup, args.sample, args.churn))
        report["broker_alive"] = broker.alive
    finally:
        code = broker.stop()
    report["broker_exit"] = code
    report["log_problems"] = broker.log_problems()[:10]
    after = args.seconds - args.warmup
    growth_mib = report["rss_slope_kib_per_min"] * after / 60 / 1024
    report["rss_growth_after_warmup_mib"] = round(growth_mib, 2)
    failures = []
    if growth_mib > args.rss_slack:
        failures.append(f"RSS grew {growth_mib:.1f} MiB after the warm-up")
    if report["fds"]["after"] > report["fds"]["before"] + 2:
        failures.append(f"fds {report['fds']['before']} -> {report['fds']['after']}")
    if report["lost"]:
        failures.append(f"{report['lost']} acknowledged messages lost")
    if report["shared"]["duplicates"] or report["shared"]["missing"]:
        failures.append(f"shared subscription: {report['shared']}")
    if report["retained_checks"]["failed"] or not report["retained_checks"]["ok"]:
        failures.append(f"retained checks: {report['retained_checks']}")
    qos0 = report["qos0"]
    if qos0["received"] < qos0["sent"] * 0.99:
        failures.append(f"QoS 0 on loopback: {qos0['received']} of {qos0['sent']} received")
    if report["task_errors"]:
        failures.append(f"load errors: {report['task_errors']}")
    if report["log_problems"]:
        failures.append(f"broker log: {report['log_problems'][:3]}")
    if report["broker_exit"] != 0:
        failures.append(f"broker exit status {report['broker_exit']}")
    report["failures"] = failures
    samples = report.pop("samples")
    sys.stdout.write(json.dumps(report, indent=1) + "\n")
    trace = " ".join(f"{t:.0f}:{r}:{f}" for t, r, f in samples)
    sys.stderr.write(f"samples (s, RSS KiB, fds): {trace}\n")
    verdict = "PASS" if not failures else "FAIL: " + "; ".join(failures)
    sys.stderr.write(f"soak: {verdict}\n")
    return 0 if not failures else 1


if __name__ == "__main__":
    sys.exit(main())
