"""CONNECT and CONNACK over real sockets: return and reason codes, client ids, MQTT 3.1,
the CONNECT timeout, keepalive enforcement and session takeover."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest

from midge.codec import (
    ConnAck,
    Connect,
    Disconnect,
    PingReq,
    PingResp,
    Property,
    Publish,
    SubAck,
    Subscribe,
    Subscription,
    encode,
)

Factory = Callable[..., Any]


@pytest.mark.parametrize(
    ("anonymous", "connect", "code"),
    [
        (True, Connect("ok", 4), 0x00),
        (True, Connect("future", 6), 0x01),
        (True, Connect("", 4, clean_start=False), 0x02),
        (False, Connect("who", 4, username="nobody", password=b"x"), 0x04),
        (False, Connect("anon", 4), 0x05),
    ],
    ids=["accepted", "bad-version", "identifier-rejected", "bad-credentials", "not-authorized"],
)
def test_v3_connack_return_codes(
    broker_factory: Factory, raw_factory: Factory, anonymous: bool, connect: Connect, code: int
) -> None:
    running = broker_factory(allow_anonymous=anonymous)
    raw = raw_factory(port=running.port)
    raw.send(encode(connect, 4))
    connack = raw.recv()
    assert isinstance(connack, ConnAck)
    assert connack.reason_code == code
    assert not connack.session_present
    if code:
        assert raw.closed(), "a refused connection must be closed"


@pytest.mark.parametrize(
    ("anonymous", "connect", "code"),
    [
        (True, Connect("ok", 5), 0x00),
        # MQTT 5 assigns an id to an empty one whatever Clean Start says [MQTT-3.1.3-6]
        (True, Connect("", 5, clean_start=False), 0x00),
        (False, Connect("who", 5, username="nobody", password=b"x"), 0x86),
        (False, Connect("anon", 5), 0x87),
        (True, Connect("sasl", 5, properties={Property.AUTHENTICATION_METHOD: "SCRAM"}), 0x8C),
    ],
    ids=["success", "empty-id-without-clean-start", "bad-credentials", "not-authorized",
         "auth-method"],
)
def test_v5_connack_reason_codes(
    broker_factory: Factory, raw_factory: Factory, anonymous: bool, connect: Connect, code: int
) -> None:
    running = broker_factory(allow_anonymous=anonymous)
    raw = raw_factory(port=running.port, level=5)
    raw.send(connect, 5)
    connack = raw.recv()
    assert isinstance(connack, ConnAck)
    assert connack.reason_code == code
    if code:
        assert raw.closed(), "a refused connection must be closed"


@pytest.mark.parametrize("level", [4, 5])
def test_empty_client_id_with_clean_session_gets_generated_id(
    broker: Any, raw_factory: Factory, level: int
) -> None:
    first = raw_factory(level=level)
    second = raw_factory(level=level)
    acks = [first.connect("", level), second.connect("", level)]
    assert all(isinstance(ack, ConnAck) and ack.reason_code == 0 for ack in acks)
    ids = broker.call(lambda: sorted(broker.broker.engine.clients))
    assert len(ids) == 2 and all(ids), ids
    if level == 5:
        assigned = [ack.properties.get(Property.ASSIGNED_CLIENT_IDENTIFIER) for ack in acks]
        assert sorted(assigned) == ids
    else:
        assert all(Property.ASSIGNED_CLIENT_IDENTIFIER not in ack.properties for ack in acks)
    # the two generated ids are distinct, so both connections stay open
    for raw in (first, second):
        raw.send(PingReq())
        assert isinstance(raw.recv(), PingResp)


@pytest.mark.parametrize(("level", "code"), [(3, 0x02), (4, 0x02)])
def test_empty_client_id_without_clean_session_is_refused(
    raw_factory: Factory, level: int, code: int
) -> None:
    raw = raw_factory(level=level)
    connack = raw.connect("", level, clean_start=False)
    assert isinstance(connack, ConnAck)
    assert connack.reason_code == code
    assert raw.closed()


def test_v5_empty_client_id_without_clean_start_is_assigned_one(raw_factory: Factory) -> None:
    # unlike 3.1.1, MQTT 5 has the server assign an id whatever Clean Start says
    # [MQTT-3.1.3-6] [MQTT-3.1.3-7]
    raw = raw_factory(level=5)
    connack = raw.connect("", 5, clean_start=False)
    assert isinstance(connack, ConnAck)
    assert connack.reason_code == 0
    assert connack.properties[Property.ASSIGNED_CLIENT_IDENTIFIER].startswith("midge")


def test_mqtt31_mqisdp_client_can_publish_and_subscribe(raw_factory: Factory) -> None:
    raw = raw_factory(level=3)
    connect = Connect("old-timer", 3)
    assert encode(connect, 3)[2:10] == b"\x00\x06MQIsdp"
    raw.send(connect, 3)
    connack = raw.recv()
    assert isinstance(connack, ConnAck) and connack.reason_code == 0
    raw.send(Subscribe(1, [Subscription("v31/#", 1)]))
    assert raw.recv() == SubAck(1, [1])
    raw.send(Publish("v31/x", b"hello", 0))
    message = raw.recv()
    assert isinstance(message, Publish)
    assert (message.topic, message.payload) == ("v31/x", b"hello")


def test_connection_without_connect_is_closed_after_connect_timeout(
    broker_factory: Factory, raw_factory: Factory
) -> None:
    running = broker_factory(connect_timeout=1)
    raw = raw_factory(port=running.port)
    assert raw.packets_until_close(timeout=4) == []


@pytest.mark.parametrize("level", [4, 5])
def test_silent_client_is_closed_after_one_and_a_half_keepalives(
    raw_factory: Factory, level: int
) -> None:
    raw = raw_factory(level=level)
    connack = raw.connect("sleepy", level, keepalive=1)
    assert isinstance(connack, ConnAck) and connack.reason_code == 0
    packets = raw.packets_until_close(timeout=3.5)
    if level == 5:
        assert packets == [Disconnect(0x8D)]
    else:
        assert packets == []


def test_client_sending_pingreq_within_keepalive_stays_connected(raw_factory: Factory) -> None:
    raw = raw_factory()
    connack = raw.connect("pinger", keepalive=1)
    assert isinstance(connack, ConnAck) and connack.reason_code == 0
    deadline = time.monotonic() + 4  # well past 1.5 x keepalive
    pings = 0
    while time.monotonic() < deadline and pings < 20:
        time.sleep(0.5)
        raw.send(PingReq())
        assert isinstance(raw.recv(), PingResp)
        pings += 1
    assert pings >= 6
    assert not raw.closed(timeout=0.2)


def _persistent(level: int) -> dict[str, Any]:
    """Connect keyword arguments for a session that outlives its connection."""
    props = {Property.SESSION_EXPIRY_INTERVAL: 300} if level == 5 else {}
    return {"clean_start": False, "properties": props}


@pytest.mark.parametrize("level", [4, 5])
def test_session_takeover_closes_the_old_connection(
    broker: Any, raw_factory: Factory, level: int
) -> None:
    old = raw_factory(level=level)
    assert old.connect("twin", level, **_persistent(level)).reason_code == 0
    new = raw_factory(level=level)
    connack = new.connect("twin", level, **_persistent(level))
    assert isinstance(connack, ConnAck) and connack.reason_code == 0
    assert connack.session_present
    packets = old.packets_until_close()
    if level == 5:
        assert packets == [Disconnect(0x8E)]
    else:
        assert packets == []
    # the new connection owns the client id and keeps working
    new.send(PingReq())
    assert isinstance(new.recv(), PingResp)
    assert broker.call(lambda: len(broker.broker.engine.clients)) == 1


@pytest.mark.parametrize("level", [4, 5])
def test_taking_over_a_clean_session_does_not_resume_it(
    raw_factory: Factory, level: int
) -> None:
    old = raw_factory(level=level)
    assert old.connect("fleeting", level, clean_start=True).reason_code == 0
    old.send(Subscribe(1, [Subscription("fleeting/t", 0)]))
    assert isinstance(old.recv(), SubAck)
    new = raw_factory(level=level)
    connack = new.connect("fleeting", level, **_persistent(level))
    assert isinstance(connack, ConnAck) and connack.reason_code == 0
    # a clean session lasts as long as its network connection [MQTT-3.1.2-6]
    assert not connack.session_present
    assert old.closed()
    new.send(Publish("fleeting/t", b"stale subscription?", 0))
    new.send(PingReq())
    assert new.recv() == PingResp(), "the clean session's subscription was reused"
