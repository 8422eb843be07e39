"""Network fuzz: mutated MQTT packets over many short connections to a real broker.

    python3 bench/fuzz.py --packets 1000000 --seconds 3600   # the long run
    python3 bench/fuzz.py --packets 60000 --seconds 25       # what .ci/run runs

Each connection sends a CONNECT (valid, or mutated one time in eight), then a few packets
built from valid ones (PUBLISH at every QoS, SUBSCRIBE, UNSUBSCRIBE, acks, PINGREQ, AUTH,
DISCONNECT) with bytes flipped, inserted, cut or their length field damaged, or plain
random bytes; it reads what comes back for a moment and ends by close or reset. Bounded
by ``--packets`` and ``--seconds``, whichever comes first. Meanwhile a long-lived QoS 1
subscriber must receive every probe a long-lived publisher sends (routing re-checked
every ``--check-every`` connections), and the broker's RSS and fds are sampled. It passes
(exit 0) when the broker is alive, every routing check passed, the fds are back where
they were, RSS after the run is within ``--rss-limit`` MiB of the start, and the log has
no traceback or ERROR line. A JSON summary is printed on stdout, with what the broker
logged (``log``: lines, WARNING lines, the "N similar messages suppressed" summaries and
the N they stand for, and the path of the kept log file).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import socket
import struct
import sys
import time
from typing import Any

from loadkit import BrokerProcess, Client, Samples

from midge.codec import (
    PROTOCOL_5,
    Auth,
    Connect,
    Disconnect,
    PingReq,
    PubAck,
    PubComp,
    Publish,
    PubRec,
    PubRel,
    Subscribe,
    Subscription,
    Unsubscribe,
    Will,
    encode,
)

TOPICS = ["f/a", "f/b/c", "fuzzcheck/x", "$SYS/x", "f/+", "#", "", "f/\u00e9"]


def templates(level: int, rng: random.Random) -> list[bytes]:
    """Valid packets to mutate, encoded for ``level``."""
    topic = rng.choice(TOPICS[:4])
    packets: list[Any] = [
        Publish(topic, rng.randbytes(rng.randrange(64)), 0),
        Publish(topic, b"p", 1, packet_id=rng.randrange(1, 65536)),
        Publish(topic, b"p", 2, rng.random() < 0.3, packet_id=rng.randrange(1, 65536)),
        Subscribe(rng.randrange(1, 65536), [Subscription(rng.choice(TOPICS[:6]),
                                                         rng.randrange(3))]),
        Unsubscribe(rng.randrange(1, 65536), [rng.choice(TOPICS[:6])]),
        PubAck(rng.randrange(1, 65536)), PubRec(rng.randrange(1, 65536)),
        PubRel(rng.randrange(1, 65536)), PubComp(rng.randrange(1, 65536)),
        PingReq(), Disconnect(),
    ]
    if level == PROTOCOL_5:
        packets.append(Auth(0x19))
    out = []
    for packet in packets:
        with contextlib.suppress(Exception):
            out.append(encode(packet, level))
    return out


def mutate(data: bytes, rng: random.Random) -> bytes:
    buf = bytearray(data)
    kind = rng.randrange(7)
    if kind == 0 and buf:
        for _ in range(rng.randint(1, 3)):
            buf[rng.randrange(len(buf))] = rng.randrange(256)
    elif kind == 1:
        pos = rng.randrange(len(buf) + 1)
        buf[pos:pos] = rng.randbytes(rng.randint(1, 8))
    elif kind == 2 and len(buf) > 1:
        del buf[rng.randrange(1, len(buf)):]
    elif kind == 3 and len(buf) > 1:
        buf[1] = rng.choice([0x00, 0x7F, 0xFF, 0x80])  # the remaining length
        if buf[1] & 0x80:
            buf[2:2] = bytes([0xFF, 0xFF, 0x7F])
    elif kind == 4:
        buf[0] = rng.randrange(256)  # type and flags
    elif kind == 5:
        return rng.randbytes(rng.randint(1, 64))
    return bytes(buf)  # kind 6: unchanged (a valid packet in a random place)


class Fuzz:
    def __init__(self, broker: BrokerProcess, packets: int, seconds: float,
                 concurrency: int, check_every: int, seed: int) -> None:
        self.broker = broker
        self.port = broker.port
        self.budget = packets
        self.deadline = time.monotonic() + seconds
        self.concurrency = concurrency
        self.check_every = check_every
        self.rng = random.Random(seed)
        self.sent = 0
        self.connections = 0
        self.checks = 0
        self.checks_failed = 0

    def _done(self) -> bool:
        return self.sent >= self.budget or time.monotonic() >= self.deadline

    async def one(self) -> None:
        rng = random.Random(self.rng.random())
        level = rng.choice([3, 4, 5])
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection("127.0.0.1", self.port), 5)
        except (OSError, TimeoutError):
            return
        self.connections += 1
        try:
            will = Will("f/will", b"w", rng.randrange(3)) if rng.random() < 0.2 else None
            connect = encode(Connect(f"fz{rng.randrange(200)}", level,
                                     clean_start=rng.random() < 0.7, will=will,
                                     keepalive=rng.choice([0, 5, 60])), level)
            chunks = [mutate(connect, rng) if rng.random() < 0.125 else connect]
            pool = templates(level, rng)
            for _ in range(rng.randint(1, 12)):
                packet = rng.choice(pool)
                chunks.append(mutate(packet, rng) if rng.random() < 0.6 else packet)
            self.sent += len(chunks)
            if rng.random() < 0.5:
                writer.write(b"".join(chunks))
            else:
                for chunk in chunks:
                    writer.write(chunk)
                    await asyncio.sleep(0)
            with contextlib.suppress(OSError, TimeoutError, ConnectionError):
                await asyncio.wait_for(reader.read(65536), rng.choice([0.001, 0.02, 0.1]))
        except (OSError, ConnectionError):
            pass
        finally:
            if rng.random() < 0.3:
                sock = writer.get_extra_info("socket")
                if sock is not None:
                    with contextlib.suppress(OSError):
                        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                        struct.pack("ii", 1, 0))
            writer.close()

    async def check(self, pub: Client, sub: Client) -> None:
        self.checks += 1
        probe = b"probe-%d" % self.checks
        try:
            await pub.publish("fuzzcheck/x", probe, 1, timeout=5)
            while True:
                msg = await asyncio.wait_for(sub.messages.get(), 5)
                if msg.payload == probe:
                    return
        except (TimeoutError, ConnectionError, OSError, RuntimeError):
            self.checks_failed += 1

    async def run(self, sample_every: float) -> dict[str, Any]:
        samples = Samples()
        started = time.monotonic()
        fds_before = self.broker.fds()
        rss_before = self.broker.rss_kib()
        sub, _ = await Client.connect(self.port, "fuzz-checker-sub", PROTOCOL_5)
        await sub.subscribe("fuzzcheck/#", 1)
        pub, _ = await Client.connect(self.port, "fuzz-checker-pub", PROTOCOL_5)
        running: set[asyncio.Task[None]] = set()
        next_sample = started
        next_check = self.check_every
        while not self._done() and self.broker.alive:
            while len(running) < self.concurrency and not self._done():
                task = asyncio.create_task(self.one())
                running.add(task)
                task.add_done_callback(running.discard)
            await asyncio.sleep(0.002)
            if self.connections >= next_check:
                next_check += self.check_every
                await self.check(pub, sub)
            if time.monotonic() >= next_sample:
                next_sample += sample_every
                samples.add(self.broker, time.monotonic() - started)
        if running:
            await asyncio.wait(running, timeout=10)
        await self.check(pub, sub)
        await pub.close()
        await sub.close()
        await asyncio.sleep(1.5)  # the broker closes what was closed
        return {
            "seconds": round(time.monotonic() - started, 1),
            "packets": self.sent, "connections": self.connections,
            "routing_checks": self.checks, "routing_failed": self.checks_failed,
            "rss_kib": {"before": rss_before, "peak": max(samples.rss, default=0),
                        "end": self.broker.rss_kib() if self.broker.alive else None},
            "fds": {"before": fds_before, "peak": max(samples.fds, default=0),
                    "after": self.broker.fds() if self.broker.alive else None},
            "samples": list(zip(samples.times, samples.rss, samples.fds, strict=True)),
        }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--packets", type=int, default=200_000)
    parser.add_argument("--seconds", type=float, default=120)
    parser.add_argument("--concurrency", type=int, default=30)
    parser.add_argument("--check-every", type=int, default=500,
                        help="connections between routing checks")
    parser.add_argument("--sample", type=float, default=2.0)
    parser.add_argument("--rss-limit", type=float, default=40.0,
                        help="MiB RSS may end above its start")
    parser.add_argument("--seed", type=int, default=12)
    parser.add_argument("--broker-arg", action="append", default=[])
    args = parser.parse_args(argv)
    broker = BrokerProcess(args.broker_arg)
    try:
        report = asyncio.run(Fuzz(broker, args.packets, args.seconds, args.concurrency,
                                  args.check_every, args.seed).run(args.sample))
        report["broker_alive"] = broker.alive
    finally:
        code = broker.stop()
    report["broker_exit"] = code
    report["log_problems"] = broker.log_problems()[:10]
    report["log"] = broker.log_counts()
    failures = []
    if not report["broker_alive"]:
        failures.append("the broker died")
    if report["routing_failed"] or not report["routing_checks"]:
        failures.append(f"routing checks failed: {report['routing_failed']} of "
                        f"{report['routing_checks']}")
    fds = report["fds"]
    if fds["after"] is None or fds["after"] > fds["before"] + 2:
        failures.append(f"fds {fds['before']} -> {fds['after']}")
    rss = report["rss_kib"]
    if rss["end"] is None or rss["end"] - rss["before"] > args.rss_limit * 1024:
        failures.append(f"RSS {rss['before']} -> {rss['end']} KiB")
    if report["log_problems"]:
        failures.append(f"broker log: {report['log_problems'][:3]}")
    if code != 0:
        failures.append(f"broker exit status {code}")
    report["failures"] = failures
    samples = report.pop("samples")
    sys.stdout.write(json.dumps(report, indent=1) + "\n")
    trace = " ".join(f"{t:.0f}:{r}:{f}" for t, r, f in samples)
    sys.stderr.write(f"samples (s, RSS KiB, fds): {trace}\n")
    verdict = "PASS" if not failures else "FAIL: " + "; ".join(failures)
    sys.stderr.write(f"fuzz: {verdict}\n")
    return 0 if not failures else 1


if __name__ == "__main__":
    sys.exit(main())
