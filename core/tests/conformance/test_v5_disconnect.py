"""MQTT 5.0 DISCONNECT (section 3.14), PINGREQ (3.12) and the server closing connections
(4.13.2)."""

from __future__ import annotations

from typing import Any

import pytest
from v5wire import (
    DISCONNECT_CODES,
    Factory,
    closed_silently,
    closed_with,
    connect_bytes,
    expect_publish,
    frame,
    next_of,
    quiet,
    s,
    subscribe,
    v5,
)

from midge.codec import ConnAck, Disconnect, PingReq, PingResp, Property, ReasonCode, Will


@pytest.mark.mqtt5("MQTT-3.12.4-1")
def test_every_pingreq_gets_a_pingresp(raw_factory: Factory) -> None:
    raw = v5(raw_factory, "pinger")
    for _ in range(3):
        raw.send(PingReq())
    assert [next_of(raw, PingResp) for _ in range(3)] == [PingResp()] * 3


@pytest.mark.mqtt5("MQTT-3.14.0-1")
def test_errors_before_connack_get_a_connack_never_a_disconnect(raw_factory: Factory) -> None:
    malformed = raw_factory(level=5)
    malformed.send(connect_bytes(b"pre", flags=0x01))
    packets = malformed.packets_until_close()
    assert [type(p) for p in packets] == [ConnAck], packets
    early = raw_factory(level=5)
    early.send(frame(0x30, s("pre/t"), b"\x00", b"x"))
    closed_silently(early)


@pytest.mark.mqtt5("MQTT-3.14.2-1", "MQTT-3.14.2-2", "MQTT-3.14.4-1", "MQTT-3.14.4-2",
                   "MQTT-4.13.2-1")
@pytest.mark.parametrize("code", [ReasonCode.ADMINISTRATIVE_ACTION, ReasonCode.SERVER_BUSY,
                                  ReasonCode.USE_ANOTHER_SERVER])
def test_a_server_disconnect_uses_a_defined_code_without_session_expiry_and_closes(
    broker: Any, raw_factory: Factory, code: int
) -> None:
    raw = v5(raw_factory, "kicked", expiry=300)
    assert broker.call(lambda: broker.broker.disconnect("kicked", code, reason="bye",
                                                        server_reference="other:1883"))
    packets = raw.packets_until_close()
    assert len(packets) == 1 and isinstance(packets[0], Disconnect), packets
    disconnect = packets[0]
    assert disconnect.reason_code == code and code in DISCONNECT_CODES
    assert Property.SESSION_EXPIRY_INTERVAL not in disconnect.properties


@pytest.mark.mqtt5("MQTT-3.14.2-2", "MQTT-3.14.4-1", "MQTT-3.14.4-2")
def test_a_protocol_error_disconnect_is_the_last_packet(raw_factory: Factory) -> None:
    raw = v5(raw_factory, "lastpacket", expiry=300)
    raw.send(frame(0x30, s("lp/+"), b"\x00", b"x") + b"\xc0\x00")
    packets = raw.packets_until_close()
    assert packets[-1].reason_code == ReasonCode.TOPIC_NAME_INVALID, packets
    assert Property.SESSION_EXPIRY_INTERVAL not in packets[-1].properties
    assert not any(isinstance(p, PingResp) for p in packets), packets


@pytest.mark.mqtt5("MQTT-3.14.2-3", "MQTT-3.14.2-4")
def test_a_server_disconnect_leaves_out_a_reason_string_that_does_not_fit(
    broker: Any, raw_factory: Factory,
) -> None:
    raw = v5(raw_factory, "kicked-small", maximum_packet_size=8)
    broker.call(lambda: broker.broker.disconnect("kicked-small", ReasonCode.ADMINISTRATIVE_ACTION,
                                                 reason="a reason far longer than 8 bytes"))
    raw.sock.settimeout(3)
    data = b""
    while chunk := raw.sock.recv(1024):
        data += chunk
    assert data and len(data) <= 8, data


@pytest.mark.mqtt5("MQTT-3.14.4-3")
def test_disconnect_0x04_keeps_the_will_and_0x00_discards_it(raw_factory: Factory) -> None:
    watcher = v5(raw_factory, "dw-watch")
    subscribe(watcher, "dw/#", 0)
    normal = v5(raw_factory, "dw-normal", will=Will("dw/normal", b"n"))
    normal.send(Disconnect(ReasonCode.NORMAL_DISCONNECTION))
    normal.packets_until_close()
    with_will = v5(raw_factory, "dw-will", will=Will("dw/will", b"w"))
    with_will.send(Disconnect(ReasonCode.DISCONNECT_WITH_WILL))
    with_will.packets_until_close()
    assert expect_publish(watcher).topic == "dw/will"
    quiet(watcher)


@pytest.mark.mqtt5("MQTT-3.14.2-1")
def test_a_keepalive_timeout_disconnect_uses_0x8d(raw_factory: Factory) -> None:
    raw = v5(raw_factory, "ka-code", keepalive=1)
    closed_with(raw, ReasonCode.KEEP_ALIVE_TIMEOUT, timeout=4)
