"""Storage figures on /metrics and /stats, from a real storage plugin on a real broker: the
storage_sqlite plugin under persistent QoS 1 traffic (commit counts, times and batch sizes
consistent with what was written, and with what a restart finds in the file), and the
storage_redis plugin with its real redis-server stopped (not reachable, failures counted,
/readyz 503) and started again. Without a storage plugin the figures are absent."""

from __future__ import annotations

import math
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import pytest
from test_http_listener import (  # noqa: F401 - observed_factory is a fixture
    Observed,
    get,
    get_json,
    metrics,
    observed_factory,
    value,
    wait_for,
)

from midge.persistence import COMMIT_BUCKETS

STORAGE_FAMILIES = ("midge_storage_info", "midge_storage_up", "midge_storage_commits_total",
                    "midge_storage_commit_failures_total", "midge_storage_commit_seconds_count",
                    "midge_storage_batch_size_count", "midge_storage_pending_items")


def connect(port: int, client_id: str, clean: bool = True) -> paho.Client:
    client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=client_id,
                         clean_session=clean)
    client.connect("127.0.0.1", port)
    client.loop_start()
    return client


def leave(client: paho.Client) -> None:
    client.disconnect()
    client.loop_stop()


def park_session(running: Observed, client_id: str, topic_filter: str) -> None:
    """A persistent session subscribed to ``topic_filter`` whose client has gone away."""
    keeper = connect(running.port, client_id, clean=False)
    done: list[Any] = []
    keeper.on_subscribe = lambda *args: done.append(args)
    keeper.subscribe(topic_filter, 1)
    wait_for(lambda: bool(done))
    leave(keeper)
    wait_for(lambda: get_json(running.http_port,
                              f"/api/clients/{client_id}")["state"] == "offline")


def storage_figures(table: dict[Any, float]) -> dict[str, float]:
    names = ("commits_total", "commit_failures_total", "commit_seconds_count",
             "commit_seconds_sum", "batch_size_count", "batch_size_sum", "pending_items", "up")
    return {name: value(table, f"midge_storage_{name}") for name in names}


def buckets(table: dict[Any, float]) -> list[tuple[float, float]]:
    found = [(float(labels[0][1]), count) for (name, labels), count in table.items()
             if name == "midge_storage_commit_seconds_bucket"]
    return sorted(found)


def test_no_storage_plugin_no_storage_figures(broker: Observed) -> None:
    table = metrics(broker.http_port)
    assert not [key for key in table if key[0].startswith("midge_storage")]
    assert "storage" not in get_json(broker.http_port, "/stats")


@pytest.fixture
def broker(observed_factory: Callable[..., Observed]) -> Observed:  # noqa: F811
    return observed_factory()


