"""examples/midge.toml and examples/ledger.yaml: valid, and they do what their comments say."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest

from midge import ReasonCode, Settings
from midge.config import load

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def settings() -> Settings:
    return load(ROOT / "examples" / "midge.toml")


@pytest.fixture
def broker(settings: Settings, midge_broker_factory: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    """The sample's plugins and limits on a free port, run from the repository root as the
    sample says."""
    pytest.importorskip("midge_auth_ledger")
    monkeypatch.chdir(ROOT)
    return midge_broker_factory(
        plugins=settings.plugins, **dataclasses.asdict(settings.broker)
    )


def test_the_sample_config_loads(settings: Settings) -> None:
    assert list(settings.plugins) == ["auth_ledger"]
    assert (ROOT / settings.plugins["auth_ledger"]["file"]).is_file()
    assert settings.broker.max_packet_size == 1048576
    [listener] = settings.listeners
    assert (listener.host, listener.port, listener.allow_anonymous) == ("127.0.0.1", 1883, False)


def test_users_in_the_ledger(broker: Any, midge_client: Any) -> None:
    assert midge_client(broker, username="admin", password="change-me").reason_code == 0
    assert midge_client(broker, username="alice", password="alice-secret").reason_code == 0
    refused = [
        midge_client(broker, protocol=5, check=False, **credentials).reason_code
        for credentials in (
            {"username": "alice", "password": "wrong"},
            {"username": "mallory", "password": "anything"},
            {},  # anonymous
        )
    ]
    assert all(code >= 0x80 for code in refused), refused


def test_sensors_share_a_secret_and_only_write_sensors(broker: Any, midge_client: Any) -> None:
    admin = midge_client(broker, username="admin", password="change-me")
    admin.subscribe("#")
    sensor = midge_client(broker, protocol=5, username="sensor-7", password="sensor-secret")
    assert sensor.publish("sensors/7/temp", "21.5", qos=1) == 0
    assert sensor.publish("home/alice/door", "open", qos=1) == ReasonCode.NOT_AUTHORIZED
    assert sensor.subscribe("commands/7", qos=1) == [1]
    assert sensor.subscribe("sensors/#", check=False) == [ReasonCode.NOT_AUTHORIZED]
    message = admin.expect()
    assert (message.topic, message.payload) == ("sensors/7/temp", b"21.5")
    admin.expect_none()


def test_alice_reads_sensors_and_owns_her_home(broker: Any, midge_client: Any) -> None:
    alice = midge_client(broker, protocol=5, username="alice", password="alice-secret")
    alice.subscribe("sensors/#")
    assert alice.publish("home/alice/lamp", "on", qos=1) < 0x80
    assert alice.publish("sensors/fake", "1", qos=1) == ReasonCode.NOT_AUTHORIZED
    assert alice.publish("public/chat", "hi", qos=1) < 0x80
    assert alice.subscribe("home/#", check=False) == [ReasonCode.NOT_AUTHORIZED]
