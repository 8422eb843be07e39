"""auth_allow votes True for every connection and topic, and takes no settings."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from importlib.metadata import entry_points

import pytest
from midge_auth_allow import AllowPlugin

from midge import PluginConfigError
from midge.codec import Connect


@dataclass
class Client:
    client_id: str = "c1"
    username: str | None = None
    remote: str = "192.0.2.1:4000"
    remote_host: str = "192.0.2.1"


def test_allows_every_connection() -> None:
    plugin = AllowPlugin({})
    assert plugin.on_connect_authenticate(Client(), Connect(client_id="c1")) is True
    packet = Connect(client_id="c2", username="u", password=b"p")
    assert plugin.on_connect_authenticate(Client("c2", "u"), packet) is True


@pytest.mark.parametrize("topic", ["a/b", "#", "$SYS/broker/uptime", "+/x"])
@pytest.mark.parametrize("write", [False, True])
def test_allows_every_topic(topic: str, write: bool) -> None:
    assert AllowPlugin({}).on_acl_check(Client(), topic, write) is True


def test_rejects_settings() -> None:
    with pytest.raises(PluginConfigError) as exc:
        AllowPlugin({"anything": 1})
    assert exc.value.key == "anything"
    assert "takes no settings" in exc.value.message


def test_warns_that_the_broker_is_open(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        AllowPlugin({})
    assert any(r.levelno == logging.WARNING and "every client" in r.getMessage()
               for r in caplog.records)


def test_entry_point() -> None:
    (ep,) = [ep for ep in entry_points(group="midge.plugins") if ep.name == "auth_allow"]
    assert ep.load() is AllowPlugin
