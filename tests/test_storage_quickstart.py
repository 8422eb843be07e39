"""The README quick start: ``midge`` without a config file keeps its state in midge.db
(in the working directory) when midge-storage-sqlite is installed; ``--no-storage``
keeps it in memory."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from storage_helpers import ROOT, Raw, Receiver, free_port, wait_port

from midge.codec import PubAck, Publish


def _midge(cwd: Path, *args: str) -> subprocess.Popen[bytes]:
    env = dict(os.environ, PYTHONPATH=str(ROOT / "core" / "src"))
    return subprocess.Popen([sys.executable, "-m", "midge", *args], cwd=cwd, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def test_midge_without_config_keeps_state_in_sqlite_across_kill_9(tmp_path: Path) -> None:
    pytest.importorskip("midge_storage_sqlite")
    port = free_port()
    proc = _midge(tmp_path, "--port", str(port))
    try:
        wait_port(port, proc=proc)
        sub = Raw(port)
        sub.connect("phone", False)
        sub.subscribe("home/#", 1)
        sub.close()
        pub = Raw(port)
        pub.connect("sensor", True)
        pub.send(Publish("home/door", b"open", 1, packet_id=1))
        assert pub.recv() == PubAck(1)
        pub.close()
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    assert (tmp_path / "midge.db").exists()
    proc = _midge(tmp_path, "--port", str(port))
    try:
        wait_port(port, proc=proc)
        receiver = Receiver()
        again = Raw(port)
        assert again.connect("phone", False).session_present
        receiver.drain(again, 1.0)
        again.close()
        assert receiver.got == [b"open"]
    finally:
        proc.terminate()
        assert proc.wait(10) == 0


def test_no_storage_keeps_state_in_memory(tmp_path: Path) -> None:
    port = free_port()
    proc = _midge(tmp_path, "--port", str(port), "--no-storage")
    try:
        wait_port(port, proc=proc)
    finally:
        proc.terminate()
        assert proc.wait(10) == 0
    assert not (tmp_path / "midge.db").exists()
