"""The engine's CONNECT/AUTH flow and connection lifecycle, without sockets.

Bytes in, bytes out, the clock in the test's hands: deadlines are checked to the
fraction of a second, and async plugin decisions are told to the engine by the test.
"""

from __future__ import annotations

from typing import Any

import pytest
from engine_harness import Harness

from midge import Refuse, hookimpl
from midge.codec import (
    PROTOCOL_5,
    PROTOCOL_311,
    Auth,
    ConnAck,
    Connect,
    Disconnect,
    PingReq,
    PingResp,
    Property,
    Publish,
    ReasonCode,
    Will,
)
from midge.config import ListenerSettings
from midge.engine import Ask, State

CLOSED = ListenerSettings(host="127.0.0.1", port=0)


def test_connect_is_answered_in_the_call_that_read_it() -> None:
    harness = Harness()
    peer = harness.open()
    assert peer.send(Connect("a", PROTOCOL_5)) is None
    ack = peer.expect(ConnAck)
    assert ack.reason_code == 0 and not ack.session_present
    assert ack.properties[Property.RECEIVE_MAXIMUM] == 1024
    assert peer.conn.state is State.CONNECTED
    assert harness.engine.clients["a"] is peer.conn


@pytest.mark.parametrize(("level", "code"), [(PROTOCOL_311, 5), (PROTOCOL_5, 0x87)])
def test_no_authentication_decision_is_a_refusal(level: int, code: int) -> None:
    harness = Harness()
    peer = harness.open(listener=CLOSED, level=level)
    peer.send(Connect("anon", level), PingReq())
    ack = peer.expect(ConnAck)
    assert ack.reason_code == code
    assert peer.conn.state is State.CLOSING
    # the pipelined PINGREQ was not handled: a refused connection handles nothing more
    assert peer.received() == []
    assert "anon" not in harness.engine.clients


def test_v5_empty_client_id_is_assigned_even_without_clean_start() -> None:
    harness = Harness()
    peer = harness.client("", clean_start=False)
    assert peer.conn.client_id.startswith("midge")


def test_v311_empty_client_id_needs_a_clean_session() -> None:
    harness = Harness()
    peer = harness.open(level=PROTOCOL_311)
    peer.send(Connect("", PROTOCOL_311, clean_start=False))
    assert peer.expect(ConnAck).reason_code == 2


def test_packets_before_connack_are_a_protocol_violation_during_auth() -> None:
    class Challenge:
        @hookimpl
        def on_auth_packet(self, client: Any, packet: Auth) -> Auth:
            return Auth(ReasonCode.CONTINUE_AUTHENTICATION, {Property.AUTHENTICATION_DATA: b"?"})

    harness = Harness([("challenge", Challenge())])
    peer = harness.open()
    peer.send(Connect("a", PROTOCOL_5, properties={Property.AUTHENTICATION_METHOD: "X"}))
    assert peer.expect(Auth).reason_code == ReasonCode.CONTINUE_AUTHENTICATION
    assert peer.conn.state is State.CONNECTING
    peer.send(Publish("t", b"x"))
    ack = peer.expect(ConnAck)
    assert ack.reason_code == ReasonCode.PROTOCOL_ERROR
    assert peer.conn.closing


def test_an_auth_exchange_of_two_steps_then_success() -> None:
    class TwoStep:
        @hookimpl
        def on_auth_packet(self, client: Any, packet: Auth) -> Auth:
            data = packet.properties.get(Property.AUTHENTICATION_DATA)
            if data == b"hello":
                return Auth(ReasonCode.CONTINUE_AUTHENTICATION,
                            {Property.AUTHENTICATION_DATA: b"challenge"})
            if data == b"response":
                return Auth(ReasonCode.SUCCESS, {Property.AUTHENTICATION_DATA: b"welcome"})
            raise Refuse(ReasonCode.NOT_AUTHORIZED)

    harness = Harness([("two-step", TwoStep())])
    peer = harness.open()
    method = {Property.AUTHENTICATION_METHOD: "TWO"}
    peer.send(Connect("a", PROTOCOL_5,
                      properties={**method, Property.AUTHENTICATION_DATA: b"hello"}))
    challenge = peer.expect(Auth)
    assert challenge.properties[Property.AUTHENTICATION_DATA] == b"challenge"
    peer.send(Auth(ReasonCode.CONTINUE_AUTHENTICATION,
                   {**method, Property.AUTHENTICATION_DATA: b"response"}))
    ack = peer.expect(ConnAck)
    assert ack.reason_code == 0
    assert ack.properties[Property.AUTHENTICATION_DATA] == b"welcome"
    assert ack.properties[Property.AUTHENTICATION_METHOD] == "TWO"
    # re-authentication after CONNACK goes through the same hook
    peer.send(Auth(ReasonCode.REAUTHENTICATE,
                   {**method, Property.AUTHENTICATION_DATA: b"wrong"}))
    assert peer.expect(Disconnect).reason_code == ReasonCode.NOT_AUTHORIZED


