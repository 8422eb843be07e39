"""A raw MQTT client on a plain socket and a ledger on disk, for the security suites.

The hostile cases (a will on someone else's topic, a dropped connection, a 16 MiB
CONNECT, a client id holding a newline) need bytes no client library sends; the ledger
is a real JSON file so that reloads read it again.
"""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path
from typing import Any

from midge.codec import Connect, Decoder, Packet, Role, encode

#: two tenants, each with their own tree, a shared read-only tree, and a work queue
TENANTS: dict[str, Any] = {
    "users": {
        "alice": {"password": "alice-pw",
                  "acl": {"alice/#": 3, "shared/#": 1, "jobs/#": 1}},
        "bob": {"password": "bob-pw", "acl": {"bob/#": 3, "shared/#": 1, "jobs/#": 3}},
    },
}


def write_ledger(path: Path, ledger: dict[str, Any]) -> Path:
    path.write_text(json.dumps(ledger))
    return path


class Raw:
    """One MQTT connection over a plain socket."""

    def __init__(self, port: int, level: int = 5, source: str | None = None) -> None:
        self.sock = socket.create_connection(
            ("127.0.0.1", port), timeout=5,
            source_address=(source, 0) if source else None)
        self.level = level
        self.decoder = Decoder(Role.CLIENT, protocol_level=level)

    def send(self, packet: Packet | bytes) -> None:
        data = packet if isinstance(packet, bytes) else encode(packet, self.level)
        self.sock.sendall(data)

    def connect(self, client_id: str, **kwargs: Any) -> Any:
        """Send CONNECT; the answer (a ConnAck, read as ``.reason_code``)."""
        self.send(Connect(client_id, self.level, **kwargs))
        return self.recv()

    def recv(self, timeout: float = 3.0) -> Packet:
        deadline = time.monotonic() + timeout
        while True:
            packet = self.decoder.next_packet()
            if packet is not None:
                return packet
            self.sock.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                raise AssertionError("no packet received in time") from None
            if not data:
                raise AssertionError("connection closed by the broker")
            self.decoder.feed(data)

    def closed(self, timeout: float = 3.0) -> bool:
        """True once the broker closes the connection (packets before are kept)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.sock.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                return False
            except (ConnectionResetError, BrokenPipeError):
                return True
            if not data:
                return True
            self.decoder.feed(data)
        return False

    def drop(self) -> None:
        """End the connection without DISCONNECT (a reset): the will is published."""
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\1\0\0\0\0\0\0\0")
        self.sock.close()

    def close(self) -> None:
        self.sock.close()
