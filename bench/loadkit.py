"""What bench/fuzz.py and bench/soak.py share: a broker under test, its RSS and file
descriptors, and a small asyncio MQTT client built on midge's own sans-I/O codec.

The rule: everything is bounded. The broker is a child process started here and stopped
here (by its pid); clients talk to 127.0.0.1 only; every wait has a timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from midge.codec import (
    PROTOCOL_5,
    ConnAck,
    Connect,
    Decoder,
    Disconnect,
    Packet,
    PubAck,
    PubComp,
    Publish,
    PubRec,
    PubRel,
    Role,
    SubAck,
    Subscribe,
    Subscription,
    Will,
    encode,
)

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class BrokerProcess:
    """``python -m midge`` on a free loopback port, its log in a temporary file.

    ``storage``: keep the broker's state as a plain ``midge`` does (storage_sqlite, its
    ``midge.db`` in a temporary directory) instead of in memory; ``cpu``: pin the broker
    to that CPU (``taskset``), so a load generator pinned elsewhere does not steal it;
    ``python_args``: before ``-m midge`` (``-m cProfile -o FILE`` profiles it).
    """

    name = "midge"

    def __init__(self, extra: Sequence[str] = (), config: str | None = None, *,
                 storage: bool = False, cpu: int | None = None,
                 python_args: Sequence[str] = ()) -> None:
        self.port = free_port()
        self.log_path = Path(tempfile.mkstemp(prefix="midge-bench-", suffix=".log")[1])
        args = [sys.executable, *python_args, "-m", "midge", "--port", str(self.port), *extra]
        # MIDGE_SRC: another checkout's core/src, to measure an older midge the same way
        src = os.environ.get("MIDGE_SRC", str(ROOT / "core" / "src"))
        if config is not None:
            path = Path(tempfile.mkstemp(prefix="midge-bench-", suffix=".toml")[1])
            path.write_text(config)
            args += ["-c", str(path)]
        elif not storage and "--no-storage" in (Path(src) / "midge" / "cli.py").read_text():
            # the broker's own state in memory, as an older midge keeps it: these runs
            # measure the engine (storage has its own crash and space tests), and no
            # midge.db is left in the working directory
            args.append("--no-storage")
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (src, env.get("PYTHONPATH", "")) if p)
        self._cwd: str | None = tempfile.mkdtemp(prefix="midge-bench-")  # for its midge.db
        self._start(args, env, cpu)

    def _start(self, args: list[str], env: dict[str, str] | None, cpu: int | None) -> None:
        if cpu is not None:
            args = ["taskset", "-c", str(cpu), *args]  # taskset execs: the pid is the broker's
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(args, stdout=self._log, stderr=subprocess.STDOUT,
                                     env=env, cwd=self._cwd)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the broker exited: {self.log_path.read_text()}")
            with contextlib.suppress(OSError), socket.create_connection(
                    ("127.0.0.1", self.port), timeout=0.2):
                return
            time.sleep(0.05)
        raise RuntimeError("the broker did not listen within 15 s")

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None

    def rss_kib(self) -> int:
        status = Path(f"/proc/{self.proc.pid}/status").read_text()
        match = re.search(r"VmRSS:\s+(\d+)", status)
        return int(match.group(1)) if match else 0

    def fds(self) -> int:
        return len(os.listdir(f"/proc/{self.proc.pid}/fd"))

    def stop(self) -> int:
        if self.alive:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        if self._cwd is not None:
            shutil.rmtree(self._cwd, ignore_errors=True)
        return int(self.proc.returncode)

    def log_counts(self) -> dict[str, Any]:
        """How much the broker wrote: lines, WARNING lines, and the "N similar messages
        suppressed" summaries among them with the total N they stand for."""
        lines = self.log_path.read_text(errors="replace").splitlines()
        warnings = [line for line in lines if " WARNING " in line]
        counts = [int(m.group(1)) for line in warnings
                  if (m := re.search(r"(\d+) similar messages suppressed", line))]
        return {"path": str(self.log_path), "lines": len(lines), "warnings": len(warnings),
                "summaries": len(counts), "suppressed": sum(counts)}

    def log_problems(self) -> list[str]:
        """Log lines that must never appear: tracebacks and ERROR lines."""
        return [line for line in self.log_path.read_text(errors="replace").splitlines()
                if "Traceback" in line or " ERROR " in line or line.startswith("ERROR")]


class MosquittoProcess(BrokerProcess):
    """Mosquitto (``mosquitto`` on PATH, or ``$MOSQUITTO``) on a free loopback port, for
    reference figures; ``config``: more lines for its configuration file."""

    name = "mosquitto"

    def __init__(self, config: Sequence[str] = (), *, cpu: int | None = None) -> None:
        self.port = free_port()
        self.log_path = Path(tempfile.mkstemp(prefix="mosquitto-bench-", suffix=".log")[1])
        conf = Path(tempfile.mkstemp(prefix="mosquitto-bench-", suffix=".conf")[1])
        conf.write_text("\n".join([f"listener {self.port} 127.0.0.1", "allow_anonymous true",
                                   *config]) + "\n")
        binary = os.environ.get("MOSQUITTO", "mosquitto")
        self._cwd = None
        self._start([binary, "-c", str(conf)], None, cpu)


