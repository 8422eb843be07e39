"""Connection churn in waves: connect rate and the broker's RSS after each wave.

    python3 bench/churn.py --waves 6 --clients 2000 --concurrency 100
    python3 bench/churn.py --storage              # midge with its default sqlite storage
    python3 bench/churn.py --broker mosquitto     # the same load against Mosquitto

Each wave: ``--clients`` short-lived clients, ``--concurrency`` at a time, MQTT 3.1.1 and
5.0, about 40 % persistent sessions drawn from a pool of 400 ids, half with wills, 1-5
QoS 0/1 publishes each to 50 topics (a QoS 1 one waits for its PUBACK), ending by
DISCONNECT, close or reset. Prints one line per wave (seconds, connects/s, RSS) and a
JSON summary; it measures, it does not judge (the soak judges).

The rule: the generator must not be what is measured. Packets are encoded once and
reused; clients are plain non-blocking sockets driven by one epoll selector per
generator process (``--procs``, each running its share of every wave and of the
concurrency), with no per-client objects beyond a small state record. The broker runs
pinned to ``--broker-cpu`` and the generators to ``--load-cpu`` (as the yardstick
pins them), so the two do not share a core. Every client and wave is bounded in time.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import json
import multiprocessing
import os
import random
import selectors
import socket
import struct
import sys
import time
from collections import Counter
from multiprocessing.connection import Connection as Pipe
from typing import Any

from loadkit import V5, BrokerProcess, MosquittoProcess

from midge.codec import Connect, Disconnect, Publish, Will, encode

#: seconds a client may take from its connect to its end before it is abandoned
CLIENT_TIMEOUT = 5.0
#: seconds a whole wave may take
WAVE_TIMEOUT = 120.0
CONNACK, PUBACK = 2, 4
LINGER_RESET = struct.pack("ii", 1, 0)


class Plan:
    """What one client sends and waits for: its choices, drawn from its own number, so a
    wave is the same load whatever the number of generator processes."""

    __slots__ = ("connect", "end", "steps")

    def __init__(self, n: int, seed: int, packets: Packets) -> None:
        rng = random.Random(seed * 1_000_003 + n)
        persistent = rng.random() < 0.4
        cid = f"churn-{rng.randrange(400)}" if persistent else f"churn-t{n}"
        level = rng.choice([4, V5])
        will = Will(f"churn/will/{n % 50}", b"gone", 0) if rng.random() < 0.5 else None
        props = {0x11: 300} if persistent and level == V5 else {}
        self.connect = encode(Connect(cid, level, clean_start=not persistent, will=will,
                                      properties=props), level)
        #: (bytes to send, packet type to wait for: PUBACK, or 0 for none)
        self.steps: list[tuple[bytes, int]] = []
        for pid in range(1, rng.randint(1, 5) + 1):
            qos = rng.choice([0, 1])
            self.steps.append((packets.publish(rng.randrange(50), qos, pid, level),
                               PUBACK if qos else 0))
        how = rng.choice(["disconnect", "close", "reset"])
        self.end = packets.disconnect[level] if how == "disconnect" else how


class Packets:
    """The PUBLISH and DISCONNECT packets, encoded once."""

    def __init__(self) -> None:
        self._publish: dict[tuple[int, int, int, int], bytes] = {}
        self.disconnect = {level: encode(Disconnect(), level) for level in (4, V5)}

    def publish(self, topic: int, qos: int, pid: int, level: int) -> bytes:
        key = (topic, qos, pid, level)
        packet = self._publish.get(key)
        if packet is None:
            packet = self._publish[key] = encode(
                Publish(f"churn/{topic}", b"c", qos, packet_id=pid if qos else 0), level)
        return packet


class Client:
    __slots__ = ("acked", "buf", "deadline", "plan", "sock", "step", "want")

    def __init__(self, sock: socket.socket, plan: Plan, deadline: float) -> None:
        self.sock = sock
        self.plan = plan
        self.deadline = deadline
        self.buf = b""
        self.step = 0
        #: the packet type awaited (CONNACK first); -1 while the TCP connect is under way
        self.want = -1
        self.acked = False


def packet_types(client: Client) -> list[int]:
    """The complete packets in ``client.buf`` (their types), consumed."""
    out = []
    buf = client.buf
    pos = 0
    while len(buf) - pos >= 2:
        length = 0
        shift = 0
        i = pos + 1
        while True:
            if i >= len(buf):
                client.buf = buf[pos:]
                return out
            byte = buf[i]
            length |= (byte & 0x7F) << shift
            shift += 7
            i += 1
            if not byte & 0x80:
                break
        if len(buf) - i < length:
            break
        out.append(buf[pos] >> 4)
        pos = i + length
    client.buf = buf[pos:]
    return out


class Generator:
    """One process's share of a wave: its clients, ``concurrency`` at a time."""

    def __init__(self, port: int, seed: int) -> None:
        self.port = port
        self.seed = seed
        self.packets = Packets()
        self.selector = selectors.DefaultSelector()

    def wave(self, numbers: list[int], concurrency: int) -> tuple[int, Counter[str]]:
        """Run the clients numbered ``numbers``: how many got a CONNACK, and why the
        others did not ("connect": TCP refused, "closed": by the broker before CONNACK,
        "timeout", "error": a socket error)."""
        todo = iter(numbers)
        running = 0
        acked = 0
        failed: Counter[str] = Counter()
        wave_end = time.monotonic() + WAVE_TIMEOUT
        next_sweep = 0.0

        def finish(client: Client, failure: str = "") -> None:
            nonlocal running, acked
            ok = not failure or client.acked
            self.selector.unregister(client.sock)
            end = client.plan.end
            with contextlib.suppress(OSError):
                if not ok or end == "reset":
                    client.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER_RESET)
                elif isinstance(end, bytes):
                    client.sock.send(end)
            client.sock.close()
            running -= 1
            acked += client.acked
            if not ok:
                failed[failure] += 1

        def advance(client: Client) -> None:
            """Send what needs no answer, up to the next packet that does (or the end)."""
            steps = client.plan.steps
            while client.step < len(steps):
                data, want = steps[client.step]
                client.step += 1
                client.sock.send(data)  # a few bytes: the socket buffer takes them whole
                if want:
                    client.want = want
                    return
            finish(client)

        while True:
            now = time.monotonic()
            while running < concurrency:
                n = next(todo, None)
                if n is None:
                    break
                sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                sock.setblocking(False)
                # as asyncio and real clients do: a QoS 0 PUBLISH right after another
                # must not wait for the broker's delayed ACK
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                code = sock.connect_ex(("127.0.0.1", self.port))
                if code not in (0, errno.EINPROGRESS):
                    sock.close()
                    failed["connect"] += 1
                    continue
                client = Client(sock, Plan(n, self.seed, self.packets), now + CLIENT_TIMEOUT)
                self.selector.register(sock, selectors.EVENT_WRITE, client)
                running += 1
            if not running:
                return acked, failed
            if now >= wave_end:
                for key in list(self.selector.get_map().values()):
                    finish(key.data, "timeout")
                return acked, failed
            for key, _ in self.selector.select(0.05):
                client = key.data
                try:
                    if client.want == -1:  # the TCP connect is done (or failed)
                        if client.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR):
                            finish(client, "connect")
                            continue
                        client.sock.send(client.plan.connect)
                        client.want = CONNACK
                        self.selector.modify(client.sock, selectors.EVENT_READ, client)
                        continue
                    data = client.sock.recv(4096)
                    if not data:  # closed by the broker (a takeover, a refusal)
                        finish(client, "closed")
                        continue
                    client.buf += data
                    for kind in packet_types(client):
                        if kind == client.want:
                            client.acked = True
                            client.want = 0
                            advance(client)
                            break
                except OSError:
                    finish(client, "error")
            if now >= next_sweep:  # abandon the clients that overran their time
                next_sweep = now + 0.5
                for key in list(self.selector.get_map().values()):
                    if key.data.deadline < now:
                        finish(key.data, "timeout")


