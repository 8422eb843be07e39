"""Shared fixtures: a real broker on a free loopback port, paho clients, raw sockets.

The broker runs in its own thread and event loop (through an anyio blocking portal), so
tests can drive it with ordinary blocking clients exactly as a user would.
"""

from __future__ import annotations

import queue
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from typing import Any

import anyio.from_thread
import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from midge import Broker, BrokerSettings, ListenerSettings, Settings
from midge.codec import Connect as ConnectPacket
from midge.codec import Decoder, Packet, Role, SubAck, Subscribe, Subscription, encode


@dataclass
class RunningBroker:
    broker: Broker
    port: int
    portal: Any

    def call(self, func: Callable[..., Any], *args: Any) -> Any:
        """Run ``func`` in the broker's event loop thread."""
        return self.portal.call(func, *args)


@pytest.fixture
def broker_factory() -> Iterator[Callable[..., RunningBroker]]:
    running: list[tuple[Any, Any, Any]] = []

    def start(allow_anonymous: bool = True, plugins: list[tuple[str, Any]] | None = None,
              backend: str = "asyncio", **limits: Any) -> RunningBroker:
        settings = Settings(
            broker=BrokerSettings(**limits),
            listeners=(
                ListenerSettings(host="127.0.0.1", port=0, allow_anonymous=allow_anonymous),
            ),
        )
        broker = Broker(settings, plugins=plugins)
        cm = anyio.from_thread.start_blocking_portal(backend)
        portal = cm.__enter__()
        future, _ = portal.start_task(broker.run)
        running.append((cm, portal, (broker, future)))
        return RunningBroker(broker, broker.addresses[0][1], portal)

    yield start
    for cm, portal, (broker, future) in running:
        portal.call(broker.shutdown)
        future.result(timeout=15)
        cm.__exit__(None, None, None)


@pytest.fixture
def plugins() -> list[tuple[str, Any]]:
    """(name, object) plugins for the ``broker`` fixture; a test module may override it."""
    return []


@pytest.fixture
def broker(
    broker_factory: Callable[..., RunningBroker], plugins: list[tuple[str, Any]]
) -> RunningBroker:
    return broker_factory(plugins=plugins)


class Events:
    """Hook calls recorded in the broker's thread, waited for in the test's thread."""

    def __init__(self) -> None:
        self._calls: list[tuple[str, tuple[Any, ...]]] = []
        self._changed = threading.Condition()

    def add(self, name: str, *args: Any) -> None:
        with self._changed:
            self._calls.append((name, args))
            self._changed.notify_all()

    def of(self, name: str) -> list[tuple[Any, ...]]:
        """The arguments of every recorded call of ``name`` so far."""
        with self._changed:
            return [args for hook, args in self._calls if hook == name]

    def names(self) -> list[str]:
        with self._changed:
            return [hook for hook, _ in self._calls]

    def wait(self, name: str, count: int = 1, timeout: float = 5.0) -> list[tuple[Any, ...]]:
        """The calls of ``name`` once there are ``count``; AssertionError after ``timeout``."""
        with self._changed:
            if not self._changed.wait_for(lambda: len(self.of(name)) >= count, timeout):
                raise AssertionError(f"{name} called {len(self.of(name))} times, not {count}; "
                                     f"calls so far: {[hook for hook, _ in self._calls]}")
        return self.of(name)

    def none(self, name: str, wait: float = 0.5) -> None:
        """AssertionError if ``name`` is called within ``wait`` seconds."""
        with self._changed:
            if self._changed.wait_for(lambda: len(self.of(name)) > 0, wait):
                raise AssertionError(f"{name} was called: {self.of(name)}")


@pytest.fixture
def events() -> Events:
    return Events()


