"""The ``midge`` command as a user runs it: a real subprocess on loopback ports.

Covers serving with and without a configuration file, ``--port`` replacing the first tcp
listener's port, configuration errors (exit status 2 naming the file and the key), a busy
port (exit status 1), graceful shutdown on SIGTERM and SIGINT (v5 clients get DISCONNECT
0x8B, exit status 0), JSON log lines, and listeners that refuse anonymous clients.
Every wait is bounded; no test asserts how long anything took.
"""

from __future__ import annotations

import json
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from midge.codec import ConnAck, Connect, Decoder, Disconnect, Packet, Property, Role, encode

#: seconds a process gets to start listening, or to exit once it should
PROCESS_TIMEOUT = 20.0


def _script() -> list[str]:
    beside = Path(sys.executable).with_name("midge")
    if beside.exists():
        return [str(beside)]
    found = shutil.which("midge")
    assert found, "the midge console script is not installed"
    return [found]


def _module() -> list[str]:
    return [sys.executable, "-m", "midge"]


ENTRY_POINTS: dict[str, Callable[[], list[str]]] = {"script": _script, "module": _module}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Midge:
    """One ``midge`` process with its stderr captured to a file."""

    def __init__(self, command: list[str], stderr_path: Path, cwd: Path) -> None:
        self.stderr_path = stderr_path
        with open(stderr_path, "wb") as stderr:
            self.proc = subprocess.Popen(
                command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=stderr,
                cwd=cwd,
            )

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def wait_listening(self, port: int) -> None:
        """Return once ``port`` accepts TCP connections; fail if the process exits first."""
        deadline = time.monotonic() + PROCESS_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(
                    f"midge exited with {self.proc.returncode}:\n{self.stderr()}"
                )
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                return
            except OSError:
                time.sleep(0.05)
        raise AssertionError(f"midge did not listen on {port}:\n{self.stderr()}")

    def exit_status(self) -> int:
        """Wait (bounded) for the process to exit on its own."""
        try:
            return self.proc.wait(timeout=PROCESS_TIMEOUT)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"midge did not exit:\n{self.stderr()}") from None

    def stop(self, signum: int = signal.SIGTERM) -> int:
        self.proc.send_signal(signum)
        return self.exit_status()


@pytest.fixture
def midge(tmp_path: Path) -> Iterator[Callable[..., Midge]]:
    """``midge(*args, entry="script")`` starts the command; teardown kills what is left."""
    started: list[Midge] = []

    def start(*args: str, entry: str = "script") -> Midge:
        command = ENTRY_POINTS[entry]() + list(args)
        process = Midge(command, tmp_path / f"stderr-{len(started)}.log", tmp_path)
        started.append(process)
        return process

    yield start
    for process in started:
        if process.proc.poll() is None:
            process.proc.kill()
            process.proc.wait(timeout=PROCESS_TIMEOUT)


def write_config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / f"midge-{uuid.uuid4().hex[:6]}.toml"
    if ALLOW_MARKER in text:
        text += "\n[plugins.auth_allow]\n"
    path.write_text(text)
    return path


def listener(port: int, *, anonymous: bool | None = True, extra: str = "") -> str:
    """A [[listeners]] table; ``anonymous`` asks write_config to activate auth_allow."""
    lines = ["[[listeners]]", 'type = "tcp"', 'host = "127.0.0.1"', f"port = {port}"]
    marker = f"{ALLOW_MARKER}\n" if anonymous else ""
    return marker + "\n".join(lines) + "\n" + extra + "\n"


#: a comment listener() leaves for write_config: the file needs [plugins.auth_allow]
ALLOW_MARKER = "# allow anonymous clients"


class Raw:
    """A bare MQTT connection: send a CONNECT, read what the broker says until it closes."""

    def __init__(self, port: int, level: int) -> None:
        self.level = level
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        self.decoder = Decoder(Role.CLIENT, protocol_level=level)

    def connect(self, client_id: str) -> ConnAck:
        self.sock.sendall(encode(Connect(client_id, self.level), self.level))
        packet = self.recv()
        assert isinstance(packet, ConnAck), packet
        return packet

    def recv(self) -> Packet:
        deadline = time.monotonic() + 5
        while (packet := self.decoder.next_packet()) is None:
            self.sock.settimeout(max(0.01, deadline - time.monotonic()))
            data = self.sock.recv(65536)
            assert data, "closed by the broker"
            self.decoder.feed(data)
        return packet

    def packets_until_close(self) -> list[Packet]:
        deadline = time.monotonic() + PROCESS_TIMEOUT
        while time.monotonic() < deadline:
            self.sock.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                data = self.sock.recv(65536)
            except ConnectionResetError:
                break
            if not data:
                break
            self.decoder.feed(data)
        else:
            raise AssertionError("the broker did not close the connection")
        out = []
        while (packet := self.decoder.next_packet()) is not None:
            out.append(packet)
        return out

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def raw() -> Iterator[Callable[[int, int], Raw]]:
    made: list[Raw] = []

    def make(port: int, level: int) -> Raw:
        made.append(Raw(port, level))
        return made[-1]

    yield make
    for connection in made:
        connection.close()


