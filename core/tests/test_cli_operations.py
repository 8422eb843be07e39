"""Running midge as an operator does: log lines that read well (quoted client ids, the code a
refused client really got), JSON fields for client lines, a rate limit on repeated
warnings, ``--trace`` with credentials redacted, and systemd's notify protocol on a
datagram socket the test binds itself."""

from __future__ import annotations

import json
import logging
import signal
import socket
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from test_cli import Midge, Raw, free_port, listener, midge, raw, write_config  # noqa: F401

from midge.codec import Connect, encode
from midge.logs import JsonFormatter, RateLimit
from midge.systemd import Notifier


def wait_for_text(process: Midge, text: str, timeout: float = 10.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        stderr = process.stderr()
        if text in stderr:
            return stderr
        time.sleep(0.05)
    raise AssertionError(f"{text!r} never appeared:\n{process.stderr()}")


def test_starting_comes_before_the_no_configuration_warning(
    midge: Callable[..., Midge],  # noqa: F811
) -> None:
    port = free_port()
    process = midge("--port", str(port))
    process.wait_listening(port)
    assert process.stop() == 0
    lines = process.stderr().splitlines()
    starting = next(i for i, line in enumerate(lines) if "starting" in line)
    warning = next(i for i, line in enumerate(lines) if "no configuration file" in line)
    assert starting < warning, lines


def test_client_lines_quote_ids_and_carry_json_fields(
    midge: Callable[..., Midge], raw: Callable[[int, int], Raw]  # noqa: F811
) -> None:
    port = free_port()
    process = midge("--port", str(port), "--log-format", "json", "-v")
    process.wait_listening(port)
    assert raw(port, 4).connect("client").reason_code == 0
    wait_for_text(process, "connected from")
    assert process.stop() == 0
    entries = [json.loads(line) for line in process.stderr().splitlines() if line.strip()]
    connected = next(e for e in entries if "connected from" in e["message"])
    assert connected["message"].startswith('client "client" connected from 127.0.0.1:')
    assert connected["client_id"] == "client"
    assert connected["listener"] == f"tcp://127.0.0.1:{port}"
    assert connected["address"].startswith("127.0.0.1:")
    # lines that are not about a client have no such fields
    starting = next(e for e in entries if "starting" in e["message"])
    assert "client_id" not in starting


def test_refusals_name_the_id_asked_for_and_the_code_sent(
    midge: Callable[..., Midge], raw: Callable[[int, int], Raw], tmp_path: Path  # noqa: F811
) -> None:
    port = free_port()
    # a configuration file without an authentication plugin: every client is refused
    config = write_config(tmp_path, listener(port, anonymous=False))
    process = midge("-c", str(config))
    process.wait_listening(port)
    assert raw(port, 4).connect("v3-device").reason_code == 5
    assert raw(port, 5).connect("v5-device").reason_code == 0x87
    assert raw(port, 5).connect("").reason_code == 0x87
    stderr = wait_for_text(process, "empty client id")
    assert process.stop() == 0
    stderr = process.stderr()
    assert ('client "v3-device" from 127.0.0.1:' in stderr
            and "refused: not authorized (CONNACK return code 5)" in stderr), stderr
    assert 'client "v5-device" from' in stderr and "(CONNACK 0x87)" in stderr
    empty = next(line for line in stderr.splitlines() if "empty client id" in line)
    # named by its address once, never by the id the broker would have assigned
    assert empty.count("127.0.0.1:") == 1, empty
    assert '"midge' not in empty, empty


def test_a_flood_of_bad_clients_is_rate_limited(
    midge: Callable[..., Midge],  # noqa: F811
) -> None:
    port = free_port()
    process = midge("--port", str(port))
    process.wait_listening(port)
    flood = 60
    for index in range(flood):
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            # a CONNECT, then a packet type 0 (reserved): a protocol error each time
            sock.sendall(encode(Connect(f"bad-{index}", 4), 4) + b"\x00\x00")
            sock.settimeout(5)
            try:
                while sock.recv(65536):
                    pass
            except OSError:
                pass
    wait_for_text(process, "protocol error")
    assert process.stop() == 0
    stderr = process.stderr()
    errors = [line for line in stderr.splitlines()
              if "protocol error" in line and "suppressed" not in line]
    assert 1 <= len(errors) <= RateLimit().burst, errors
    summary = [line for line in stderr.splitlines() if "similar messages suppressed" in line]
    assert len(summary) == 1, stderr
    assert f"{flood - len(errors)} similar messages suppressed" in summary[0]
    assert "protocol error" in summary[0]


def test_trace_logs_packets_with_credentials_redacted(
    midge: Callable[..., Midge],  # noqa: F811
) -> None:
    pytest.importorskip("midge_debug")
    port = free_port()
    process = midge("--port", str(port), "--trace")
    process.wait_listening(port)
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        packet = Connect("tracer", 4, username="alice", password=b"hunter2-secret")
        sock.sendall(encode(packet, 4))
        sock.recv(65536)
    stderr = wait_for_text(process, '"tracer" -> CONNACK')
    assert process.stop() == 0
    stderr = process.stderr()
    assert '"tracer" <- CONNECT' in stderr
    assert "password=<redacted>" in stderr
    assert "hunter2" not in stderr
    assert '"tracer" -> CONNACK return_code=0' in stderr  # a v3.1.1 client: return code


# -- the pieces on their own ----------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def test_rate_limit_counts_and_reports_after_the_window() -> None:
    clock = Clock()
    handler = Collect()
    limit = RateLimit(burst=3, window=10, clock=clock).attach(handler)
    logger = logging.getLogger("midge.test-rate-limit")
    logger.propagate = False
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        for index in range(50):
            logger.warning("client %s: protocol error: %s", f'"c{index}"', "bad")
        logger.warning("another template")
        logger.error("errors always pass %d", 1)
        logger.error("errors always pass %d", 2)
        messages = [r.getMessage() for r in handler.records]
        assert messages[:3] == ['client "c0": protocol error: bad',
                                'client "c1": protocol error: bad',
                                'client "c2": protocol error: bad']
        assert messages[3:] == ["another template", "errors always pass 1",
                                "errors always pass 2"]
        clock.now = 9
        limit.tick()  # the window has not ended: nothing yet
        assert len(handler.records) == 6
        clock.now = 11
        limit.tick()  # it has: reported without waiting for another line
        messages = [r.getMessage() for r in handler.records]
        assert messages[-1] == ('47 similar messages suppressed in the last 10 s; the last: '
                                'client "c49": protocol error: bad')
        assert handler.records[-1].levelno == logging.WARNING
        logger.info("later")
        assert handler.records[-1].getMessage() == "later"
        # what -v and --trace ask for is shown whole: every client's INFO line passes
        before = len(handler.records)
        for index in range(50):
            logger.info("client %s connected", f'"c{index}"')
        assert [r.getMessage() for r in handler.records[before:]] == [
            f'client "c{index}" connected' for index in range(50)]
        # a new window: the template passes again
        logger.warning("client %s: protocol error: %s", '"again"', "bad")
        assert handler.records[-1].getMessage() == 'client "again": protocol error: bad'
        limit.flush_suppressed()
        assert "suppressed" not in handler.records[-1].getMessage()
    finally:
        logger.removeHandler(handler)


def test_json_formatter_fields() -> None:
    record = logging.LogRecord("midge.broker", logging.WARNING, __file__, 1,
                               "client %s: protocol error", ('"x"',), None)
    record.client_id = "x"
    record.listener = "tcp://127.0.0.1:1883"
    record.address = "127.0.0.1:5000"
    entry = json.loads(JsonFormatter().format(record))
    assert entry["message"] == 'client "x": protocol error'
    assert (entry["client_id"], entry["listener"], entry["address"]) == (
        "x", "tcp://127.0.0.1:1883", "127.0.0.1:5000")


# -- systemd -----------------------------------------------------------------------------------


@pytest.fixture
def notify_socket(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> socket.socket:
    path = str(tmp_path / "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(20)
    monkeypatch.setenv("NOTIFY_SOCKET", path)
    return sock


def notifications(sock: socket.socket) -> dict[str, str]:
    data = sock.recv(4096).decode()
    return dict(line.split("=", 1) for line in data.splitlines())


def test_systemd_notify_ready_reloading_stopping(
    midge: Callable[..., Midge], raw: Callable[[int, int], Raw],  # noqa: F811
    notify_socket: socket.socket,
) -> None:
    port = free_port()
    process = midge("--port", str(port))
    ready = notifications(notify_socket)
    assert ready["READY"] == "1"
    assert f"127.0.0.1:{port}" in ready["STATUS"]
    # READY=1 came once the listener was bound: it accepts at once, without waiting
    assert raw(port, 4).connect("after-ready").reason_code == 0
    process.proc.send_signal(signal.SIGHUP)
    reloading = notifications(notify_socket)
    assert reloading["RELOADING"] == "1" and int(reloading["MONOTONIC_USEC"]) > 0
    assert notifications(notify_socket)["READY"] == "1"
    process.proc.send_signal(signal.SIGTERM)
    assert notifications(notify_socket) == {"STOPPING": "1"}
    assert process.exit_status() == 0
    assert "Traceback" not in process.stderr()


def test_notifier_without_a_socket_does_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    notifier = Notifier()
    assert not notifier.enabled
    assert notifier.ready() is False


def test_notifier_to_a_missing_socket_warns_once(tmp_path: Path,
                                                 caplog: pytest.LogCaptureFixture) -> None:
    notifier = Notifier(str(tmp_path / "nobody.sock"))
    assert notifier.ready() is False
    assert notifier.stopping() is False
    assert len([r for r in caplog.records if "cannot notify systemd" in r.getMessage()]) == 1


def test_notifier_abstract_socket() -> None:
    name = f"midge-test-{time.monotonic_ns()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.settimeout(5)
        assert Notifier("@" + name).stopping()
        assert sock.recv(100) == b"STOPPING=1"
