"""Unix socket listeners: paho over the socket file, its mode, stale and live files,
and the file's removal at shutdown."""

from __future__ import annotations

import os
import shutil
import socket
import stat
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import anyio
import pytest
from conftest import RawClient, RunningBroker
from transport_kit import Endpoint, endpoints, listener, paho_client

from midge import Broker, Settings
from midge.codec import ConnAck


@pytest.fixture
def short_dir() -> Iterator[Path]:
    # socket paths are limited to about 107 bytes: pytest's tmp_path can be longer
    path = Path(tempfile.mkdtemp(prefix="midge-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_paho_over_a_unix_socket(settings_broker: Callable[..., RunningBroker],
                                 short_dir: Path, backend: str) -> None:
    path = str(short_dir / "mqtt.sock")
    broker = settings_broker([listener("unix", path=path), listener("tcp")], backend=backend)
    unix, tcp = endpoints(broker)
    assert unix == Endpoint("unix", path, 0, path)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o660
    local = paho_client(unix, client_id="local-service")
    remote = paho_client(tcp)
    try:
        local.subscribe("unix/#", 2)
        remote.publish("unix/in", b"to the local service", 2)
        assert local.expect().payload == b"to the local service"
        remote.subscribe("unix/out", 1)
        local.publish("unix/out", b"from the local service", 1)
        assert remote.expect().payload == b"from the local service"
        client = broker.call(broker.broker.client, "local-service")
        assert (client.remote_host, client.remote_port) == ("unix", 0)
        assert client.listener.label == f"unix:{path}"
    finally:
        local.close()
        remote.close()


def test_mode_is_applied(settings_broker: Callable[..., RunningBroker], short_dir: Path) -> None:
    path = str(short_dir / "private.sock")
    settings_broker([listener("unix", path=path, mode=0o600)])
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600


def test_a_stale_socket_file_is_replaced(settings_broker: Callable[..., RunningBroker],
                                         short_dir: Path) -> None:
    path = str(short_dir / "stale.sock")
    dead = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    dead.bind(path)  # bound, never listening, closed: what a killed broker leaves
    dead.close()
    assert stat.S_ISSOCK(os.lstat(path).st_mode)
    broker = settings_broker([listener("unix", path=path)])
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(path)
    raw = RawClient(0, sock=sock)
    assert raw.connect("after-stale") == ConnAck(0)
    raw.close()
    assert broker.broker.addresses == [(path, 0)]


def _start(settings: Settings) -> None:
    async def main() -> None:
        async with Broker(settings):
            pass

    anyio.run(main)


def test_a_live_socket_file_is_an_error(short_dir: Path) -> None:
    path = str(short_dir / "live.sock")
    live = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    live.bind(path)
    live.listen(1)
    try:
        with pytest.raises(OSError, match="in use by a running process"):
            _start(Settings(listeners=(listener("unix", path=path),)))
        assert os.path.exists(path)  # not taken from its owner
    finally:
        live.close()


def test_a_file_that_is_not_a_socket_is_an_error(short_dir: Path) -> None:
    path = short_dir / "file.sock"
    path.write_text("precious")
    with pytest.raises(OSError, match="exists and is not a socket"):
        _start(Settings(listeners=(listener("unix", path=str(path)),)))
    assert path.read_text() == "precious"


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_the_socket_file_is_removed_at_shutdown(short_dir: Path, backend: str) -> None:
    path = str(short_dir / "gone.sock")

    async def main() -> None:
        async with Broker(Settings(listeners=(listener("unix", path=path),))):
            assert os.path.exists(path)

    anyio.run(main, backend=backend)
    assert not os.path.exists(path)