def paho_round_trip(port: int) -> None:
    """A paho client connects, subscribes and receives its own message."""
    received: list[bytes] = []
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"cli-{uuid.uuid4().hex[:6]}")
    client.on_message = lambda c, u, m: received.append(bytes(m.payload))
    client.connect("127.0.0.1", port)
    client.loop_start()
    try:
        client.subscribe("cli/#", 1)
        payload = uuid.uuid4().hex.encode()
        deadline = time.monotonic() + 10
        # resend until the subscription is in place; bounded
        while payload not in received and time.monotonic() < deadline:
            client.publish("cli/x", payload, 1).wait_for_publish(2)
            time.sleep(0.05)
        assert payload in received
    finally:
        client.disconnect()
        client.loop_stop()


# -- serving ------------------------------------------------------------------------------


@pytest.mark.parametrize("entry", ["script", "module"])
def test_port_without_config_serves_loopback_with_anonymous(
    midge: Callable[..., Midge], entry: str,
) -> None:
    port = free_port()
    process = midge("--port", str(port), entry=entry)
    process.wait_listening(port)
    paho_round_trip(port)
    stderr = process.stderr()
    line = next((x for x in stderr.splitlines() if f"127.0.0.1:{port}" in x), "")
    assert "only" in line and "anonymous clients allowed" in line, stderr
    assert process.stop() == 0


def test_config_file_listeners_and_limits(
    midge: Callable[..., Midge], raw: Callable[[int, int], Raw], tmp_path: Path,
) -> None:
    first, second = free_port(), free_port()
    config = write_config(
        tmp_path,
        "[broker]\nmax_packet_size = 2048\nreceive_maximum = 7\n\n"
        + listener(first) + listener(second),
    )
    process = midge("-c", str(config))
    process.wait_listening(first)
    process.wait_listening(second)
    for port in (first, second):
        ack = raw(port, 5).connect(f"cfg-{port}")
        assert ack.reason_code == 0
        assert ack.properties[Property.MAXIMUM_PACKET_SIZE] == 2048
        assert ack.properties[Property.RECEIVE_MAXIMUM] == 7
    paho_round_trip(second)
    assert process.stop() == 0


def test_port_replaces_the_first_tcp_listener_port(
    midge: Callable[..., Midge], tmp_path: Path,
) -> None:
    configured, second, override = free_port(), free_port(), free_port()
    config = write_config(tmp_path, listener(configured) + listener(second))
    process = midge("-c", str(config), "--port", str(override))
    process.wait_listening(override)
    process.wait_listening(second)
    paho_round_trip(override)
    # every listener is bound before any is served, so the replaced port is known free
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", configured), timeout=5).close()
    assert process.stop() == 0


@pytest.mark.parametrize(("level", "code"), [(4, 5), (5, 0x87)], ids=["3.1.1", "5.0"])
def test_config_listener_refuses_anonymous_by_default(
    midge: Callable[..., Midge], raw: Callable[[int, int], Raw], tmp_path: Path,
    level: int, code: int,
) -> None:
    """With a config file and no auth plugin, every connection is refused."""
    port = free_port()
    process = midge("-c", str(write_config(tmp_path, listener(port, anonymous=None))))
    process.wait_listening(port)
    client = raw(port, level)
    ack = client.connect("anonymous")
    assert ack.reason_code == code  # 3.1.1: not authorized; 5.0: 0x87 Not authorized
    assert client.packets_until_close() == []
    assert process.stop() == 0


# -- configuration errors -----------------------------------------------------------------

