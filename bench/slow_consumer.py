"""Slow consumer: does one subscriber that never reads hurt the others?

    python3 bench/slow_consumer.py                          # midge, drop and backpressure
    python3 bench/slow_consumer.py --broker mosquitto       # the reference
    python3 bench/slow_consumer.py --rounds 3 --json out.json
    python3 bench/slow_consumer.py --modes drop --qos 1 --profile /tmp/midge.prof

Two publishers send 1 KiB messages to one topic as fast as the broker accepts them (the
yardstick's mqbench, open loop: ``-P 2 -S 1 -t shared -f exact -W 0 -s 1024``); its one
healthy subscriber reads and acknowledges everything; a second subscriber, a raw socket
here, sends CONNECT and SUBSCRIBE, reads the two answers and then never reads again.
For each case (broker, ``queue_full`` mode, QoS) it reports what the healthy subscriber
received (msg/s, and in backpressure mode whether it lost anything), how many messages
the broker accepted, and the broker's RSS before, at its peak during the run and after
(the stuck subscriber's queue must stay within max_queued_messages/max_queued_bytes).
The broker is pinned to ``--broker-cpu`` and mqbench to ``--load-cpu``. In backpressure
mode the publishers are held until the stuck subscriber has gone ``stuck_timeout`` s
without acknowledging; the measurement starts after ``--warmup`` s (default: that
timeout and 2 s more, so it measures the steady state after the stuck one is found).
It measures, it does not judge.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from loadkit import BrokerProcess, MosquittoProcess

from midge.codec import ConnAck, Connect, Decoder, Role, SubAck, Subscribe, Subscription, encode

TOPIC = "bench/all"  # mqbench's topic with --topics shared and the default prefix
MQBENCH = os.environ.get("MQBENCH", "/tmp/yard/mqbench")
#: midge's default stuck_timeout (seconds), for the backpressure warm-up
STUCK_TIMEOUT = 10


def stuck_subscriber(port: int, qos: int) -> socket.socket:
    """Connected and subscribed, then never read: its socket buffers fill, then the
    broker's queue for it."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.sendall(encode(Connect("stuck-subscriber", 4, keepalive=0), 4))
    sock.sendall(encode(Subscribe(1, [Subscription(TOPIC, qos)]), 4))
    decoder = Decoder(Role.CLIENT, protocol_level=4)
    answers: list[Any] = []
    while len(answers) < 2:
        data = sock.recv(4096)
        if not data:
            raise RuntimeError("the broker closed the stuck subscriber's connection")
        decoder.feed(data)
        while (packet := decoder.next_packet()) is not None:
            answers.append(packet)
    assert isinstance(answers[0], ConnAck) and isinstance(answers[1], SubAck), answers
    return sock


class RssSampler(threading.Thread):
    def __init__(self, broker: BrokerProcess, every: float = 0.25) -> None:
        super().__init__(daemon=True)
        self.broker = broker
        self.every = every
        self.peak = 0
        self._done = threading.Event()

    def run(self) -> None:
        while not self._done.wait(self.every):
            if not self.broker.alive:
                return
            self.peak = max(self.peak, self.broker.rss_kib())

    def stop(self) -> None:
        self._done.set()
        self.join(5)


