"""One publish/subscribe round trip, the same test over every transport: tcp, tls (with
a client certificate), ws, wss, unix, and tcp behind a PROXY header; MQTT 3.1.1 and 5,
QoS 0 to 2, a retained message, and a payload larger than one read."""

from __future__ import annotations

import contextlib
import logging
import shutil
import socket
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import pytest
from conftest import Pki, RawClient, RunningBroker
from transport_kit import endpoints, listener, paho_client

from midge.codec import ConnAck

TRANSPORTS = ["tcp", "tls", "ws", "wss", "unix"]


@pytest.fixture
def socket_dir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="midge-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.mark.parametrize("protocol", [paho.MQTTv311, paho.MQTTv5], ids=["v311", "v5"])
@pytest.mark.parametrize("kind", TRANSPORTS)
def test_publish_subscribe_round_trip(settings_broker: Callable[..., RunningBroker], pki: Pki,
                                      socket_dir: Path, kind: str, protocol: int) -> None:
    spec = listener(kind, pki, path=str(socket_dir / "rt.sock")) if kind == "unix" else \
        listener(kind, pki)
    broker = settings_broker([spec])
    (endpoint,) = endpoints(broker)
    keys: dict[str, Any] = {}
    if kind in ("tls", "wss"):
        keys = {"cert": pki.client_cert, "key": pki.client_key}
    publisher = paho_client(endpoint, pki, protocol=protocol, **keys)
    subscriber = paho_client(endpoint, pki, protocol=protocol, **keys)
    try:
        publisher.publish(f"rt/{kind}/retained", b"kept", 1, retain=True)
        subscriber.subscribe(f"rt/{kind}/#", 2)
        retained = subscriber.expect()
        assert (retained.topic, retained.payload, retained.retain) == (
            f"rt/{kind}/retained", b"kept", True)
        big = bytes(range(256)) * 1024  # 256 KiB: many reads, many frames, many records
        for qos in (0, 1, 2):
            publisher.publish(f"rt/{kind}/q{qos}", f"qos {qos}".encode(), qos)
            message = subscriber.expect()
            assert (message.topic, message.payload, message.qos) == (
                f"rt/{kind}/q{qos}", f"qos {qos}".encode(), qos)
        publisher.publish(f"rt/{kind}/big", big, 1)
        assert subscriber.expect(timeout=10).payload == big
    finally:
        publisher.close()
        subscriber.close()


def test_round_trip_behind_a_proxy_header(settings_broker: Callable[..., RunningBroker]) -> None:
    """paho cannot write a PROXY header: a relay on loopback does, as HAProxy would."""
    broker = settings_broker([listener("tcp", proxy_protocol=True)])
    (target,) = endpoints(broker)
    server = socket.create_server(("127.0.0.1", 0))
    relay_port = server.getsockname()[1]

    def pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (src, dst):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)

    def accept_loop() -> None:
        while True:
            try:
                client, (host, port) = server.accept()
            except OSError:
                return
            upstream = socket.create_connection((target.host, target.port))
            upstream.sendall(f"PROXY TCP4 {host} 127.0.0.1 {port} {relay_port}\r\n".encode())
            threading.Thread(target=pump, args=(client, upstream), daemon=True).start()
            threading.Thread(target=pump, args=(upstream, client), daemon=True).start()

    threading.Thread(target=accept_loop, daemon=True).start()
    try:
        relay = type(target)("tcp", "127.0.0.1", relay_port)
        a = paho_client(relay, client_id="behind-a")
        b = paho_client(relay)
        b.subscribe("rt/proxy", 1)
        a.publish("rt/proxy", b"through the relay", 1)
        assert b.expect().payload == b"through the relay"
        client = broker.call(broker.broker.client, "behind-a")
        # the relay's PROXY header carried paho's own address and port
        assert client.remote_host == "127.0.0.1"
        assert client.remote_port == a.paho.socket().getsockname()[1]
        a.close()
        b.close()
    finally:
        server.close()


def test_a_listener_max_connections_is_its_own(
    settings_broker: Callable[..., RunningBroker], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, "midge.listeners")
    broker = settings_broker([listener("tcp", max_connections=2, name="small"),
                              listener("tcp")])
    small, big = endpoints(broker)
    kept = [RawClient(small.port) for _ in range(2)]
    for index, raw in enumerate(kept):
        assert raw.connect(f"small-{index}") == ConnAck(0)
    third = RawClient(small.port)
    assert third.closed()
    others = [RawClient(big.port) for _ in range(3)]
    for index, raw in enumerate(others):
        assert raw.connect(f"big-{index}") == ConnAck(0)
    assert any("the listener's max_connections 2 reached" in r.getMessage()
               for r in caplog.records)
    kept[0].close()
    deadline = time.monotonic() + 3
    while True:  # the freed place is taken again
        again = RawClient(small.port)
        try:
            assert again.connect("small-again") == ConnAck(0)
            break
        except AssertionError:
            assert time.monotonic() < deadline
        finally:
            again.close()
    for raw in kept[1:] + others + [third]:
        raw.close()
