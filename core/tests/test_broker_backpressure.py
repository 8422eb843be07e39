"""Backpressure on real sockets: with ``queue_full = "backpressure"`` a subscriber that
keeps acknowledging loses nothing however fast its publisher writes, a subscriber that
never reads is found stuck and slows nobody, and the default still drops and counts."""

from __future__ import annotations

import queue
import socket
import time
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from midge.codec import Connect, PubAck, Publish, Subscribe, Subscription, encode

Factory = Callable[..., Any]
COUNT = 3000


def _subscriber(port: int, topic: str) -> tuple[paho.Client, queue.Queue[bytes]]:
    got: queue.Queue[bytes] = queue.Queue()
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id="healthy")
    client.on_message = lambda c, u, m: got.put(m.payload)
    subscribed: queue.Queue[Any] = queue.Queue()
    client.on_subscribe = lambda c, u, mid, codes, props: subscribed.put(codes)
    client.connect("127.0.0.1", port)
    client.loop_start()
    client.subscribe(topic, 1)
    subscribed.get(timeout=5)
    return client, got


def _stuck_subscriber(port: int, topic: str) -> socket.socket:
    """A client that subscribes and then never reads again."""
    sock = socket.create_connection(("127.0.0.1", port))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.sendall(encode(Connect("stuck", 4), 4)
                 + encode(Subscribe(1, [Subscription(topic, 1)]), 4))
    return sock


def _flood(port: int) -> tuple[socket.socket, int]:
    """A publisher writing COUNT 1 KiB QoS 1 messages at once; returns it and its PUBACK
    count reader."""
    sock = socket.create_connection(("127.0.0.1", port))
    sock.sendall(encode(Connect("pub", 4), 4))
    payload = b"x" * 1024
    data = b"".join(encode(Publish("bp/x", b"%06d" % i + payload, qos=1, packet_id=i), 4)
                    for i in range(1, COUNT + 1))
    sock.sendall(data)
    return sock, len(encode(PubAck(1), 4))


@pytest.mark.parametrize("mode", ["backpressure", "drop"])
def test_a_subscriber_that_keeps_acknowledging_loses_nothing(
    broker_factory: Factory, mode: str
) -> None:
    running = broker_factory(queue_full=mode, max_queued_messages=50, stuck_timeout=1,
                             sys_interval=0)
    stuck = _stuck_subscriber(running.port, "bp/#")
    client, got = _subscriber(running.port, "bp/#")
    time.sleep(0.2)
    pub, ack_size = _flood(running.port)
    try:
        received: list[int] = []
        deadline = time.monotonic() + 30
        while len(received) < COUNT and time.monotonic() < deadline:
            try:
                received.append(int(got.get(timeout=2)[:6]))
            except queue.Empty:
                break
        stats = running.broker.engine.stats
        if mode == "drop":
            assert len(received) < COUNT and stats.messages_dropped > 0
            return
        assert received == list(range(1, COUNT + 1))
        assert stats.subscribers_stuck == 1
        assert stats.publishers_held >= 1
        # the stuck one holds at most twice its queue cap (and its inflight window)
        session = running.call(lambda: running.broker.engine.sessions["stuck"])
        assert len(session.pending) <= 100 and len(session.inflight) <= 100
        # every message was acknowledged to the publisher
        pub.settimeout(10)
        acks = b""
        conn_ack = 4
        while len(acks) < conn_ack + COUNT * ack_size:
            chunk = pub.recv(65536)
            assert chunk
            acks += chunk
    finally:
        client.loop_stop()
        client.disconnect()
        pub.close()
        stuck.close()