def one(broker_name: str, mode: str, qos: int, seconds: float, warmup: float | None,
        broker_cpu: int | None, load_cpu: int | None, profile: str | None) -> dict[str, Any]:
    if broker_name == "mosquitto":
        broker: BrokerProcess = MosquittoProcess(cpu=broker_cpu)
    else:
        # in memory (no storage table), every client allowed; --port replaces the port
        config = (f'[broker]\nqueue_full = "{mode}"\n\n[[listeners]]\ntype = "tcp"\n'
                  'host = "127.0.0.1"\nport = 1883\n\n[plugins.auth_allow]\n')
        prefix = ["-m", "cProfile", "-o", profile] if profile else []
        broker = BrokerProcess(config=config, cpu=broker_cpu, python_args=prefix)
    if warmup is None:
        warmup = STUCK_TIMEOUT + 2 if mode == "backpressure" else 1
    sampler = RssSampler(broker)
    try:
        rss_before = broker.rss_kib()
        stuck = stuck_subscriber(broker.port, qos)
        sampler.start()
        command = [MQBENCH, "-p", str(broker.port), "-P", "2", "-S", "1", "-t", "shared",
                   "-f", "exact", "-q", str(qos), "-Q", str(qos), "-W", "0", "-s", "1024",
                   "-w", str(warmup), "-d", str(seconds), "--pid", str(broker.proc.pid),
                   "--label", f"{broker_name}-{mode}-qos{qos}"]
        if load_cpu is not None:
            command = ["taskset", "-c", str(load_cpu), *command]
        done = subprocess.run(command, capture_output=True, text=True,
                              timeout=warmup + seconds + 90, check=False)
        sampler.stop()
        time.sleep(2.0)
        rss_after = broker.rss_kib() if broker.alive else None
        stuck.close()
    finally:
        code = broker.stop()
        sampler.stop()
    try:
        bench = json.loads(done.stdout)
    except json.JSONDecodeError:
        raise RuntimeError(f"mqbench: {done.stdout} {done.stderr}") from None
    return {
        "broker": broker_name, "mode": mode if broker_name == "midge" else "(mosquitto)",
        "qos": qos, "healthy_msg_s": round(bench["deliver_rate"]),
        "accepted_msg_s": round(bench["pub_rate"]),
        "published": bench["published"], "acked": bench["acked"],
        "delivered": bench["delivered"], "lost": bench["lost"],
        "latency_p50_ms": round(bench["latency_us"].get("p50", 0) / 1000, 1),
        "broker_cpu_pct": bench["broker_cpu_pct"],
        "rss_mib": {"before": round(rss_before / 1024, 1),
                    "peak": round(sampler.peak / 1024, 1),
                    "after": round(rss_after / 1024, 1) if rss_after else None},
        "broker_exit": code,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--broker", choices=["midge", "mosquitto"], default="midge")
    parser.add_argument("--modes", default="drop,backpressure",
                        help="midge's queue_full modes, comma-separated")
    parser.add_argument("--qos", default="1,0", help="comma-separated")
    parser.add_argument("--seconds", type=float, default=10.0, help="measured seconds")
    parser.add_argument("--warmup", type=float, default=None,
                        help="seconds before measuring (default: 1; backpressure: 12)")
    parser.add_argument("--rounds", type=int, default=1, help="runs per case (medians)")
    two = (os.cpu_count() or 1) >= 2
    parser.add_argument("--broker-cpu", type=int, default=0 if two else None)
    parser.add_argument("--load-cpu", type=int, default=1 if two else None)
    parser.add_argument("--profile", default=None,
                        help="run midge under cProfile, writing this file (one case only)")
    parser.add_argument("--json", default=None, help="also write every run here")
    args = parser.parse_args(argv)
    modes = args.modes.split(",") if args.broker == "midge" else ["drop"]
    cases = [(mode, int(qos)) for mode in modes for qos in args.qos.split(",")]
    if args.profile and (len(cases) > 1 or args.rounds > 1):
        parser.error("--profile: one case, one round")
    runs: list[dict[str, Any]] = []
    for _ in range(args.rounds):
        for mode, qos in cases:  # rounds interleave the cases: drift hits all alike
            row = one(args.broker, mode, qos, args.seconds, args.warmup, args.broker_cpu,
                      args.load_cpu, args.profile)
            sys.stderr.write(f"{row['broker']} {row['mode']} QoS {qos}: healthy "
                             f"{row['healthy_msg_s']} msg/s, accepted {row['accepted_msg_s']}"
                             f" msg/s, lost {row['lost']}, RSS {row['rss_mib']}\n")
            runs.append(row)
    summary = []
    for mode, qos in cases:
        mine = [r for r in runs if r["qos"] == qos and
                (r["mode"] == mode or args.broker != "midge")]
        summary.append({
            "broker": args.broker, "mode": mine[0]["mode"], "qos": qos, "rounds": len(mine),
            **{key: statistics.median(r[key] for r in mine)
               for key in ("healthy_msg_s", "accepted_msg_s", "lost", "latency_p50_ms")},
            "rss_peak_mib": statistics.median(r["rss_mib"]["peak"] for r in mine),
            "rss_after_mib": statistics.median(r["rss_mib"]["after"] or 0 for r in mine),
        })
    if args.json:
        Path(args.json).write_text(json.dumps({"runs": runs, "summary": summary}, indent=1))
    sys.stdout.write(json.dumps(summary, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
