"""MQTT 5.0 enhanced authentication (sections 3.15, 4.12): a two-step token exchange
plugin, spoken to over raw sockets."""

from __future__ import annotations

from typing import Any

import pytest
from v5wire import (
    AUTH_CODES,
    Factory,
    closed_with,
    next_of,
    quiet,
    subscribe,
    v5,
)

from midge import Refuse, hookimpl
from midge.codec import (
    Auth,
    ConnAck,
    Connect,
    Disconnect,
    PingReq,
    PingResp,
    Property,
    Publish,
    ReasonCode,
)

METHOD = Property.AUTHENTICATION_METHOD
DATA = Property.AUTHENTICATION_DATA
TOKEN = "TOKEN"


class TokenAuth:
    """CONNECT data ``hello`` gets a challenge (AUTH 0x18); the answer ``good`` succeeds,
    anything else is refused. Re-authentication (AUTH 0x19) takes ``good`` at once."""

    def __init__(self, challenge_reason: str = "") -> None:
        self.challenge_reason = challenge_reason
        self.ok: set[Any] = set()

    @hookimpl
    def on_auth_packet(self, client: Any, packet: Auth) -> Auth | None:
        if packet.properties.get(METHOD) != TOKEN:
            return None
        data = packet.properties.get(DATA, b"")
        if data == b"hello":
            answer = {METHOD: TOKEN, DATA: b"challenge"}
            if self.challenge_reason:
                answer[Property.REASON_STRING] = self.challenge_reason
            return Auth(ReasonCode.CONTINUE_AUTHENTICATION, answer)
        if data == b"good":
            self.ok.add(client)
            return Auth(ReasonCode.SUCCESS, {METHOD: TOKEN})
        raise Refuse(ReasonCode.NOT_AUTHORIZED, "bad token")

    @hookimpl
    def on_connect_authenticate(self, client: Any, packet: Connect) -> bool | None:
        if packet.properties.get(METHOD) is None:
            return True  # plain clients are welcome too
        return True if client in self.ok else None

    @hookimpl
    def on_acl_check(self, client: Any, topic: str, write: bool) -> bool:
        return True


@pytest.fixture
def secured(broker_factory: Factory) -> Any:
    return broker_factory(allow_anonymous=False, plugins=[("token", TokenAuth())])


def _start(raw_factory: Factory, port: int, cid: str, data: bytes = b"hello",
           extra: dict[int, Any] | None = None) -> Any:
    raw = raw_factory(port=port, level=5)
    raw.decoder.protocol_level = 5
    raw.send(Connect(cid, 5, properties={METHOD: TOKEN, DATA: data, **(extra or {})}), 5)
    return raw


@pytest.mark.mqtt5("MQTT-4.12.0-2", "MQTT-4.12.0-5", "MQTT-3.15.2-1", "MQTT-3.2.0-1")
def test_a_challenge_and_a_good_answer_connect_with_the_same_method(
    secured: Any, raw_factory: Factory,
) -> None:
    raw = _start(raw_factory, secured.port, "tok-ok")
    challenge = next_of(raw, Auth)
    assert challenge.reason_code == ReasonCode.CONTINUE_AUTHENTICATION
    assert challenge.reason_code in AUTH_CODES and challenge.properties[METHOD] == TOKEN
    raw.send(Auth(ReasonCode.CONTINUE_AUTHENTICATION, {METHOD: TOKEN, DATA: b"good"}))
    connack = next_of(raw, ConnAck)
    assert connack.reason_code == 0 and connack.properties[METHOD] == TOKEN


@pytest.mark.mqtt5("MQTT-4.12.0-4", "MQTT-3.2.2-7", "MQTT-4.13.2-1")
def test_a_refused_answer_gets_a_failure_connack_and_a_close(secured: Any,
                                                             raw_factory: Factory) -> None:
    raw = _start(raw_factory, secured.port, "tok-bad")
    next_of(raw, Auth)
    raw.send(Auth(ReasonCode.CONTINUE_AUTHENTICATION, {METHOD: TOKEN, DATA: b"wrong"}))
    closed_with(raw, ReasonCode.NOT_AUTHORIZED, ConnAck)


@pytest.mark.mqtt5("MQTT-4.12.0-1")
def test_an_unknown_method_gets_0x8c_and_a_close(secured: Any, raw_factory: Factory) -> None:
    raw = raw_factory(port=secured.port, level=5)
    raw.send(Connect("tok-unknown", 5, properties={METHOD: "NOPE"}))
    closed_with(raw, ReasonCode.BAD_AUTHENTICATION_METHOD, ConnAck)


