"""``midge -c FILE`` with one listener of each type (tcp, tls with mutual TLS, ws, wss,
unix) serves MQTT on all of them at once; SIGHUP reloads the certificates; a certificate
that cannot be loaded stops the start with a message naming it."""

from __future__ import annotations

import shutil
import signal
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from conftest import Pki
from test_cli import Midge, free_port, midge  # noqa: F401 - the fixture
from transport_kit import Endpoint, paho_client


@pytest.fixture
def socket_dir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="midge-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def config_text(pki: Pki, ports: dict[str, int], sock: Path) -> str:
    return f"""
[[listeners]]
type = "tcp"
port = {ports["tcp"]}

[[listeners]]
name = "devices"
type = "tls"
port = {ports["tls"]}
certfile = "{pki.server_cert}"
keyfile = "{pki.server_key}"
cafile = "{pki.ca}"
require_certificate = true
use_identity_as_username = true

[[listeners]]
type = "ws"
port = {ports["ws"]}

[[listeners]]
type = "wss"
port = {ports["wss"]}
path = "/mqtt"
certfile = "{pki.server_cert}"
keyfile = "{pki.server_key}"

[[listeners]]
type = "unix"
path = "{sock}"
mode = 0o600

[plugins.auth_allow]
"""


def test_one_listener_of_each_type_at_once(midge: Callable[..., Midge], pki: Pki,  # noqa: F811
                                           tmp_path: Path, socket_dir: Path) -> None:
    ports = {kind: free_port() for kind in ("tcp", "tls", "ws", "wss")}
    sock = socket_dir / "midge.sock"
    config = tmp_path / "all.toml"
    config.write_text(config_text(pki, ports, sock))
    process = midge("-c", str(config), "-v")
    for port in ports.values():
        process.wait_listening(port)
    ends = [Endpoint(kind, "127.0.0.1", port, "/mqtt") for kind, port in ports.items()]
    ends.append(Endpoint("unix", str(sock), 0, str(sock)))
    clients = []
    for end in ends:
        keys = {"cert": pki.client_cert, "key": pki.client_key} if end.kind == "tls" else {}
        client = paho_client(end, pki, client_id=f"on-{end.kind}", **keys)
        client.subscribe("all/#", 1)
        clients.append(client)
    try:
        # each publishes once; every one receives all five
        for client, end in zip(clients, ends, strict=True):
            client.publish(f"all/{end.kind}", end.kind.encode(), 1)
        for client in clients:
            got = sorted(client.expect().payload.decode() for _ in ends)
            assert got == sorted(end.kind for end in ends)
        process.proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 5
        while process.stderr().count("certificates reloaded") < 2:
            assert time.monotonic() < deadline, process.stderr()
            time.sleep(0.05)
        # the connections made before the reload still carry traffic
        clients[0].publish("all/after", b"reload", 1)
        for client in clients:
            assert client.expect().payload == b"reload"
    finally:
        for client in clients:
            client.close()
    assert process.stop() == 0
    assert not sock.exists()
    stderr = process.stderr()
    assert "Traceback" not in stderr
    assert "listening on unix:" in stderr and "(tls devices" in stderr


def test_a_certificate_that_cannot_be_loaded_stops_the_start(
    midge: Callable[..., Midge], pki: Pki, tmp_path: Path,  # noqa: F811
) -> None:
    broken = tmp_path / "broken.pem"
    broken.write_text("-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n")
    config = tmp_path / "bad.toml"
    config.write_text(f"""
[[listeners]]
type = "tls"
port = {free_port()}
certfile = "{broken}"
keyfile = "{pki.server_key}"

[plugins.auth_allow]
""")
    process = midge("-c", str(config))
    assert process.exit_status() == 1
    stderr = process.stderr()
    assert "cannot start" in stderr and str(broken) in stderr, stderr
    assert "Traceback" not in stderr