def test_sqlite_commits_and_batches_move_with_persistent_traffic(
    observed_factory: Callable[..., Observed], tmp_path: Path,  # noqa: F811
) -> None:
    pytest.importorskip("midge_storage_sqlite")
    db = tmp_path / "midge.db"
    tables = {"storage_sqlite": {"path": str(db)}}
    running = observed_factory(tables=tables)
    table = metrics(running.http_port)
    assert value(table, "midge_storage_info", backend=f"sqlite:{db}", durability="sync") == 1
    assert value(table, "midge_storage_up") == 1
    park_session(running, "keeper", "q/#")
    publisher = connect(running.port, "publisher")
    # batches are committed in order: once this one's PUBACK is in, everything recorded
    # before it (the session going offline) is committed too
    publisher.publish("q/1", b"first", qos=1).wait_for_publish(5)
    before = storage_figures(metrics(running.http_port))
    assert before["commits_total"] >= 2  # the session, its subscription, "first"
    count = 40
    for index in range(count):
        # each PUBACK waits for the commit of the delivery queued for "keeper"
        publisher.publish("q/1", f"message-{index}", qos=1).wait_for_publish(5)
    leave(publisher)
    after_table = metrics(running.http_port)
    after = storage_figures(after_table)

    def moved(name: str) -> float:
        return after[name] - before[name]

    # every queued delivery is one change of one batch; a batch holds at least one
    assert moved("batch_size_sum") == count
    assert 1 <= moved("commits_total") <= count
    assert after["commits_total"] == after["commit_seconds_count"] == after["batch_size_count"]
    assert after["commit_seconds_sum"] > before["commit_seconds_sum"]
    assert after["commit_failures_total"] == 0 and after["pending_items"] == 0
    assert after["up"] == 1
    # cumulative buckets, the configured bounds, ending in +Inf with every commit
    found = buckets(after_table)
    assert [bound for bound, _ in found] == [*COMMIT_BUCKETS, math.inf]
    counts = [count for _, count in found]
    assert counts == sorted(counts) and counts[-1] == after["commits_total"]
    stats = get_json(running.http_port, "/stats")["storage"]
    assert stats["backend"] == f"sqlite:{db}" and stats["durability"] == "sync"
    assert stats["reachable"] is True
    assert stats["commits"] >= after["commits_total"]
    assert stats["items_committed"] >= after["batch_size_sum"]
    assert list(stats["commit_seconds_buckets"])[-1] == "+Inf"
    assert get_json(running.http_port, "/readyz") == {"status": "ready"}
    # what was counted as written is in the file: a restart finds the queue
    running.stop()
    restarted = observed_factory(tables=tables)
    keeper = get_json(restarted.http_port, "/api/clients/keeper")
    assert keeper["state"] == "offline" and keeper["queue_depth"] == count + 1


# -- a storage that goes away: redis ---------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Redis:
    """A real redis-server on a loopback port, stopped and started again by the test."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        exe = shutil.which("redis-server")
        if exe is None:
            pytest.skip("needs redis-server (apt-get install redis-server)")
        self.proc = subprocess.Popen(
            [exe, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.workdir),
             "--save", "", "--appendonly", "no", "--protected-mode", "no"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return
            except OSError:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    raise RuntimeError("redis-server did not start") from None
                time.sleep(0.05)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(10)
            self.proc = None


@pytest.fixture
def redis(tmp_path: Path) -> Iterator[Redis]:
    server = Redis(tmp_path)
    server.start()
    yield server
    server.stop()


def test_a_stopped_redis_is_unreachable_storage_until_it_returns(
    observed_factory: Callable[..., Observed], redis: Redis,  # noqa: F811
) -> None:
    pytest.importorskip("midge_storage_redis")
    running = observed_factory(tables={"storage_redis": {
        "url": f"redis://127.0.0.1:{redis.port}/0", "prefix": "obs:"}})
    park_session(running, "keeper", "q/#")
    assert value(metrics(running.http_port), "midge_storage_up") == 1
    redis.stop()
    publisher = connect(running.port, "publisher")
    sent = publisher.publish("q/1", b"while redis is down", qos=1)
    wait_for(lambda: value(metrics(running.http_port),
                           "midge_storage_commit_failures_total") >= 1, timeout=15)
    table = metrics(running.http_port)
    assert value(table, "midge_storage_up") == 0
    assert value(table, "midge_storage_pending_items") >= 1  # the batch being retried
    assert not sent.is_published()  # its PUBACK waits for the commit
    status, _, body = get(running.http_port, "/readyz")
    assert status == 503
    assert get_json(running.http_port, "/stats")["storage"]["reachable"] is False
    assert body == (b'{"status":"not ready","reason":"storage redis:redis://127.0.0.1:'
                    + str(redis.port).encode() + b'/0: commits are failing"}')
    redis.start()  # the same port, empty: the retried batch is written whole
    sent.wait_for_publish(15)
    table = metrics(running.http_port)
    assert value(table, "midge_storage_up") == 1
    assert value(table, "midge_storage_pending_items") == 0
    assert get(running.http_port, "/readyz")[0] == 200
    leave(publisher)