def worker(pipe: Pipe, port: int, seed: int, cpu: int | None) -> None:
    if cpu is not None:
        os.sched_setaffinity(0, {cpu})
    generator = Generator(port, seed)
    while True:
        job = pipe.recv()
        if job is None:
            return
        numbers, concurrency = job
        cpu_before = time.process_time()
        acked, failed = generator.wave(numbers, concurrency)
        pipe.send((acked, failed, time.process_time() - cpu_before))


def run(broker: BrokerProcess, waves: int, clients: int, concurrency: int, procs: int,
        cpu: int | None, seed: int) -> list[dict[str, Any]]:
    context = multiprocessing.get_context("fork")
    pipes = []
    children = []
    for _ in range(procs):
        mine, theirs = context.Pipe()
        child = context.Process(target=worker, args=(theirs, broker.port, seed, cpu),
                                daemon=True)
        child.start()
        pipes.append(mine)
        children.append(child)
    out = []
    try:
        for index in range(waves):
            first = index * clients
            began = time.monotonic()
            for k, pipe in enumerate(pipes):
                share = concurrency // procs + (k < concurrency % procs)
                pipe.send((list(range(first + k, first + clients, procs)), max(1, share)))
            results = [pipe.recv() for pipe in pipes]
            seconds = time.monotonic() - began
            connected = sum(r[0] for r in results)
            failed: Counter[str] = sum((r[1] for r in results), Counter())
            # the generators' CPU over the wave: well under 100 % of their core, or
            # the figure is theirs and not the broker's
            load = sum(r[2] for r in results) / seconds * 100
            time.sleep(1.0)
            rss = broker.rss_kib() / 1024
            row = {"wave": index + 1, "seconds": round(seconds, 2),
                   "connects_per_s": round(connected / seconds), "connected": connected,
                   "failed": dict(failed), "rss_mib": round(rss, 1),
                   "generator_cpu_pct": round(load)}
            sys.stderr.write(f"wave {index + 1}: {seconds:.2f} s, {connected / seconds:.0f} "
                             f"connects/s, failed {dict(failed)}, RSS {rss:.1f} MiB, generator "
                             f"CPU {load:.0f} %\n")
            out.append(row)
    finally:
        for pipe in pipes:
            with contextlib.suppress(OSError):
                pipe.send(None)
        for child in children:
            child.join(10)
            if child.is_alive():
                child.kill()
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--waves", type=int, default=6)
    parser.add_argument("--clients", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=100)
    parser.add_argument("--procs", type=int, default=2, help="generator processes")
    parser.add_argument("--broker", choices=["midge", "mosquitto"], default="midge")
    parser.add_argument("--storage", action="store_true",
                        help="midge keeps its state in sqlite, as a plain `midge` does")
    parser.add_argument("--broker-arg", action="append", default=[])
    two = (os.cpu_count() or 1) >= 2
    parser.add_argument("--broker-cpu", type=int, default=0 if two else None)
    parser.add_argument("--load-cpu", type=int, default=1 if two else None)
    parser.add_argument("--no-pin", action="store_true", help="pin nothing")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args(argv)
    broker_cpu = None if args.no_pin else args.broker_cpu
    load_cpu = None if args.no_pin else args.load_cpu
    broker = (MosquittoProcess(args.broker_arg, cpu=broker_cpu) if args.broker == "mosquitto"
              else BrokerProcess(args.broker_arg, storage=args.storage, cpu=broker_cpu))
    try:
        rss_start = broker.rss_kib() / 1024
        rows = run(broker, args.waves, args.clients, args.concurrency, args.procs, load_cpu,
                   args.seed)
    finally:
        code = broker.stop()
    result = {"broker": broker.name, "storage": args.storage, "procs": args.procs,
              "rss_start_mib": round(rss_start, 1), "waves": rows, "broker_exit": code,
              "log_problems": broker.log_problems()[:5]}
    sys.stdout.write(json.dumps(result, indent=1) + "\n")
    return 0 if code == 0 and not result["log_problems"] else 1


if __name__ == "__main__":
    sys.exit(main())
