"""Server-initiated DISCONNECT from plugin code: ``broker.disconnect(client_id, code,
reason=..., server_reference=...)``; v5 clients get DISCONNECT with the code, v3 clients
are closed, wills follow the normal rules."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from midge import ReasonCode, hookimpl
from midge.codec import ConnAck, Disconnect, Property, Publish, Will

Factory = Callable[..., Any]


def _client(raw_factory: Factory, cid: str, level: int = 5, port: int | None = None,
            **kwargs: Any) -> Any:
    raw = raw_factory(port=port, level=level)
    connack = raw.connect(cid, level, **kwargs)
    assert isinstance(connack, ConnAck) and connack.reason_code == 0, connack
    return raw


def _disconnect(running: Any, client_id: str, *args: Any, **kwargs: Any) -> bool:
    return bool(running.call(functools.partial(running.broker.disconnect, client_id,
                                               *args, **kwargs)))


def test_administrative_action_by_default(broker: Any, raw_factory: Factory) -> None:
    raw = _client(raw_factory, "admin")
    assert _disconnect(broker, "admin")
    assert raw.packets_until_close() == [Disconnect(ReasonCode.ADMINISTRATIVE_ACTION)]
    assert not _disconnect(broker, "admin")  # gone
    assert not _disconnect(broker, "never-connected")


def test_reason_string_and_server_reference(broker: Any, raw_factory: Factory) -> None:
    raw = _client(raw_factory, "moved")
    assert _disconnect(broker, "moved", ReasonCode.USE_ANOTHER_SERVER,
                       reason="maintenance", server_reference="other:1883")
    assert raw.packets_until_close() == [Disconnect(ReasonCode.USE_ANOTHER_SERVER, {
        Property.REASON_STRING: "maintenance", Property.SERVER_REFERENCE: "other:1883",
    })]
    # a Server Reference only goes with 0x9C / 0x9D; no reason string when not asked for
    quiet = _client(raw_factory, "quiet", properties={Property.REQUEST_PROBLEM_INFORMATION: 0})
    assert _disconnect(broker, "quiet", ReasonCode.QUOTA_EXCEEDED, reason="too much",
                       server_reference="ignored:1883")
    assert quiet.packets_until_close() == [Disconnect(ReasonCode.QUOTA_EXCEEDED)]


def test_v3_client_is_closed_and_its_will_published(
    broker: Any, raw_factory: Factory, client_factory: Factory
) -> None:
    watcher = client_factory()
    watcher.subscribe("wills/#", 1)
    raw = _client(raw_factory, "v3-kicked", level=4, will=Will("wills/v3", b"bye", 1))
    assert _disconnect(broker, "v3-kicked", ReasonCode.SERVER_MOVED,
                       server_reference="elsewhere")
    assert raw.packets_until_close() == []
    message = watcher.expect()
    assert (message.topic, message.payload) == ("wills/v3", b"bye")


def test_a_plugin_disconnects_a_client_from_a_hook(
    broker_factory: Factory, raw_factory: Factory
) -> None:
    class Kicker:
        def __init__(self) -> None:
            self.broker: Any = None

        @hookimpl
        def on_started(self, broker: Any) -> None:
            self.broker = broker

        @hookimpl
        def on_published(self, client: Any, packet: Publish) -> None:
            if packet.topic == "kick/me":
                self.broker.disconnect(client.client_id, ReasonCode.NOT_AUTHORIZED,
                                       reason="no kicking")

    running = broker_factory(plugins=[("kicker", Kicker())])
    raw = _client(raw_factory, "kickee", port=running.port)
    raw.send(Publish("kick/me", b"x"))
    assert raw.packets_until_close() == [
        Disconnect(ReasonCode.NOT_AUTHORIZED, {Property.REASON_STRING: "no kicking"})
    ]