#: (text before a valid listener, text after it, the key the message must name)
CONFIG_ERRORS = [
    pytest.param("[broker]\nmax_packet_sise = 1024\n", "", "broker.max_packet_sise",
                 id="unknown-key"),
    pytest.param("[brokr]\n", "", "brokr", id="unknown-table"),
    pytest.param('[broker]\nmax_packet_size = "1k"\n', "", "broker.max_packet_size",
                 id="bad-value-type"),
    pytest.param("[broker]\nmax_keepalive = true\n", "", "broker.max_keepalive",
                 id="bool-for-int"),
    pytest.param("[broker]\nreceive_maximum = 0\n", "", "broker.receive_maximum",
                 id="out-of-range"),
    pytest.param("", '[[listeners]]\ntype = "udp"\nport = 1\n', "listeners[1].type",
                 id="unknown-listener-type"),
    pytest.param("", '[[listeners]]\nport = 1\nallow_anonymous = true\n',
                 "listeners[1].allow_anonymous", id="listener-anonymous-not-a-key"),
    pytest.param("", '[[listeners]]\nport = "1883"\n',
                 "listeners[1].port", id="listener-bad-value-type"),
    pytest.param("[plugins.no_such_plugin]\n", "", "no_such_plugin",
                 id="plugin-not-installed"),
    pytest.param("", "[[listeners]]\nport = 70000\n", "listeners[1].port",
                 id="listener-port-out-of-range"),
]


@pytest.mark.parametrize(("before", "after", "key"), CONFIG_ERRORS)
def test_config_error_exits_2_naming_file_and_key(
    midge: Callable[..., Midge], tmp_path: Path, before: str, after: str, key: str,
) -> None:
    # a valid listener too: had the error been ignored, the broker would serve, not exit
    config = write_config(tmp_path, before + listener(free_port()) + after)
    process = midge("-c", str(config))
    assert process.exit_status() == 2
    stderr = process.stderr()
    assert str(config) in stderr and key in stderr, stderr
    assert "Traceback" not in stderr


def test_missing_config_file_exits_2(midge: Callable[..., Midge], tmp_path: Path) -> None:
    missing = tmp_path / "no-such-midge.toml"
    process = midge("-c", str(missing))
    assert process.exit_status() == 2
    stderr = process.stderr()
    assert str(missing) in stderr and "not found" in stderr, stderr


def test_port_out_of_range_exits_2(midge: Callable[..., Midge]) -> None:
    process = midge("--port", "70000")
    assert process.exit_status() == 2
    assert "70000" in process.stderr()


def test_port_in_use_exits_1_with_a_clear_error(midge: Callable[..., Midge]) -> None:
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", 0))
        blocker.listen()
        port = blocker.getsockname()[1]
        process = midge("--port", str(port))
        assert process.exit_status() == 1
    stderr = process.stderr()
    assert f"127.0.0.1:{port}" in stderr and "in use" in stderr.lower(), stderr
    assert "Traceback" not in stderr, stderr


# -- shutdown and logging -----------------------------------------------------------------


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_shuts_down_gracefully(
    midge: Callable[..., Midge], raw: Callable[[int, int], Raw], signum: int,
) -> None:
    port = free_port()
    process = midge("--port", str(port))
    process.wait_listening(port)
    v5 = raw(port, 5)
    assert v5.connect("shutdown-v5").reason_code == 0
    v311 = raw(port, 4)
    assert v311.connect("shutdown-v311").reason_code == 0
    process.proc.send_signal(signum)
    packets = v5.packets_until_close()
    assert [(type(p), getattr(p, "reason_code", None)) for p in packets] == [(Disconnect, 0x8B)]
    assert v311.packets_until_close() == []
    assert process.exit_status() == 0
    assert "Traceback" not in process.stderr()


def test_log_format_json(midge: Callable[..., Midge], raw: Callable[[int, int], Raw]) -> None:
    port = free_port()
    process = midge("--port", str(port), "--log-format", "json", "-v")
    process.wait_listening(port)
    assert raw(port, 5).connect("json-client").reason_code == 0
    assert process.stop() == 0
    lines = [line for line in process.stderr().splitlines() if line.strip()]
    entries: list[dict[str, Any]] = [json.loads(line) for line in lines]
    assert len(entries) >= 3
    for entry in entries:
        assert {"time", "level", "logger", "message"} <= entry.keys(), entry
    messages = [entry["message"] for entry in entries]
    assert any(f"127.0.0.1:{port}" in m for m in messages), messages
    assert any("json-client" in m for m in messages), messages


def test_version() -> None:
    result = subprocess.run(
        [*_script(), "--version"], capture_output=True, text=True, timeout=PROCESS_TIMEOUT
    )
    assert result.returncode == 0
    assert result.stdout.startswith("midge ")