def test_an_async_decision_stops_the_flow_until_it_is_told() -> None:
    class Slow:
        @hookimpl
        async def on_connect_authenticate(self, client: Any, packet: Connect) -> bool:
            return packet.username == "alice"

    harness = Harness([("slow", Slow())])
    peer = harness.open(listener=CLOSED)
    pending = peer.send(Connect("a", PROTOCOL_5, username="alice"), PingReq())
    assert isinstance(pending, Ask)
    assert peer.received() == []  # nothing answered while the plugin decides
    assert peer.conn.state is State.CONNECTING
    pending.awaitable.close()  # type: ignore[attr-defined]  # the test is the shell
    more = peer.conn.answer(pending, True, None)
    assert more is None
    # CONNACK, then the PINGREQ that waited behind the decision
    acks = peer.received()
    assert [type(p) for p in acks] == [ConnAck, PingResp]
    assert acks[0].reason_code == 0


def test_an_async_refusal_answers_connack_with_its_code() -> None:
    class Gate:
        @hookimpl
        async def on_connect(self, client: Any, packet: Connect) -> int | None:
            return None

    harness = Harness([("gate", Gate())])
    peer = harness.open()
    pending = peer.send(Connect("a", PROTOCOL_5))
    assert isinstance(pending, Ask)
    pending.awaitable.close()  # type: ignore[attr-defined]
    peer.conn.answer(pending, ReasonCode.BANNED, None)
    assert peer.expect(ConnAck).reason_code == ReasonCode.BANNED
    assert peer.conn.closing


def test_an_answer_for_a_connection_that_went_away_does_nothing() -> None:
    class Slow:
        @hookimpl
        async def on_connect_authenticate(self, client: Any, packet: Connect) -> bool:
            return True

    harness = Harness([("slow", Slow())])
    peer = harness.open(listener=CLOSED)
    pending = peer.send(Connect("gone", PROTOCOL_5))
    assert isinstance(pending, Ask)
    pending.awaitable.close()  # type: ignore[attr-defined]
    peer.conn.transport_lost("reset")
    assert peer.conn.answer(pending, True, None) is None
    assert "gone" not in harness.engine.clients
    assert "gone" not in harness.engine.sessions


@pytest.mark.parametrize("keepalive", [10, 60])
def test_keepalive_is_enforced_at_one_and_a_half_times(keepalive: int) -> None:
    harness = Harness()
    peer = harness.client("k", keepalive=keepalive)
    harness.tick(keepalive * 1.49)
    assert peer.conn.connected
    harness.tick(keepalive * 0.02)  # 1.51x
    assert peer.expect(Disconnect).reason_code == ReasonCode.KEEP_ALIVE_TIMEOUT
    assert peer.conn.closing


def test_any_packet_resets_the_keepalive() -> None:
    harness = Harness()
    peer = harness.client("k", keepalive=10)
    harness.tick(14)
    peer.send(PingReq())
    assert isinstance(peer.expect(PingResp), PingResp)
    harness.tick(14)
    assert peer.conn.connected
    harness.tick(1.1)
    assert peer.conn.closing


def test_connect_timeout_is_exact() -> None:
    harness = Harness(connect_timeout=5)
    peer = harness.open()
    harness.tick(4.99)
    assert not peer.conn.closing
    harness.tick(0.02)
    assert peer.conn.closing
    assert peer.received() == []  # no CONNACK for a client that never spoke


def test_takeover_disconnects_the_old_connection_with_0x8e() -> None:
    harness = Harness()
    old = harness.client("same", clean_start=False,
                         properties={Property.SESSION_EXPIRY_INTERVAL: 60})
    new = harness.open()
    new.send(Connect("same", PROTOCOL_5, clean_start=False,
                     properties={Property.SESSION_EXPIRY_INTERVAL: 60}))
    assert new.expect(ConnAck).session_present
    assert old.expect(Disconnect).reason_code == ReasonCode.SESSION_TAKEN_OVER
    assert harness.engine.clients["same"] is new.conn


def test_will_qos_above_the_maximum_is_refused_at_connect() -> None:
    harness = Harness(maximum_qos=1)
    peer = harness.open()
    peer.send(Connect("w", PROTOCOL_5, will=Will("w/t", b"bye", qos=2)))
    assert peer.expect(ConnAck).reason_code == ReasonCode.QOS_NOT_SUPPORTED
