"""Interoperability with the Mosquitto command-line clients (mosquitto_pub/mosquitto_sub)
over MQTT 3.1.1 and 5: publish/subscribe at each QoS, retained messages and a will."""

from __future__ import annotations

import shutil
import subprocess
import time
from typing import Any

import pytest

pytestmark = pytest.mark.skipif(
    shutil.which("mosquitto_sub") is None or shutil.which("mosquitto_pub") is None,
    reason="mosquitto-clients is not installed",
)
VERSIONS = pytest.mark.parametrize("version", ["mqttv311", "mqttv5"])
FORMAT = "%t|%q|%r|%p"


def _sub(broker: Any, version: str, cid: str, topic: str, qos: int = 0,
         *extra: str, count: int = 1, wait: bool = True) -> subprocess.Popen[str]:
    """Start mosquitto_sub (bounded by -C and -W); ``wait`` until it has subscribed."""
    args = ["mosquitto_sub", "-h", "127.0.0.1", "-p", str(broker.port), "-V", version,
            "-i", cid, "-t", topic, "-q", str(qos), "-F", FORMAT, "-C", str(count),
            "-W", "5", *extra]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def subscribed() -> bool:
        session = broker.broker.engine.sessions.get(cid)
        return session is not None and topic in session.subscriptions

    deadline = time.monotonic() + 5
    while wait and not broker.call(subscribed):
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            out, err = proc.communicate()
            raise AssertionError(f"mosquitto_sub did not subscribe: {out!r} {err!r}")
        time.sleep(0.02)
    return proc


def _pub(broker: Any, version: str, topic: str, message: str, qos: int = 0,
         *extra: str) -> None:
    args = ["mosquitto_pub", "-h", "127.0.0.1", "-p", str(broker.port), "-V", version,
            "-t", topic, "-m", message, "-q", str(qos), *extra]
    done = subprocess.run(args, capture_output=True, text=True, timeout=10, check=False)
    assert done.returncode == 0, done.stderr


def _output(proc: subprocess.Popen[str]) -> list[str]:
    try:
        out, err = proc.communicate(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
    assert proc.returncode == 0, (proc.returncode, out, err)
    return out.splitlines()


@VERSIONS
@pytest.mark.parametrize("qos", [0, 1, 2])
def test_mosquitto_pub_reaches_mosquitto_sub(broker: Any, version: str, qos: int) -> None:
    sub = _sub(broker, version, "cli-sub", "cli/t", qos)
    _pub(broker, version, "cli/t", "hello", qos)
    assert _output(sub) == [f"cli/t|{qos}|0|hello"]


@VERSIONS
def test_mosquitto_sub_receives_retained_message(broker: Any, version: str) -> None:
    _pub(broker, version, "cli/r", "old", 1, "-r")
    _pub(broker, version, "cli/r", "kept", 1, "-r")
    sub = _sub(broker, version, "cli-late", "cli/#", 2, wait=False)
    assert _output(sub) == ["cli/r|1|1|kept"]


@VERSIONS
def test_mosquitto_sub_streams_qos2_messages_in_order(broker: Any, version: str) -> None:
    sub = _sub(broker, version, "cli-many", "cli/n", 2, count=5)
    for n in range(5):
        _pub(broker, version, "cli/n", f"m{n}", 2)
    assert _output(sub) == [f"cli/n|2|0|m{n}" for n in range(5)]


@VERSIONS
def test_will_of_killed_mosquitto_sub_is_published(broker: Any, version: str) -> None:
    watcher = _sub(broker, version, "cli-watch", "cli/will", 1)
    doomed = _sub(broker, version, "cli-doomed", "cli/ignored", 0,
                  "--will-topic", "cli/will", "--will-payload", "gone", "--will-qos", "1")
    doomed.kill()  # SIGKILL: the socket closes without DISCONNECT
    doomed.communicate()
    assert _output(watcher) == ["cli/will|1|0|gone"]