@dataclass
class Client:
    """A paho client on a background loop that records what it receives."""

    paho: paho.Client
    messages: queue.Queue[paho.MQTTMessage] = field(default_factory=queue.Queue)
    connack: queue.Queue[Any] = field(default_factory=queue.Queue)
    disconnects: queue.Queue[Any] = field(default_factory=queue.Queue)

    def expect(self, timeout: float = 3.0) -> paho.MQTTMessage:
        return self.messages.get(timeout=timeout)

    def expect_none(self, wait: float = 0.5) -> None:
        try:
            message = self.messages.get(timeout=wait)
        except queue.Empty:
            return
        raise AssertionError(f"unexpected message on {message.topic}: {message.payload!r}")

    def subscribe(self, topic: str, qos: int = 0, **kwargs: Any) -> None:
        done = queue.Queue[Any]()
        self.paho.on_subscribe = lambda c, u, mid, codes, props: done.put(codes)
        self.paho.subscribe(topic, qos, **kwargs)
        codes = done.get(timeout=3)
        assert all(int(getattr(c, "value", c)) < 0x80 for c in codes), codes

    def publish(self, topic: str, payload: bytes | str, qos: int = 0, retain: bool = False,
                **kwargs: Any) -> None:
        info = self.paho.publish(topic, payload, qos, retain, **kwargs)
        info.wait_for_publish(3)

    def close(self) -> None:
        self.paho.disconnect()
        self.paho.loop_stop()


@pytest.fixture
def client_factory(broker: RunningBroker) -> Iterator[Callable[..., Client]]:
    made: list[Client] = []

    def make(client_id: str | None = None, protocol: int = paho.MQTTv311,
             clean: bool = True, port: int | None = None, will: tuple[Any, ...] | None = None,
             keepalive: int = 60, properties: Any = None, wait: bool = True) -> Client:
        cid = client_id if client_id is not None else f"t-{uuid.uuid4().hex[:8]}"
        kwargs: dict[str, Any] = {}
        if protocol != paho.MQTTv5:
            kwargs["clean_session"] = clean
        client = paho.Client(CallbackAPIVersion.VERSION2, client_id=cid, protocol=protocol,
                             **kwargs)
        record = Client(client)
        client.on_message = lambda c, u, m: record.messages.put(m)
        client.on_connect = lambda c, u, flags, rc, props: record.connack.put((flags, rc, props))
        client.on_disconnect = lambda c, u, flags, rc, props: record.disconnects.put(rc)
        if will is not None:
            client.will_set(*will)
        connect_kwargs: dict[str, Any] = {"keepalive": keepalive}
        if protocol == paho.MQTTv5:
            connect_kwargs["clean_start"] = clean
            if properties is not None:
                connect_kwargs["properties"] = properties
        client.connect("127.0.0.1", port or broker.port, **connect_kwargs)
        client.loop_start()
        made.append(record)
        if wait:
            _flags, rc, _props = record.connack.get(timeout=5)
            assert not rc.is_failure, rc
        return record

    yield make
    for record in made:
        record.close()