@dataclass
class Samples:
    """RSS (KiB) and open file descriptors of the broker over time."""

    times: list[float] = field(default_factory=list)
    rss: list[int] = field(default_factory=list)
    fds: list[int] = field(default_factory=list)

    def add(self, broker: BrokerProcess, at: float) -> None:
        self.times.append(at)
        self.rss.append(broker.rss_kib())
        self.fds.append(broker.fds())

    def slope_kib_per_min(self, since: float) -> float:
        """Least-squares RSS growth after ``since`` seconds, KiB per minute."""
        points = [(t, r) for t, r in zip(self.times, self.rss, strict=True) if t >= since]
        if len(points) < 3:
            return 0.0
        n = len(points)
        mean_t = sum(t for t, _ in points) / n
        mean_r = sum(r for _, r in points) / n
        var = sum((t - mean_t) ** 2 for t, _ in points)
        if not var:
            return 0.0
        cov = sum((t - mean_t) * (r - mean_r) for t, r in points)
        return cov / var * 60.0


class Client:
    """A minimal MQTT client: it acknowledges what it receives (QoS 1 and 2) and
    collects the PUBLISHes; ``publish`` waits for the whole QoS flow."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                 level: int) -> None:
        self.reader = reader
        self.writer = writer
        self.level = level
        self.decoder = Decoder(Role.CLIENT, protocol_level=level)
        self.messages: asyncio.Queue[Publish] = asyncio.Queue()
        self._waiters: dict[tuple[type[Packet], int], asyncio.Future[Packet]] = {}
        self._next_id = 0
        self.closed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    @classmethod
    async def connect(cls, port: int, client_id: str, level: int = 4, *,
                      clean: bool = True, will: Will | None = None,
                      properties: dict[int, Any] | None = None, keepalive: int = 0,
                      timeout: float = 10.0) -> tuple[Client, ConnAck]:
        """Connect; keepalive 0 by default, as this client sends no PINGREQ (a silent
        subscriber with a keepalive is closed by the broker after 1.5 times it)."""
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection("127.0.0.1", port), timeout)
        client = cls(reader, writer, level)
        writer.write(encode(Connect(client_id, level, clean_start=clean, will=will,
                                    keepalive=keepalive, properties=properties or {}),
                            level))
        packet = await asyncio.wait_for(client._read_one(), timeout)
        assert isinstance(packet, ConnAck), packet
        client._task = asyncio.create_task(client._run())
        return client, packet

    async def _read_one(self) -> Packet:
        while (packet := self.decoder.next_packet()) is None:
            data = await self.reader.read(65536)
            if not data:
                raise ConnectionError("closed by the broker")
            self.decoder.feed(data)
        return packet

    async def _run(self) -> None:
        try:
            while True:
                packet = await self._read_one()
                if isinstance(packet, Publish):
                    if packet.qos == 1:
                        self.writer.write(encode(PubAck(packet.packet_id), self.level))
                    elif packet.qos == 2:
                        self.writer.write(encode(PubRec(packet.packet_id), self.level))
                    self.messages.put_nowait(packet)
                elif isinstance(packet, PubRel):
                    self.writer.write(encode(PubComp(packet.packet_id), self.level))
                else:
                    key = (type(packet), getattr(packet, "packet_id", 0))
                    waiter = self._waiters.pop(key, None)
                    if waiter is not None and not waiter.done():
                        waiter.set_result(packet)
        except (ConnectionError, OSError, asyncio.CancelledError):
            pass
        finally:
            self.closed.set()
            for waiter in self._waiters.values():
                if not waiter.done():
                    waiter.set_exception(ConnectionError("closed"))

    def packet_id(self) -> int:
        self._next_id = self._next_id % 65535 + 1
        return self._next_id

    async def _expect(self, kind: type[Packet], packet_id: int, timeout: float) -> Packet:
        future: asyncio.Future[Packet] = asyncio.get_running_loop().create_future()
        self._waiters[(kind, packet_id)] = future
        return await asyncio.wait_for(future, timeout)

    async def subscribe(self, topic_filter: str, qos: int, timeout: float = 10.0) -> int:
        pid = self.packet_id()
        waiter = self._expect(SubAck, pid, timeout)
        self.writer.write(encode(Subscribe(pid, [Subscription(topic_filter, qos)]),
                                 self.level))
        ack = await waiter
        assert isinstance(ack, SubAck)
        return int(ack.reason_codes[0])

    async def publish(self, topic: str, payload: bytes, qos: int = 0, retain: bool = False,
                      timeout: float = 10.0) -> None:
        """Publish; for QoS 1/2 returns once the broker has acknowledged it."""
        if not qos:
            self.writer.write(encode(Publish(topic, payload, 0, retain), self.level))
            await self.writer.drain()
            return
        pid = self.packet_id()
        kind: type[Packet] = PubAck if qos == 1 else PubRec
        waiter = asyncio.ensure_future(self._expect(kind, pid, timeout))
        self.writer.write(encode(Publish(topic, payload, qos, retain, packet_id=pid),
                                 self.level))
        ack = await waiter
        if qos == 2:
            assert isinstance(ack, PubRec)
            done = asyncio.ensure_future(self._expect(PubComp, pid, timeout))
            self.writer.write(encode(PubRel(pid), self.level))
            await done
        elif isinstance(ack, PubAck) and ack.reason_code >= 0x80:
            raise RuntimeError(f"PUBACK 0x{ack.reason_code:02X}")

    def write(self, data: bytes) -> None:
        self.writer.write(data)

    async def close(self, how: str = "disconnect") -> None:
        """End the connection: "disconnect" (DISCONNECT then close), "close" (no
        DISCONNECT: the will is published) or "reset" (RST)."""
        with contextlib.suppress(Exception):
            if how == "disconnect":
                self.writer.write(encode(Disconnect(), self.level))
            elif how == "reset":
                sock = self.writer.get_extra_info("socket")
                if sock is not None:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                    struct.pack("ii", 1, 0))
            self.writer.close()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(BaseException):
                await self._task


V5 = PROTOCOL_5
