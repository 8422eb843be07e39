"""Drive the sans-I/O engine without sockets: bytes in, bytes out, the clock in the test's hands.

A ``Harness`` holds one Engine with a fake clock; ``harness.client(...)`` opens an engine
Connection behind a fake driver and returns a ``Peer`` that encodes packets into it and
decodes what its outbox holds, as h11's and mqttproto's tests drive their state machines.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from midge.codec import (
    PROTOCOL_5,
    ConnAck,
    Connect,
    Decoder,
    Packet,
    Role,
    SubAck,
    Subscribe,
    Subscription,
    encode,
)
from midge.config import BrokerSettings, ListenerSettings
from midge.engine import Ask, Connection, Engine
from midge.hooks import activate
from midge.hooks.builtin import ListenerAccess

OPEN = ListenerSettings(host="127.0.0.1", port=0, allow_anonymous=True)


class Clock:
    """Monotonic seconds that move only when the test says so."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> float:
        self.now += seconds
        return self.now


class FakeDriver:
    """A transport that takes everything at once."""

    def __init__(self) -> None:
        self.flushes = 0

    def schedule_flush(self) -> None:
        self.flushes += 1


class Peer:
    """One client of the engine: send packets, read what the broker answered."""

    def __init__(self, conn: Connection, driver: FakeDriver, level: int) -> None:
        self.conn = conn
        self.driver = driver
        self.level = level
        self.decoder = Decoder(Role.CLIENT, protocol_level=level)
        self.pending: Ask | None = None
        #: packets read by a helper (``subscribe``) after the one it wanted
        self.unread: list[Packet] = []

    def send(self, *packets: Packet) -> Ask | None:
        """Feed the encoded packets in one read; returns the engine's Ask, if any."""
        data = b"".join(encode(packet, self.level) for packet in packets)
        return self.feed_raw(data)

    def feed_raw(self, data: bytes, *, drain: bool = True) -> Ask | None:
        """Feed bytes; with ``drain``, come back for what the quantum left, as a driver
        does on later loop turns."""
        self.pending = self.conn.feed(data)
        while drain and self.pending is None and self.conn.more_input:
            self.pending = self.conn.feed(b"")
        return self.pending

    def received(self) -> list[Packet]:
        """Every packet the broker wrote since the last call."""
        data, _frames = self.conn.take_output()
        if data:
            self.decoder.feed(data)
        out, self.unread = self.unread, []
        while (packet := self.decoder.next_packet()) is not None:
            out.append(packet)
        return out

    def expect(self, kind: type[Any]) -> Any:
        """The one packet written since the last call, which must be a ``kind``."""
        got = self.received()
        assert len(got) == 1 and isinstance(got[0], kind), got
        return got[0]

    def subscribe(self, *filters: str | Subscription, qos: int = 1, packet_id: int = 1,
                  properties: dict[int, Any] | None = None) -> list[int]:
        subs = [f if isinstance(f, Subscription) else Subscription(f, qos) for f in filters]
        self.send(Subscribe(packet_id, subs, properties or {}))
        packets = self.received()
        assert isinstance(packets[0], SubAck), packets
        self.unread = packets[1:]  # retained messages follow their SUBACK
        return list(packets[0].reason_codes)


class Harness:
    """An engine with the built-in anonymous-access plugin and any test plugins."""

    def __init__(self, plugins: Iterable[tuple[str, Any]] = (), **limits: Any) -> None:
        self.clock = Clock()
        self.limits = BrokerSettings(**limits)
        self.hooks = activate({}, internal=[("midge.access", ListenerAccess())],
                              extra=list(plugins))
        self.engine = Engine(self.limits, self.hooks, self.clock)

    def open(self, listener: ListenerSettings = OPEN, level: int = PROTOCOL_5,
             host: str = "127.0.0.1", port: int = 40000) -> Peer:
        driver = FakeDriver()
        conn = self.engine.open(driver, listener, host, port)
        return Peer(conn, driver, level)

    def client(self, client_id: str = "c", level: int = PROTOCOL_5, *,
               connack: int = 0, **connect: Any) -> Peer:
        """A connected client (its CONNACK checked and consumed)."""
        peer = self.open(level=level)
        peer.send(Connect(client_id, level, **connect))
        ack = peer.expect(ConnAck)
        assert ack.reason_code == connack, ack
        return peer

    def tick(self, seconds: float) -> None:
        self.engine.tick(self.clock.advance(seconds))