class RawClient:
    """A plain TCP socket speaking MQTT bytes, for cases no client library can express."""

    def __init__(self, port: int, level: int = 4, sock: socket.socket | None = None) -> None:
        # ``sock``: an already connected socket (a Unix socket, one a PROXY header or
        # a TLS handshake went over first)
        self.sock = sock or socket.create_connection(("127.0.0.1", port), timeout=5)
        self.decoder = Decoder(Role.CLIENT, protocol_level=level)

    def send(self, data: bytes | Packet, level: int | None = None) -> None:
        if not isinstance(data, bytes | bytearray):
            data = encode(data, level or self.decoder.protocol_level or 4)
        self.sock.sendall(data)

    def connect(self, client_id: str = "raw", level: int = 4, **kwargs: Any) -> Packet:
        self.decoder.protocol_level = level
        self.send(ConnectPacket(client_id, level, **kwargs), level)
        return self.recv()

    def subscribe(self, topic_filter: str, qos: int = 0, packet_id: int = 1) -> None:
        """Subscribe to one filter; fails unless SUBACK grants exactly ``qos``."""
        self.send(Subscribe(packet_id, [Subscription(topic_filter, qos)]))
        suback = self.recv()
        assert suback == SubAck(packet_id, [qos]), suback

    def recv(self, timeout: float = 3.0) -> Packet:
        """The next packet; AssertionError if the connection closes or nothing comes."""
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
        """True once the broker closes the connection (packets before that are skipped)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.sock.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                return False
            except ConnectionResetError:
                return True
            if not data:
                return True
            self.decoder.feed(data)
        return False

    def packets_until_close(self, timeout: float = 3.0) -> list[Packet]:
        """Every packet the broker sends before it closes; fails if it does not close."""
        out: list[Packet] = []
        assert self.closed(timeout), "the broker did not close the connection"
        while (packet := self.decoder.next_packet()) is not None:
            out.append(packet)
        return out

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def raw_factory(broker: RunningBroker) -> Iterator[Callable[..., RawClient]]:
    made: list[RawClient] = []

    def make(port: int | None = None, level: int = 4) -> RawClient:
        raw = RawClient(port or broker.port, level)
        made.append(raw)
        return raw

    yield make
    for raw in made:
        raw.close()


def with_limits(settings: Settings, **limits: Any) -> Settings:
    return replace(settings, broker=replace(settings.broker, **limits))


@pytest.fixture
def settings_broker() -> Iterator[Callable[..., RunningBroker]]:
    """Start a broker with any listeners: ``start(listeners, plugins=, backend=,
    **limits)``; its ``addresses`` are the bound ones, in listener order."""
    running: list[tuple[Any, Any, Any]] = []

    def start(listeners: list[ListenerSettings], plugins: list[tuple[str, Any]] | None = None,
              backend: str = "asyncio", **limits: Any) -> RunningBroker:
        settings = Settings(broker=BrokerSettings(**limits), listeners=tuple(listeners))
        broker = Broker(settings, plugins=plugins)
        cm = anyio.from_thread.start_blocking_portal(backend)
        portal = cm.__enter__()
        try:
            future, _ = portal.start_task(broker.run)
        except BaseException:
            cm.__exit__(None, None, None)
            raise
        running.append((cm, portal, (broker, future)))
        return RunningBroker(broker, broker.addresses[0][1], portal)

    yield start
    for cm, portal, (broker, future) in running:
        portal.call(broker.shutdown)
        future.result(timeout=15)
        cm.__exit__(None, None, None)


@dataclass
class Pki:
    """Certificates made for the tests: a CA the broker trusts, a server certificate for
    127.0.0.1/localhost, and client certificates (good, expired, from an unknown CA)."""

    ca: str
    server_cert: str
    server_key: str
    client_cert: str
    client_key: str
    expired_cert: str
    expired_key: str
    untrusted_cert: str
    untrusted_key: str
    #: a second server certificate from the same CA (for reload tests)
    other_server_cert: str
    other_server_key: str
    directory: str


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    import datetime

    import trustme

    base = tmp_path_factory.mktemp("pki")
    ca = trustme.CA(organization_name="midge test CA")
    stranger = trustme.CA(organization_name="someone else")
    now = datetime.datetime.now(datetime.UTC)
    leaves = {
        "server": ca.issue_cert("127.0.0.1", "localhost", "::1", common_name="midge-server"),
        "other_server": ca.issue_cert("127.0.0.1", "localhost", common_name="midge-server-2"),
        "client": ca.issue_cert("sensor-1.clients.example", common_name="sensor-1",
                                organization_name="Acme"),
        "expired": ca.issue_cert("old.clients.example", common_name="old-sensor",
                                 not_before=now - datetime.timedelta(days=30),
                                 not_after=now - datetime.timedelta(days=1)),
        "untrusted": stranger.issue_cert("intruder.example", common_name="intruder"),
    }
    paths: dict[str, str] = {}
    ca.cert_pem.write_to_path(str(base / "ca.pem"))
    for name, leaf in leaves.items():
        leaf.cert_chain_pems[0].write_to_path(str(base / f"{name}.pem"))
        leaf.private_key_pem.write_to_path(str(base / f"{name}.key"))
        paths[f"{name}_cert"] = str(base / f"{name}.pem")
        paths[f"{name}_key"] = str(base / f"{name}.key")
    return Pki(ca=str(base / "ca.pem"), directory=str(base), **paths)
