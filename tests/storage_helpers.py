"""Helpers for the cross-package storage suites: backends, broker processes, a raw client.

The rule: everything here is real: a broker subprocess started with ``python -m midge -c
FILE`` on a free loopback port, a redis-server process on another, MQTT spoken over a
socket with midge's own codec; every wait is bounded.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from midge.codec import (
    PROTOCOL_5,
    ConnAck,
    Connect,
    Decoder,
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
    encode,
)

ROOT = Path(__file__).resolve().parents[1]
BACKENDS = ("sqlite", "lmdb", "redis")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_port(port: int, timeout: float = 10.0, proc: subprocess.Popen[bytes] | None = None,
              log: Path | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            text = log.read_text() if log is not None else ""
            raise RuntimeError(f"process exited with {proc.returncode}: {text[-2000:]}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listens on port {port} after {timeout} s")


class RedisServer:
    """A real redis-server on a free loopback port (appendfsync everysec)."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        exe = shutil.which("redis-server")
        if exe is None:
            raise RuntimeError("redis-server is not installed (.ci/run installs it)")
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            [exe, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.workdir),
             "--appendonly", "yes", "--appendfsync", "everysec", "--save", "",
             "--protected-mode", "no"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        wait_port(self.port, proc=self.proc)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None


def storage_table(backend: str, workdir: Path, redis: RedisServer | None = None,
                  **options: Any) -> str:
    """The ``[plugins.storage_*]`` table of a config file for ``backend``."""
    extra = "".join(f"{key} = {value!r}\n".replace("'", '"') for key, value in options.items())
    if backend == "sqlite":
        return f'[plugins.storage_sqlite]\npath = "{workdir / "midge.db"}"\n{extra}'
    if backend == "lmdb":
        return f'[plugins.storage_lmdb]\npath = "{workdir / "midge-lmdb"}"\n{extra}'
    assert redis is not None
    return f'[plugins.storage_redis]\nurl = "{redis.url}"\nprefix = "t:"\n{extra}'


@dataclass
class BrokerProcess:
    """``python -m midge -c FILE`` in a subprocess, its log in a file."""

    config: Path
    port: int
    log: Path
    proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 20.0) -> None:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(
            [str(ROOT / "core" / "src"), *filter(None, [env.get("PYTHONPATH")])])
        self.log_file = self.log.open("ab")
        self.proc = subprocess.Popen([sys.executable, "-m", "midge", "-c", str(self.config)],
                                     stdout=self.log_file, stderr=subprocess.STDOUT, env=env)
        wait_port(self.port, timeout, self.proc, self.log)

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)
        self.log_file.close()

    def stop(self) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.log_file.close()
        return self.proc.returncode


def broker_config(workdir: Path, port: int, storage: str) -> Path:
    config = workdir / "midge.toml"
    config.write_text(
        f'[broker]\nsys_interval = 0\nmax_queued_messages = 1000000\n\n'
        f'[[listeners]]\ntype = "tcp"\nhost = "127.0.0.1"\nport = {port}\n\n'
        f'[plugins.auth_allow]\n\n{storage}'
    )
    return config


class Raw:
    """A blocking MQTT client over a socket, speaking midge's codec."""

    def __init__(self, port: int, level: int = 4, timeout: float = 10.0) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.level = level
        self.decoder = Decoder(Role.CLIENT, protocol_level=level)
        self.out = bytearray()

    def send(self, packet: Packet, now: bool = True) -> None:
        self.out += encode(packet, self.level)
        if now:
            self.flush()

    def flush(self) -> None:
        if self.out:
            self.sock.sendall(self.out)
            self.out.clear()

    def recv(self) -> Packet:
        while (packet := self.decoder.next_packet()) is None:
            data = self.sock.recv(65536)
            if not data:
                raise ConnectionError("closed by the broker")
            self.decoder.feed(data)
        return packet

    def packets(self, timeout: float) -> Iterator[Packet]:
        """Packets until ``timeout`` seconds pass without one."""
        self.sock.settimeout(timeout)
        try:
            while True:
                yield self.recv()
        except TimeoutError:
            return

    def connect(self, client_id: str, clean: bool, expiry: int = 0) -> ConnAck:
        props = {0x11: expiry} if self.level == PROTOCOL_5 and expiry else {}
        self.send(Connect(client_id, self.level, clean, 60, properties=props))
        ack = self.recv()
        assert isinstance(ack, ConnAck), ack
        return ack

    def subscribe(self, topic_filter: str, qos: int) -> SubAck:
        self.send(Subscribe(1, [Subscription(topic_filter, qos)]))
        ack = self.recv()
        assert isinstance(ack, SubAck), ack
        return ack

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()


class Receiver:
    """A subscriber that acknowledges everything and records what it got, keeping its
    inbound QoS 2 state across its own reconnects (as a persistent client does)."""

    def __init__(self) -> None:
        self.got: list[bytes] = []
        self.inbound_qos2: set[int] = set()

    def handle(self, raw: Raw, packet: Packet) -> None:
        if isinstance(packet, Publish):
            if packet.qos == 1:
                self.got.append(packet.payload)
                raw.send(PubAck(packet.packet_id), now=False)
            elif packet.qos == 2:
                if packet.packet_id not in self.inbound_qos2:
                    # exactly once: the application gets it at the first PUBLISH
                    self.inbound_qos2.add(packet.packet_id)
                    self.got.append(packet.payload)
                raw.send(PubRec(packet.packet_id), now=False)
            else:
                self.got.append(packet.payload)
        elif isinstance(packet, PubRel):
            self.inbound_qos2.discard(packet.packet_id)
            raw.send(PubComp(packet.packet_id), now=False)

    def drain(self, raw: Raw, quiet: float) -> None:
        for packet in raw.packets(quiet):
            self.handle(raw, packet)
            if not raw.decoder.buffered:  # nothing more buffered: answer now
                raw.flush()
        raw.flush()


def sequence_of(payloads: list[bytes], prefix: bytes) -> list[int]:
    return [int(p[len(prefix):]) for p in payloads if p.startswith(prefix)]
