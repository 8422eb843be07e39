"""Throughput of one publisher -> one subscriber through each transport (tcp, tcp with a
PROXY header, tls, ws, wss, unix), QoS 0, 64-byte payloads: what the layers cost.

    python3 bench/transports.py [--messages N] [--rounds R]

Starts ``python3 -m midge -c`` (uvloop when installed) with one listener of each kind and
certificates made by trustme; the clients are plain sockets (TLS through the ssl module,
WebSocket frames through wsproto) writing pre-encoded packets, so the broker is what is
measured. Prints delivered messages per second, the median of the rounds.
"""

from __future__ import annotations

import argparse
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import trustme
from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, BytesMessage, Request

from midge.codec import Connect, Decoder, Publish, Role, Subscribe, Subscription, encode


class Stream:
    """A client byte stream over one transport."""

    def __init__(self, kind: str, address: Any, context: ssl.SSLContext | None) -> None:
        if kind == "unix":
            self.sock = socket.socket(socket.AF_UNIX)
            self.sock.connect(address)
        else:
            self.sock = socket.create_connection(address)
            self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if kind == "proxy":
            self.sock.sendall(b"PROXY TCP4 192.0.2.1 127.0.0.1 5000 1883\r\n")
        if kind in ("tls", "wss"):
            assert context is not None
            self.sock = context.wrap_socket(self.sock, server_hostname="127.0.0.1")
        self.ws: WSConnection | None = None
        self.pending = b""
        if kind in ("ws", "wss"):
            self.ws = WSConnection(ConnectionType.CLIENT)
            self.sock.sendall(self.ws.send(Request(host="x", target="/mqtt",
                                                   subprotocols=["mqtt"])))
            while True:
                self.ws.receive_data(self.sock.recv(65536))
                if any(isinstance(e, AcceptConnection) for e in self.ws.events()):
                    break

    def send(self, data: bytes) -> None:
        if self.ws is not None:
            data = self.ws.send(BytesMessage(data=data))
        self.sock.sendall(data)

    def recv(self) -> bytes:
        data = self.sock.recv(262144)
        if self.ws is None:
            return data
        self.ws.receive_data(data)
        return b"".join(bytes(e.data) for e in self.ws.events() if isinstance(e, BytesMessage))


def run_once(kind: str, address: Any, context: ssl.SSLContext | None,
             count: int) -> tuple[float, int]:
    """(delivered msg/s, messages not delivered: QoS 0 a slow reader's buffer dropped)"""
    sub = Stream(kind, address, context)
    pub = Stream(kind, address, context)
    decoder = Decoder(Role.CLIENT, protocol_level=4)
    for stream, cid in ((sub, "bench-sub"), (pub, "bench-pub")):
        stream.send(encode(Connect(cid, 4), 4))
    sub.send(encode(Subscribe(1, [Subscription("bench/t", 0)]), 4))
    got = 0
    while got < 2:  # CONNACK, SUBACK
        decoder.feed(sub.recv())
        while decoder.next_packet() is not None:
            got += 1
    packet = encode(Publish("bench/t", b"x" * 64), 4)
    batch = packet * 100
    started = time.perf_counter()

    def publish() -> None:
        for _ in range(count // 100):
            pub.send(batch)

    writer = threading.Thread(target=publish)
    writer.start()
    # a delivered QoS 0 PUBLISH is the published one byte for byte: count bytes, so the
    # reader (Python) keeps up with the broker
    size = len(packet)
    expected = size * count
    total = 0
    last = started
    sub.sock.settimeout(5.0)
    while total < expected:
        try:
            data = sub.recv()
        except TimeoutError:
            break  # the rest was dropped (QoS 0 beyond a slow reader's buffer)
        total += len(data)
        last = time.perf_counter()
    received = total // size
    writer.join()
    for stream in (sub, pub):
        stream.sock.close()
    return received / (last - started), count - received


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="midge-bench-"))
    ca = trustme.CA()
    leaf = ca.issue_cert("127.0.0.1")
    leaf.cert_chain_pems[0].write_to_path(str(work / "cert.pem"))
    leaf.private_key_pem.write_to_path(str(work / "key.pem"))
    tls = f'certfile = "{work / "cert.pem"}"\nkeyfile = "{work / "key.pem"}"\n'
    ports = {kind: free_port() for kind in ("tcp", "proxy", "tls", "ws", "wss")}
    tables = {
        "tcp": "",
        "proxy": "proxy_protocol = true\n",
        "tls": tls,
        "ws": "",
        "wss": tls,
    }
    config = "[broker]\nmax_queued_messages = 10000000\nsys_interval = 0\n\n"
    for kind, port in ports.items():
        listener_type = "tcp" if kind == "proxy" else kind
        config += (f'[[listeners]]\ntype = "{listener_type}"\nport = {port}\n'
                   + tables[kind] + "\n")
    sock_path = str(work / "s")
    config += f'[[listeners]]\ntype = "unix"\npath = "{sock_path}"\n\n[plugins.auth_allow]\n'
    (work / "bench.toml").write_text(config)
    context = ssl.create_default_context()
    ca.configure_trust(context)
    # the broker in its own process (as users run it): the clients' GIL is not its GIL
    broker = subprocess.Popen([sys.executable, "-m", "midge", "-q", "-c",
                               str(work / "bench.toml")])
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", ports["wss"]), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline or broker.poll() is not None:
                    raise SystemExit("midge did not start") from None
                time.sleep(0.05)
        results: dict[str, tuple[float, int]] = {}
        for kind in (*ports, "unix"):
            address: Any = sock_path if kind == "unix" else ("127.0.0.1", ports[kind])
            runs = [run_once(kind, address, context, args.messages)
                    for _ in range(args.rounds)]
            results[kind] = (statistics.median(r[0] for r in runs), sum(r[1] for r in runs))
    finally:
        broker.terminate()
        broker.wait(10)
    base = results["tcp"][0]
    out = [f"{'transport':10} {'delivered msg/s':>16} {'vs tcp':>7} {'missing':>8}"]
    for kind, (rate, missing) in results.items():
        out.append(f"{kind:10} {rate:16,.0f} {rate / base:7.2f} {missing:8}")
    sys.stdout.write("\n".join(out) + "\n")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


if __name__ == "__main__":
    main()
