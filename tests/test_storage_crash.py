"""Crash tests: SIGKILL a broker under load, restart it on the same storage, count.

Every message the publisher got a PUBACK (QoS 1) or PUBREC (QoS 2) for must then reach
the persistent subscriber, in the publisher's order; QoS 2 also without duplicates. Run
for each backend, with the subscriber offline during the load and with it online.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from storage_helpers import (
    BACKENDS,
    BrokerProcess,
    Raw,
    Receiver,
    RedisServer,
    broker_config,
    free_port,
    sequence_of,
    storage_table,
)

from midge.codec import PubAck, Publish, PubRec, PubRel

#: acknowledged messages before the kill (the issue asks for at least 5,000)
ACKED_BEFORE_KILL = 5000
#: the publisher's window of unacknowledged messages
WINDOW = 64
LOAD_TIMEOUT = 60.0


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path / "redis")
    server.start()
    yield server
    server.stop()


def _plugin_available(backend: str) -> None:
    module = {"sqlite": "midge_storage_sqlite", "lmdb": "midge_storage_lmdb",
              "redis": "midge_storage_redis"}[backend]
    pytest.importorskip(module, reason=f"{module} is not installed (.ci/run installs it)")


class Publisher(threading.Thread):
    """Publishes ``prefix + n`` at QoS ``qos`` until the broker dies; records what was
    acknowledged (PUBACK, or PUBREC for QoS 2)."""

    def __init__(self, port: int, qos: int, prefix: bytes) -> None:
        super().__init__(daemon=True)
        self.raw = Raw(port)
        self.raw.connect(f"pub-{qos}", True)
        self.qos = qos
        self.prefix = prefix
        self.acked: list[int] = []
        self.stop = threading.Event()

    def run(self) -> None:
        raw = self.raw
        sent = 0
        unacked: dict[int, int] = {}
        deadline = time.monotonic() + LOAD_TIMEOUT
        try:
            while not self.stop.is_set() and time.monotonic() < deadline:
                while len(unacked) < WINDOW:
                    pid = sent % 65535 + 1
                    unacked[pid] = sent
                    raw.send(Publish("load/x", self.prefix + str(sent).encode(), self.qos,
                                     packet_id=pid), now=False)
                    sent += 1
                raw.flush()
                packet = raw.recv()
                if isinstance(packet, PubAck | PubRec):
                    self.acked.append(unacked.pop(packet.packet_id))
                    if isinstance(packet, PubRec):
                        raw.send(PubRel(packet.packet_id), now=False)
        except (ConnectionError, OSError):
            pass
        finally:
            raw.close()


def _run(tmp_path: Path, backend: str, qos: int, online: bool,
         redis: RedisServer | None) -> None:
    port = free_port()
    config = broker_config(tmp_path, port, storage_table(backend, tmp_path, redis))
    broker = BrokerProcess(config, port, tmp_path / "broker.log")
    broker.start()
    receiver = Receiver()
    sub = Raw(port)
    sub.connect("keeper", False)
    assert sub.subscribe("load/#", qos).reason_codes == [qos]
    consumer: threading.Thread | None = None
    if online:
        def consume() -> None:
            with contextlib.suppress(ConnectionError, OSError):
                receiver.drain(sub, 30.0)

        consumer = threading.Thread(target=consume, daemon=True)
        consumer.start()
    else:
        sub.close()
    prefix = b"m"
    publisher = Publisher(port, qos, prefix)
    publisher.start()
    deadline = time.monotonic() + LOAD_TIMEOUT
    while len(publisher.acked) < ACKED_BEFORE_KILL and time.monotonic() < deadline:
        time.sleep(0.01)
    assert publisher.is_alive(), "the publisher stopped before the kill"
    broker.kill()  # SIGKILL mid-stream
    publisher.join(10)
    acked = sorted(publisher.acked)
    assert len(acked) >= ACKED_BEFORE_KILL
    if consumer is not None:
        consumer.join(10)
    sub.close()
    got_before = len(receiver.got)

    broker.start()
    try:
        again = Raw(port)
        ack = again.connect("keeper", False)
        assert ack.session_present
        receiver.drain(again, 3.0)
        again.close()
    finally:
        assert broker.stop() == 0
    seqs = sequence_of(receiver.got, prefix)
    missing = set(acked) - set(seqs)
    assert not missing, (f"{len(missing)} of {len(acked)} acknowledged messages lost "
                         f"(e.g. {sorted(missing)[:5]}); {got_before} arrived before the kill")
    # in the publisher's order: the first arrival of each message is increasing
    first: list[int] = []
    seen: set[int] = set()
    for n in seqs:
        if n not in seen:
            seen.add(n)
            first.append(n)
    assert first == sorted(first), "messages arrived out of the publisher's order"
    if qos == 2:
        assert len(seqs) == len(seen), f"{len(seqs) - len(seen)} QoS 2 duplicates"


@pytest.mark.parametrize("online", [False, True], ids=["offline", "online"])
@pytest.mark.parametrize("qos", [1, 2])
@pytest.mark.parametrize("backend", BACKENDS)
def test_nothing_acknowledged_is_lost_to_sigkill(tmp_path: Path, backend: str, qos: int,
                                                 online: bool,
                                                 request: pytest.FixtureRequest) -> None:
    _plugin_available(backend)
    redis = request.getfixturevalue("redis_server") if backend == "redis" else None
    _run(tmp_path, backend, qos, online, redis)
