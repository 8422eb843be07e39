"""MQTT 5 Request Problem Information (0: no Reason String or User Properties on packets
other than PUBLISH, CONNACK and DISCONNECT) and Request Response Information (answered
with the configured Response Information)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from midge import hookimpl
from midge.codec import (
    Auth,
    ConnAck,
    Connect,
    Property,
    PubAck,
    Publish,
)

Factory = Callable[..., Any]
REASON = Property.REASON_STRING
USER = Property.USER_PROPERTY
METHOD = Property.AUTHENTICATION_METHOD
NO_PROBLEM_INFO = {Property.REQUEST_PROBLEM_INFORMATION: 0}


class Chatty:
    """One-step enhanced authentication that answers with diagnostics."""

    @hookimpl
    def on_auth_packet(self, client: Any, packet: Auth) -> Auth | None:
        if packet.properties.get(METHOD) != "CHATTY":
            return None
        return Auth(0, {METHOD: "CHATTY", REASON: "welcome", USER: [("k", "v")]})

    @hookimpl
    def on_connect_authenticate(self, client: Any, packet: Connect) -> bool:
        return True


def _client(raw_factory: Factory, port: int, cid: str, props: dict[int, Any] | None = None
            ) -> Any:
    raw = raw_factory(port=port, level=5)
    connack = raw.connect(cid, 5, properties=props or {})
    assert isinstance(connack, ConnAck) and connack.reason_code == 0, connack
    raw.connack = connack
    return raw


def _answers(raw: Any) -> list[Any]:
    raw.send(Publish("text/t", b"\xff", 1, packet_id=1,
                     properties={Property.PAYLOAD_FORMAT_INDICATOR: 1}))
    raw.send(Auth(0x19, {METHOD: "CHATTY"}))
    out = [raw.recv(), raw.recv()]
    assert [type(p) for p in out] == [PubAck, Auth], out
    return out


def test_reason_strings_by_default(broker_factory: Factory, raw_factory: Factory) -> None:
    running = broker_factory(plugins=[("chatty", Chatty())])
    raw = _client(raw_factory, running.port, "talkative", {METHOD: "CHATTY"})
    assert raw.connack.properties[REASON] == "welcome"
    puback, auth = _answers(raw)
    assert puback.reason_code == 0x99 and puback.properties[REASON]
    assert auth.properties[REASON] == "welcome" and auth.properties[USER] == [("k", "v")]


def test_no_problem_information_when_the_client_says_0(
    broker_factory: Factory, raw_factory: Factory
) -> None:
    running = broker_factory(plugins=[("chatty", Chatty())])
    raw = _client(raw_factory, running.port, "quiet", {METHOD: "CHATTY", **NO_PROBLEM_INFO})
    assert raw.connack.properties[REASON] == "welcome"  # CONNACK may carry it
    puback, auth = _answers(raw)
    assert puback.reason_code == 0x99 and puback.properties == {}
    assert auth.reason_code == 0 and auth.properties == {METHOD: "CHATTY"}


def test_response_information_when_requested_and_configured(
    broker_factory: Factory, raw_factory: Factory, broker: Any
) -> None:
    request = {Property.REQUEST_RESPONSE_INFORMATION: 1}
    running = broker_factory(response_information="replies/")
    asked = _client(raw_factory, running.port, "asks", request)
    assert asked.connack.properties[Property.RESPONSE_INFORMATION] == "replies/"
    silent = _client(raw_factory, running.port, "does-not-ask")
    assert Property.RESPONSE_INFORMATION not in silent.connack.properties
    unconfigured = _client(raw_factory, broker.port, "asks-default", request)
    assert Property.RESPONSE_INFORMATION not in unconfigured.connack.properties
