"""Smoke tests of midge installed from wheels, as a user installs it (run by .ci/wheels).

The rule: everything here runs against the venv .ci/wheels built from the wheelhouse,
never against the checkout: the first test proves it, and a missing file, entry point or
dependency in any wheel fails one of the others.
"""

from __future__ import annotations

import importlib
import os
import queue
import socket
import subprocess
import sys
import textwrap
import time
from importlib import metadata, resources
from pathlib import Path

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

VENV = Path(os.environ["MIDGE_VENV"])
CHECKOUT = Path(os.environ["MIDGE_CHECKOUT"])
BUNDLED = os.environ["MIDGE_BUNDLED_PLUGINS"].split()
MIDGE = VENV / "bin" / "midge"
#: the importable package of each bundled plugin (plugins/NAME holds midge_NAME)
PACKAGES = {name: f"midge_{name}" for name in BUNDLED}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(port: int, proc: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"midge exited with {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise AssertionError(f"midge did not listen on {port} within {timeout}s")


def start(*args: str, cwd: Path | None = None) -> subprocess.Popen[bytes]:
    return subprocess.Popen([str(MIDGE), *args], cwd=cwd, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)


def stop(proc: subprocess.Popen[bytes]) -> str:
    proc.terminate()
    try:
        _out, err = proc.communicate(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        _out, err = proc.communicate()
    assert proc.returncode == 0, err.decode()
    return err.decode()


def round_trip(port: int, username: str | None = None, password: str | None = None) -> bytes:
    got: queue.Queue[bytes] = queue.Queue()
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id="smoke")
    if username is not None:
        client.username_pw_set(username, password)
    client.on_message = lambda _c, _u, message: got.put(message.payload)
    client.connect("127.0.0.1", port)
    client.loop_start()
    try:
        client.subscribe("smoke/t", 1)
        time.sleep(0.2)
        client.publish("smoke/t", b"from a wheel", 1).wait_for_publish(5)
        return got.get(timeout=5)
    finally:
        client.disconnect()
        client.loop_stop()


def test_midge_is_the_installed_wheel_not_the_checkout() -> None:
    import midge

    location = Path(midge.__file__).resolve()
    assert location.is_relative_to(VENV.resolve()), location
    assert not location.is_relative_to(CHECKOUT.resolve()), location
    assert metadata.distribution("midge").read_text("direct_url.json") is None  # not editable


@pytest.mark.parametrize("package", ["midge", *PACKAGES.values()])
def test_each_wheel_carries_its_type_marker(package: str) -> None:
    assert resources.files(package).joinpath("py.typed").is_file()


def test_versions_are_in_lockstep() -> None:
    import midge

    versions = {metadata.version(f"midge-{name.replace('_', '-')}") for name in BUNDLED}
    assert versions == {midge.__version__}


def test_midge_plugins_lists_every_bundled_plugin() -> None:
    result = subprocess.run([str(MIDGE), "plugins"], capture_output=True, text=True,
                            timeout=30, check=False)
    assert result.returncode == 0, result.stderr
    for name in BUNDLED:
        assert f"{name}\n" in result.stdout, f"{name} missing from:\n{result.stdout}"
        importlib.import_module(PACKAGES[name])
    version = subprocess.run([str(MIDGE), "--version"], capture_output=True, text=True,
                             timeout=30, check=True).stdout
    for name in BUNDLED:
        assert f"plugin {name}:" in version, version


def test_the_quick_start_broker_answers_a_round_trip() -> None:
    port = free_port()
    proc = start("--port", str(port))
    try:
        wait_for_port(port, proc)
        assert round_trip(port) == b"from a wheel"
    finally:
        stop(proc)


def retained(port: int, topic: str, username: str, password: str) -> bytes | None:
    """The retained message on ``topic``, read by a fresh subscriber (None: there is none)."""
    got: queue.Queue[bytes] = queue.Queue()
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id="smoke-reader")
    client.username_pw_set(username, password)
    client.on_message = lambda _c, _u, message: got.put(message.payload)
    client.connect("127.0.0.1", port)
    client.loop_start()
    try:
        client.subscribe(topic, 1)
        return got.get(timeout=3)
    except queue.Empty:
        return None
    finally:
        client.disconnect()
        client.loop_stop()


def test_a_ledger_and_sqlite_config_survives_a_restart(tmp_path: Path) -> None:
    port = free_port()
    config = tmp_path / "midge.toml"
    config.write_text(textwrap.dedent(f"""
        [[listeners]]
        host = "127.0.0.1"
        port = {port}

        [plugins.auth_ledger.users.alice]
        password = "plain$s3cret"

        [plugins.auth_ledger.users.alice.acl]
        "smoke/#" = 3

        [plugins.storage_sqlite]
        path = "{tmp_path / 'midge.db'}"
    """))
    proc = start("-c", str(config))
    try:
        wait_for_port(port, proc)
        assert round_trip(port, "alice", "s3cret") == b"from a wheel"
        client = paho.Client(CallbackAPIVersion.VERSION2, client_id="smoke-writer")
        client.username_pw_set("alice", "s3cret")
        client.connect("127.0.0.1", port)
        client.loop_start()
        client.publish("smoke/kept", b"across restarts", 1, retain=True).wait_for_publish(5)
        client.disconnect()
        client.loop_stop()
    finally:
        stop(proc)
    proc = start("-c", str(config))
    try:
        wait_for_port(port, proc)
        assert retained(port, "smoke/kept", "alice", "s3cret") == b"across restarts"
        assert round_trip(port, "alice", "s3cret") == b"from a wheel"
    finally:
        stop(proc)


def test_the_pytest_plugin_is_registered() -> None:
    entry_points = metadata.entry_points(group="pytest11")
    assert any(ep.value == "midge.testing" for ep in entry_points)
    assert sys.modules.get("midge.testing") is not None  # pytest loaded it for this run


def test_the_status_page_is_served_from_the_installed_wheel(tmp_path: Path) -> None:
    import urllib.request

    mqtt, http = free_port(), free_port()
    config = tmp_path / "midge.toml"
    config.write_text(textwrap.dedent(f"""
        [[listeners]]
        host = "127.0.0.1"
        port = {mqtt}

        [[listeners]]
        type = "http"
        host = "127.0.0.1"
        port = {http}

        [plugins.auth_allow]
    """))
    proc = start("-c", str(config))
    try:
        wait_for_port(http, proc)
        with urllib.request.urlopen(f"http://127.0.0.1:{http}/", timeout=5) as page:
            assert page.headers["Content-Type"].startswith("text/html")
            assert b"<title>midge status</title>" in page.read()
        with urllib.request.urlopen(f"http://127.0.0.1:{http}/metrics", timeout=5) as metrics:
            assert b"midge_" in metrics.read()
    finally:
        stop(proc)
