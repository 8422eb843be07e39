"""Storage faults and lifecycle, with real broker processes: bad storage at start, a
newer format, Redis going away under load, SIGTERM committing everything, delayed wills
across kill -9, and space reclaimed."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from storage_helpers import (
    BACKENDS,
    ROOT,
    BrokerProcess,
    Raw,
    Receiver,
    RedisServer,
    broker_config,
    free_port,
    sequence_of,
    storage_table,
)
from test_storage_crash import Publisher

from midge.codec import PROTOCOL_5, ConnAck, Connect, Property, Publish, Will


def _start_fails(tmp_path: Path, storage: str) -> str:
    """Run ``midge -c`` on a bad storage: it must exit non-zero; returns its output."""
    port = free_port()
    config = broker_config(tmp_path, port, storage)
    env = dict(os.environ, PYTHONPATH=str(ROOT / "core" / "src"))
    done = subprocess.run([sys.executable, "-m", "midge", "-c", str(config)], env=env,
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr
    return done.stderr


def test_a_corrupt_sqlite_file_stops_startup(tmp_path: Path) -> None:
    pytest.importorskip("midge_storage_sqlite")
    (tmp_path / "midge.db").write_bytes(b"this is not a database" * 100)
    err = _start_fails(tmp_path, storage_table("sqlite", tmp_path))
    assert f"sqlite:{tmp_path / 'midge.db'}" in err
    assert "not a database" in err


def test_an_sqlite_path_that_cannot_be_created_stops_startup(tmp_path: Path) -> None:
    pytest.importorskip("midge_storage_sqlite")
    table = f'[plugins.storage_sqlite]\npath = "{tmp_path / "missing" / "dir" / "x.db"}"\n'
    err = _start_fails(tmp_path, table)
    assert "cannot open" in err and "x.db" in err


def test_an_unwritable_sqlite_file_stops_startup(tmp_path: Path) -> None:
    pytest.importorskip("midge_storage_sqlite")
    if os.geteuid() == 0:
        pytest.skip("root ignores file permissions")
    db = tmp_path / "midge.db"
    sqlite3.connect(db).close()
    db.chmod(0o400)
    tmp_path.chmod(0o500)
    try:
        err = _start_fails(tmp_path, storage_table("sqlite", tmp_path))
    finally:
        tmp_path.chmod(0o700)
    assert "sqlite:" in err


def test_a_newer_sqlite_format_is_refused(tmp_path: Path) -> None:
    pytest.importorskip("midge_storage_sqlite")
    db = sqlite3.connect(tmp_path / "midge.db")
    db.execute("CREATE TABLE kv (g BLOB NOT NULL, f BLOB NOT NULL, v BLOB NOT NULL, "
               "PRIMARY KEY (g, f)) WITHOUT ROWID")
    db.execute("INSERT INTO kv VALUES (?, ?, ?)", (b"M", b"version", b"99"))
    db.commit()
    db.close()
    err = _start_fails(tmp_path, storage_table("sqlite", tmp_path))
    assert "newer midge" in err and "99" in err


def test_an_lmdb_path_that_is_a_file_stops_startup(tmp_path: Path) -> None:
    pytest.importorskip("midge_storage_lmdb")
    (tmp_path / "midge-lmdb").write_text("a file")
    err = _start_fails(tmp_path, storage_table("lmdb", tmp_path))
    assert f"lmdb:{tmp_path / 'midge-lmdb'}" in err and "not a directory" in err


def test_redis_not_running_stops_startup(tmp_path: Path) -> None:
    pytest.importorskip("midge_storage_redis")
    table = f'[plugins.storage_redis]\nurl = "redis://:secret@127.0.0.1:{free_port()}/0"\n'
    err = _start_fails(tmp_path, table)
    assert "redis:redis://***@127.0.0.1" in err and "cannot connect" in err
    assert "secret" not in err


def test_redis_stopped_and_restarted_under_load_loses_nothing(tmp_path: Path) -> None:
    pytest.importorskip("midge_storage_redis")
    redis = RedisServer(tmp_path / "redis")
    redis.start()
    port = free_port()
    broker = BrokerProcess(broker_config(tmp_path, port, storage_table("redis", tmp_path, redis)),
                           port, tmp_path / "broker.log")
    broker.start()
    try:
        sub = Raw(port)
        sub.connect("keeper", False)
        sub.subscribe("load/#", 1)
        sub.close()
        publisher = Publisher(port, 1, b"r")
        publisher.start()
        deadline = time.monotonic() + 30
        while len(publisher.acked) < 2000 and time.monotonic() < deadline:
            time.sleep(0.01)
        redis.stop()
        time.sleep(0.5)
        stalled = len(publisher.acked)
        # the broker stays up and serves what needs no commit: QoS 0 between clean clients
        a, b = Raw(port), Raw(port)
        a.connect("qos0-sub", True)
        a.subscribe("plain", 0)
        b.connect("qos0-pub", True)
        b.send(Publish("plain", b"still here", 0))
        got = [p for p in a.packets(2.0) if isinstance(p, Publish)]
        assert [p.payload for p in got] == [b"still here"]
        a.close()
        b.close()
        time.sleep(1.0)
        # nothing is acknowledged while nothing can be stored
        assert len(publisher.acked) - stalled <= 64 * 2
        redis.start()
        more = len(publisher.acked)
        deadline = time.monotonic() + 30
        while len(publisher.acked) < more + 2000 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert len(publisher.acked) >= more + 2000, "acknowledgements did not resume"
        publisher.stop.set()
        publisher.join(10)
        receiver = Receiver()
        again = Raw(port)
        assert again.connect("keeper", False).session_present
        receiver.drain(again, 3.0)
        again.close()
        missing = set(publisher.acked) - set(sequence_of(receiver.got, b"r"))
        assert not missing, f"{len(missing)} acknowledged messages lost"
        log = (tmp_path / "broker.log").read_text()
        assert log.count("commit failed") == 1 and "commits succeed again" in log
    finally:
        broker.stop()
        redis.stop()


@pytest.mark.parametrize("backend", BACKENDS)
def test_sigterm_commits_everything_even_in_periodic_mode(tmp_path: Path, backend: str,
                                                          request: pytest.FixtureRequest) -> None:
    pytest.importorskip(f"midge_storage_{backend}")
    redis = None
    if backend == "redis":
        redis = RedisServer(tmp_path / "redis")
        redis.start()
        request.addfinalizer(redis.stop)
    port = free_port()
    table = storage_table(backend, tmp_path, redis, durability="periodic", flush_interval=600)
    broker = BrokerProcess(broker_config(tmp_path, port, table), port, tmp_path / "broker.log")
    broker.start()
    sub = Raw(port)
    sub.connect("keeper", False)
    sub.subscribe("load/#", 2)
    sub.close()
    pub = Raw(port)
    pub.connect("pub", True)
    for n in range(500):
        pub.send(Publish("load/t", b"t%d" % n, 1, packet_id=n + 1), now=False)
    pub.send(Publish("kept", b"retained", 1, retain=True, packet_id=600))
    acks = [p for p in pub.packets(2.0)]
    assert len(acks) == 501
    pub.close()
    assert broker.stop() == 0
    broker.start()
    try:
        receiver = Receiver()
        again = Raw(port)
        assert again.connect("keeper", False).session_present
        receiver.drain(again, 2.0)
        again.subscribe("kept", 1)
        receiver.drain(again, 1.0)
        again.close()
    finally:
        broker.stop()
    assert sequence_of(receiver.got, b"t") == list(range(500))
    assert b"retained" in receiver.got


@pytest.mark.parametrize("backend", ["sqlite", "lmdb"])
def test_a_delayed_will_survives_kill_9(tmp_path: Path, backend: str) -> None:
    pytest.importorskip(f"midge_storage_{backend}")
    port = free_port()
    broker = BrokerProcess(broker_config(tmp_path, port, storage_table(backend, tmp_path)),
                           port, tmp_path / "broker.log")
    broker.start()
    client = Raw(port, PROTOCOL_5)
    will = Will("wills/dev", b"\x00offline", 1, True, {Property.WILL_DELAY_INTERVAL: 2,
                                                       Property.USER_PROPERTY: [("a", "1")]})
    client.send(Connect("dev", PROTOCOL_5, False, 60, will=will,
                        properties={Property.SESSION_EXPIRY_INTERVAL: 300}))
    connack = client.recv()
    assert isinstance(connack, ConnAck) and connack.reason_code == 0
    broker.kill()
    client.close()
    started = time.monotonic()
    broker.start()
    try:
        watcher = Raw(port, PROTOCOL_5)
        watcher.connect("watcher", True)
        got: list[Publish] = []
        deadline = time.monotonic() + 10
        while not got and time.monotonic() < deadline:
            watcher.subscribe("wills/#", 1)
            got = [p for p in watcher.packets(0.5) if isinstance(p, Publish)]
        watcher.close()
    finally:
        broker.stop()
    assert got, "the delayed will was never published"
    assert got[0].payload == b"\x00offline"
    assert got[0].properties.get(Property.USER_PROPERTY) == [("a", "1")]
    assert time.monotonic() - started >= 1.5  # after its delay, counted from the restart


@pytest.mark.parametrize("backend", ["sqlite", "lmdb"])
def test_space_is_reclaimed_when_messages_pass_through_a_session(
        tmp_path: Path, backend: str) -> None:
    pytest.importorskip(f"midge_storage_{backend}")
    port = free_port()
    broker = BrokerProcess(broker_config(tmp_path, port, storage_table(backend, tmp_path)),
                           port, tmp_path / "broker.log")
    broker.start()
    try:
        receiver = Receiver()
        sub = Raw(port)
        sub.connect("keeper", False)
        sub.subscribe("load/#", 1)
        stop = threading.Event()

        def consume() -> None:
            while not stop.is_set():
                receiver.drain(sub, 0.5)

        consumer = threading.Thread(target=consume, daemon=True)
        consumer.start()
        pub = Raw(port)
        pub.connect("pub", True)
        payload = b"x" * 1000
        sizes = []
        for _ in range(8):
            for n in range(5000):
                pub.send(Publish("load/t", payload, 1, packet_id=n % 60000 + 1), now=False)
                if n % 50 == 49:
                    pub.flush()
                    for _ in range(50):
                        pub.recv()
            time.sleep(0.5)
            store = [*tmp_path.glob("midge.db*"), *tmp_path.glob("midge-lmdb/*")]
            sizes.append(sum(f.stat().st_size for f in store))
        stop.set()
        consumer.join(5)
        sub.close()
        pub.close()
    finally:
        broker.stop()
    # 40 MB of messages went through: the store stays far below that (it grows to its
    # checkpoint and WAL limits, about 12 MB for SQLite, then reuses its space)
    assert sizes[-1] < 24 << 20, sizes
    print(backend, sizes)  # noqa: T201