@pytest.mark.mqtt5("MQTT-4.12.0-6")
def test_without_a_method_no_auth_and_no_method_in_connack(secured: Any,
                                                           raw_factory: Factory) -> None:
    raw = v5(raw_factory, "tok-plain", port=secured.port)
    assert METHOD not in raw.connack.properties
    raw.send(PingReq())
    assert next_of(raw, PingResp) == PingResp()


@pytest.mark.mqtt5("MQTT-4.12.0-7")
def test_an_auth_without_a_method_in_connect_is_a_protocol_error(secured: Any,
                                                                 raw_factory: Factory) -> None:
    raw = v5(raw_factory, "tok-stray", port=secured.port)
    raw.send(Auth(ReasonCode.REAUTHENTICATE, {METHOD: TOKEN, DATA: b"good"}))
    closed_with(raw, ReasonCode.PROTOCOL_ERROR)


@pytest.mark.mqtt5("MQTT-4.12.0-3")
def test_a_client_answer_other_than_0x18_is_a_protocol_error(secured: Any,
                                                             raw_factory: Factory) -> None:
    raw = _start(raw_factory, secured.port, "tok-wrongcode")
    next_of(raw, Auth)
    raw.send(Auth(ReasonCode.REAUTHENTICATE, {METHOD: TOKEN, DATA: b"good"}))
    closed_with(raw, ReasonCode.PROTOCOL_ERROR, ConnAck)


@pytest.mark.mqtt5("MQTT-3.1.2-30", "MQTT-3.1.4-6")
def test_a_publish_during_the_exchange_is_refused_and_not_processed(
    secured: Any, raw_factory: Factory,
) -> None:
    watcher = v5(raw_factory, "tok-watch", port=secured.port)
    subscribe(watcher, "tok/#", 0)
    raw = _start(raw_factory, secured.port, "tok-early")
    next_of(raw, Auth)
    raw.send(Publish("tok/t", b"too early"))
    packets = raw.packets_until_close()
    assert [type(p) for p in packets] == [ConnAck] and packets[0].reason_code >= 0x80
    quiet(watcher)


@pytest.mark.mqtt5("MQTT-4.12.1-1", "MQTT-4.12.1-2")
def test_reauthentication_with_the_method_succeeds_and_a_failure_closes(
    secured: Any, raw_factory: Factory,
) -> None:
    raw = _start(raw_factory, secured.port, "tok-reauth", data=b"good")
    assert next_of(raw, ConnAck).reason_code == 0
    raw.send(Auth(ReasonCode.REAUTHENTICATE, {METHOD: TOKEN, DATA: b"good"}))
    again = next_of(raw, Auth)
    assert again.reason_code == ReasonCode.SUCCESS and again.properties[METHOD] == TOKEN
    raw.send(Auth(ReasonCode.REAUTHENTICATE, {METHOD: TOKEN, DATA: b"wrong"}))
    disconnect = closed_with(raw, ReasonCode.NOT_AUTHORIZED)
    assert isinstance(disconnect, Disconnect)


@pytest.mark.mqtt5("MQTT-4.12.1-1")
def test_reauthentication_with_another_method_is_a_protocol_error(
    secured: Any, raw_factory: Factory,
) -> None:
    raw = _start(raw_factory, secured.port, "tok-othermethod", data=b"good")
    assert next_of(raw, ConnAck).reason_code == 0
    raw.send(Auth(ReasonCode.REAUTHENTICATE, {METHOD: "OTHER", DATA: b"good"}))
    closed_with(raw, ReasonCode.PROTOCOL_ERROR)


@pytest.mark.mqtt5("MQTT-3.15.2-2", "MQTT-3.15.2-3")
def test_auth_leaves_out_a_reason_string_that_does_not_fit(broker_factory: Factory,
                                                           raw_factory: Factory) -> None:
    running = broker_factory(allow_anonymous=False,
                             plugins=[("token", TokenAuth("a long explanation " * 4))])
    raw = _start(raw_factory, running.port, "tok-small",
                 extra={Property.MAXIMUM_PACKET_SIZE: 40})
    challenge = next_of(raw, Auth)
    assert challenge.reason_code == ReasonCode.CONTINUE_AUTHENTICATION
    assert Property.REASON_STRING not in challenge.properties
