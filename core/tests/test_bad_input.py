"""Bad input over real loopback sockets: the specification's answer, one log line, no collateral.

Every case runs against a broker with a bystander: a paho subscriber to ``bystander/#``
connected before the case. After the case each test checks

1. what the misbehaving connection received before the broker closed it: for MQTT 5 a
   CONNACK with the reason code when the error came before CONNACK was sent, else a
   DISCONNECT with the reason code; for 3.1.1 nothing, or the CONNACK return code the
   specification prescribes;
2. that a message published after the case by a new client reaches the bystander, which
   was never disconnected;
3. that exactly one WARNING record was logged on the ``midge`` loggers, naming the client
   (its client id, or its address when no client id is known yet) and the problem.

Bad packets are written out byte by byte here, independently of the codec under test.
"""

from __future__ import annotations

import logging
import re
import socket
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as paho
import pytest

from midge.codec import ConnAck, Disconnect, PingReq, PingResp, Property, PubRec, Will

V311 = 4
V5 = 5
LEVELS = [pytest.param(V311, id="3.1.1"), pytest.param(V5, id="5.0")]
BYSTANDER_FILTER = "bystander/#"
WILL_TOPIC = "bystander/will"
#: a declared packet size far above any configured limit used here
DECLARED_200MB = 200 * 1024 * 1024
#: a generous configured limit that the 200 MB packet still exceeds
LARGE_LIMIT = 16 * 1024 * 1024


# -- bytes on the wire --------------------------------------------------------------------


def varint(value: int) -> bytes:
    """An MQTT variable byte integer."""
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def frame(byte0: int, *parts: bytes) -> bytes:
    """A control packet: first byte, remaining length, body."""
    body = b"".join(parts)
    return bytes((byte0,)) + varint(len(body)) + body


def string(text: str | bytes) -> bytes:
    """A length-prefixed string; bytes are sent as they are, valid UTF-8 or not."""
    raw = text.encode() if isinstance(text, str) else text
    return len(raw).to_bytes(2, "big") + raw


def props(*items: bytes) -> bytes:
    """A v5 property block from already encoded properties."""
    body = b"".join(items)
    return varint(len(body)) + body


def u32(value: int) -> bytes:
    return value.to_bytes(4, "big")


def publish(
    level: int, topic: str | bytes, payload: bytes = b"", *, byte0: int = 0x30,
    packet_id: int | None = None, properties: bytes = b"\x00",
) -> bytes:
    parts = [string(topic)]
    if packet_id is not None:
        parts.append(packet_id.to_bytes(2, "big"))
    if level == V5:
        parts.append(properties)
    parts.append(payload)
    return frame(byte0, *parts)


def subscribe(
    level: int, *filters: tuple[str | bytes, int], packet_id: int = 1, byte0: int = 0x82,
    properties: bytes = b"\x00",
) -> bytes:
    """A SUBSCRIBE; each filter comes with its raw options byte."""
    parts = [packet_id.to_bytes(2, "big")]
    if level == V5:
        parts.append(properties)
    for topic_filter, options in filters:
        parts.append(string(topic_filter) + bytes((options,)))
    return frame(byte0, *parts)


def connect(
    level: int, client_id: str | bytes, *, name: str | None = None, flags: int = 0x02,
    keepalive: int = 60, properties: bytes = b"\x00", rest: bytes = b"",
) -> bytes:
    """A CONNECT; ``rest`` is what follows the client id (will, user name, password)."""
    if name is None:
        name = "MQIsdp" if level == 3 else "MQTT"
    parts = [string(name), bytes((level, flags)), keepalive.to_bytes(2, "big")]
    if level == V5:
        parts.append(properties)
    parts.append(string(client_id))
    parts.append(rest)
    return frame(0x10, *parts)


def will_part(level: int, topic: str, payload: bytes, properties: bytes = b"\x00") -> bytes:
    return (properties if level == V5 else b"") + string(topic) + string(payload)


# -- the harness --------------------------------------------------------------------------


def summary(packets: list[Any]) -> list[tuple[str, int | None]]:
    """Packets as (type name, reason code or packet id) for compact comparisons."""
    out: list[tuple[str, int | None]] = []
    for packet in packets:
        if isinstance(packet, ConnAck | Disconnect):
            out.append((type(packet).__name__, packet.reason_code))
        elif isinstance(packet, PubRec):
            out.append(("PubRec", packet.packet_id))
        else:
            out.append((type(packet).__name__, None))
    return out


def answer(level: int, v5_code: int) -> list[tuple[str, int | None]]:
    """What a connected client gets for a protocol error: v5 DISCONNECT, 3.1.1 nothing."""
    return [("Disconnect", v5_code)] if level == V5 else []


def remote_of(raw: Any) -> str:
    """How the broker names a connection before it knows the client id."""
    host, port = raw.sock.getsockname()[:2]
    return f"{host}:{port}"


@dataclass
class Env:
    """A broker with a bystander subscriber, and helpers to misbehave against it."""

    port: int
    bystander: Any
    caplog: pytest.LogCaptureFixture
    make_client: Callable[..., Any]
    make_raw: Callable[..., Any]
    published: int = 0
    #: the CONNACK of the last ``connected`` client
    connack: ConnAck | None = None

    def raw(self, level: int = V311) -> Any:
        """A raw socket whose decoder reads the broker's packets at ``level``."""
        return self.make_raw(port=self.port, level=level)

    def connected(self, level: int, client_id: str, **kwargs: Any) -> Any:
        """A raw client past a successful CONNECT/CONNACK."""
        raw = self.raw(level)
        ack = raw.connect(client_id, level, **kwargs)
        assert isinstance(ack, ConnAck) and ack.reason_code == 0, ack
        self.connack = ack
        return raw

    def bystander_ok(self, will: bytes | None = None) -> None:
        """The bystander got the will (if any), then a message published after the case."""
        if will is not None:
            message = self.bystander.expect()
            assert (message.topic, message.payload) == (WILL_TOPIC, will)
        self.published += 1
        payload = f"after-{uuid.uuid4().hex}".encode()
        publisher = self.make_client(
            client_id=f"pub{self.published}", port=self.port, protocol=paho.MQTTv5
        )
        publisher.publish("bystander/after", payload, 1)
        message = self.bystander.expect()
        assert (message.topic, message.payload) == ("bystander/after", payload)
        assert self.bystander.paho.is_connected()
        assert self.bystander.disconnects.empty()

    def warnings(self) -> list[str]:
        return [
            record.getMessage()
            for record in self.caplog.records
            if record.name.startswith("midge") and record.levelno >= logging.WARNING
        ]

    def logged_once(self, who: str, reason: str) -> None:
        """Exactly one WARNING on the midge loggers, naming ``who`` and matching ``reason``."""
        messages = self.warnings()
        assert len(messages) == 1, messages
        assert who in messages[0], messages[0]
        assert re.search(reason, messages[0]), messages[0]

    def logged_nothing(self) -> None:
        assert self.warnings() == []


@pytest.fixture
def env(
    broker: Any, broker_factory: Callable[..., Any], client_factory: Callable[..., Any],
    raw_factory: Callable[..., Any], caplog: pytest.LogCaptureFixture,
) -> Callable[..., Env]:
    """``env(**limits)``: a broker (the default one without limits) with a bystander."""
    caplog.set_level(logging.INFO, logger="midge")

    def make(**limits: Any) -> Env:
        running = broker_factory(**limits) if limits else broker
        bystander = client_factory(client_id="bystand", port=running.port)
        bystander.subscribe(BYSTANDER_FILTER, 1)
        caplog.clear()
        return Env(running.port, bystander, caplog, client_factory, raw_factory)

    return make


def cid() -> str:
    return f"bad-{uuid.uuid4().hex[:8]}"


# -- protocol errors after CONNACK, both levels -------------------------------------------

AFTER_CONNECT = [
    pytest.param(lambda lv: b"\x30\xff\xff\xff\xff\x7f", 0x81, "longer than 4 bytes",
                 id="remaining-length-5-bytes"),
    pytest.param(lambda lv: b"\xc2\x00", 0x81, "reserved flags", id="reserved-flags-pingreq"),
    pytest.param(lambda lv: subscribe(lv, ("bad/#", 0), byte0=0x80), 0x81, "reserved flags",
                 id="reserved-flags-subscribe"),
    pytest.param(lambda lv: b"\x00\x00", 0x81, "type 0", id="packet-type-0"),
    pytest.param(lambda lv: publish(lv, "bad/q", byte0=0x36, packet_id=1), 0x81, "QoS 3",
                 id="publish-qos-3"),
    pytest.param(lambda lv: publish(lv, "bad/q", byte0=0x38), 0x81, "DUP", id="publish-qos-0-dup"),
    pytest.param(lambda lv: publish(lv, "bad/q", byte0=0x32, packet_id=0), 0x81,
                 "packet identifier 0", id="publish-packet-id-0"),
    pytest.param(lambda lv: subscribe(lv, ("bad/#", 1), packet_id=0), 0x81,
                 "packet identifier 0", id="subscribe-packet-id-0"),
    pytest.param(lambda lv: publish(lv, b"bad/\xff\xfe"), 0x81, "ill-formed UTF-8",
                 id="topic-ill-formed-utf8"),
    pytest.param(lambda lv: publish(lv, b"bad/\x00x"), 0x81, r"U\+0000", id="topic-u0000"),
    pytest.param(lambda lv: publish(lv, b"bad/\xed\xa0\x80"), 0x81, "ill-formed UTF-8",
                 id="topic-surrogate"),
    pytest.param(lambda lv: publish(lv, ""), 0x82, "empty", id="publish-empty-topic"),
    pytest.param(lambda lv: publish(lv, "bad/+/x"), 0x90, "wildcard", id="publish-topic-wildcard"),
    pytest.param(lambda lv: subscribe(lv, ("bad/x#", 0)), 0x8F, "wildcard",
                 id="subscribe-filter-invalid"),
    # malformed in 3.1.1 [MQTT-3.8.3-4], a Protocol Error in 5.0 (3.8.3.1)
    pytest.param(lambda lv: subscribe(lv, ("bad/#", 3)), 0x82, "QoS 3", id="subscribe-qos-3"),
    pytest.param(lambda lv: subscribe(lv), 0x82, "no topic filter", id="subscribe-empty"),
    pytest.param(lambda lv: frame(0xA2, b"\x00\x01", b"\x00" if lv == V5 else b""), 0x82,
                 "no topic filter", id="unsubscribe-empty"),
    pytest.param(lambda lv: connect(lv, "again"), 0x82, "second CONNECT", id="second-connect"),
    pytest.param(lambda lv: b"\x20\x02\x00\x00", 0x82, "CONNACK", id="connack-from-client"),
    pytest.param(lambda lv: b"\xc0\x01\x00", 0x81, "trailing", id="pingreq-with-payload"),
    # v5: no Authentication Method in CONNECT; 3.1.1: packet type 15 is reserved
    pytest.param(lambda lv: b"\xf0\x02\x19\x00", 0x82, "AUTH", id="auth-without-method"),
]


@pytest.mark.parametrize("level", LEVELS)
@pytest.mark.parametrize(("bad", "v5_code", "reason"), AFTER_CONNECT)
def test_protocol_error_after_connect(
    env: Callable[..., Env], level: int, bad: Callable[[int], bytes], v5_code: int, reason: str,
) -> None:
    e = env()
    client_id = cid()
    raw = e.connected(level, client_id)
    raw.send(bad(level))
    assert summary(raw.packets_until_close()) == answer(level, v5_code)
    e.bystander_ok()
    e.logged_once(client_id, reason)


# -- protocol errors after CONNACK, MQTT 5 only -------------------------------------------

V5_AFTER_CONNECT = [
    pytest.param(publish(V5, "bad/p", properties=props(b"\x01\x00", b"\x01\x01")), 0x82,
                 "more than once", id="duplicate-property"),
    pytest.param(publish(V5, "bad/p", properties=props(b"\x11" + u32(10))), 0x81,
                 "not allowed in PUBLISH", id="property-not-allowed-in-packet"),
    pytest.param(publish(V5, "bad/p", properties=props(b"\x7f\x00")), 0x81,
                 "unknown property", id="unknown-property"),
    pytest.param(publish(V5, "bad/p", properties=props(b"\x23\x00\x0b")), 0x94,
                 "alias", id="topic-alias-above-the-maximum"),
    pytest.param(publish(V5, "bad/p", properties=props(b"\x23\x00\x00")), 0x94,
                 "alias", id="topic-alias-0"),
    pytest.param(subscribe(V5, ("bad/#", 0x30)), 0x82, "retain handling",
                 id="retain-handling-3"),
    pytest.param(subscribe(V5, ("bad/#", 0x40)), 0x81, "reserved", id="subscribe-options-reserved"),
    pytest.param(subscribe(V5, ("bad/#", 0), properties=props(b"\x0b\x00")), 0x82,
                 "SUBSCRIPTION_IDENTIFIER", id="subscription-identifier-0"),
]


@pytest.mark.parametrize(("bad", "v5_code", "reason"), V5_AFTER_CONNECT)
def test_v5_protocol_error_after_connect(
    env: Callable[..., Env], bad: bytes, v5_code: int, reason: str,
) -> None:
    e = env()
    client_id = cid()
    raw = e.connected(V5, client_id)
    raw.send(bad)
    assert summary(raw.packets_until_close()) == [("Disconnect", v5_code)]
    e.bystander_ok()
    e.logged_once(client_id, reason)


def test_v5_disconnect_session_expiry_from_zero(env: Callable[..., Env]) -> None:
    """Not a valid DISCONNECT [MQTT-3.14.2-2]: answered 0x82, and the will is published."""
    e = env()
    client_id = cid()
    raw = e.connected(V5, client_id, will=Will(WILL_TOPIC, b"expiry-will"))
    raw.send(frame(0xE0, b"\x00", props(b"\x11" + u32(60))))
    assert summary(raw.packets_until_close()) == [("Disconnect", 0x82)]
    e.bystander_ok(will=b"expiry-will")
    e.logged_once(client_id, "session expiry")


def test_v5_receive_maximum_exceeded(env: Callable[..., Env]) -> None:
    """Three unreleased QoS 2 PUBLISHes against Receive Maximum 2: DISCONNECT 0x93."""
    e = env(receive_maximum=2)
    client_id = cid()
    raw = e.connected(V5, client_id)
    assert e.connack is not None and e.connack.properties[Property.RECEIVE_MAXIMUM] == 2
    raw.send(b"".join(publish(V5, "bad/rm", b"x", byte0=0x34, packet_id=n) for n in (1, 2, 3)))
    assert summary(raw.packets_until_close()) == [
        ("PubRec", 1), ("PubRec", 2), ("Disconnect", 0x93),
    ]
    e.bystander_ok()
    e.logged_once(client_id, "more than 2 QoS 2")


# -- size limits ----------------------------------------------------------------------------


@pytest.mark.parametrize("level", LEVELS)
def test_declared_200mb_packet_after_connect(env: Callable[..., Env], level: int) -> None:
    """Only the fixed header is sent: the limit is enforced before the body arrives.

    The limit is configured (16 MiB): the default, 268435455, is the protocol's own
    maximum, under which a 200 MB packet is legal.
    """
    e = env(max_packet_size=LARGE_LIMIT)
    client_id = cid()
    raw = e.connected(level, client_id)
    raw.send(b"\x30" + varint(DECLARED_200MB))
    assert summary(raw.packets_until_close()) == answer(level, 0x95)
    e.bystander_ok()
    e.logged_once(client_id, "exceeds the maximum packet size")


def test_declared_200mb_packet_before_connect(env: Callable[..., Env]) -> None:
    e = env(max_packet_size=LARGE_LIMIT)
    raw = e.raw()
    raw.send(b"\x10" + varint(DECLARED_200MB))
    assert raw.packets_until_close() == []
    e.bystander_ok()
    e.logged_once(remote_of(raw), "exceeds the maximum packet size")


@pytest.mark.parametrize("level", LEVELS)
def test_packet_above_configured_max_packet_size(env: Callable[..., Env], level: int) -> None:
    e = env(max_packet_size=1024)
    client_id = cid()
    raw = e.connected(level, client_id)
    if level == V5:
        assert e.connack is not None
        assert e.connack.properties[Property.MAXIMUM_PACKET_SIZE] == 1024
    raw.send(publish(level, "bad/big", b"x" * 2000))
    assert summary(raw.packets_until_close()) == answer(level, 0x95)
    e.bystander_ok()
    e.logged_once(client_id, "exceeds the maximum packet size 1024")


@pytest.mark.parametrize("level", LEVELS)
@pytest.mark.parametrize(
    ("bad", "v5_code"),
    [
        pytest.param(lambda lv: publish(lv, "bad/a/b/c"), 0x90, id="publish"),
        pytest.param(lambda lv: subscribe(lv, ("bad/a/b/c", 0)), 0x8F, id="subscribe"),
    ],
)
def test_topic_with_more_levels_than_max_topic_levels(
    env: Callable[..., Env], level: int, bad: Callable[[int], bytes], v5_code: int,
) -> None:
    e = env(max_topic_levels=3)
    client_id = cid()
    raw = e.connected(level, client_id)
    raw.send(bad(level))
    assert summary(raw.packets_until_close()) == answer(level, v5_code)
    e.bystander_ok()
    e.logged_once(client_id, "more than 3 levels")


# -- errors in CONNECT (before CONNACK) ---------------------------------------------------

BOTH = (V311, V5)
#: (levels, id, CONNECT bytes for a level, v5 CONNACK reason code, log reason)
CONNECT_ERRORS: list[tuple[tuple[int, ...], str, Callable[[int], bytes], int, str]] = [
    (BOTH, "connect-reserved-flag", lambda lv: connect(lv, "c-flag", flags=0x03), 0x81,
     "reserved flag"),
    (BOTH, "will-qos-3",
     lambda lv: connect(lv, "c-wq3", flags=0x1E, rest=will_part(lv, WILL_TOPIC, b"w")), 0x81,
     "will QoS is 3"),
    (BOTH, "will-retain-without-will", lambda lv: connect(lv, "c-wret", flags=0x22), 0x81,
     "without a will"),
    (BOTH, "will-topic-wildcard",
     lambda lv: connect(lv, "c-wtop", flags=0x06, rest=will_part(lv, "bystander/+", b"w")),
     0x90, "wildcard"),
    (BOTH, "client-id-overlong-utf8", lambda lv: connect(lv, b"c-\xc0\x80"), 0x81,
     "ill-formed UTF-8"),
    ((V311,), "password-without-user-name",
     lambda lv: connect(lv, "c-pw", flags=0x42, rest=string(b"pw")), 0x81,
     "password but no user name"),
    ((V5,), "duplicate-property-in-connect",
     lambda lv: connect(lv, "c-dup", properties=props(b"\x11" + u32(1), b"\x11" + u32(2))),
     0x82, "more than once"),
    ((V5,), "receive-maximum-0",
     lambda lv: connect(lv, "c-rm0", properties=props(b"\x21\x00\x00")), 0x82,
     "RECEIVE_MAXIMUM"),
    ((V5,), "property-not-allowed-in-connect",
     lambda lv: connect(lv, "c-alias", properties=props(b"\x23\x00\x01")), 0x81,
     "not allowed in CONNECT"),
    ((V5,), "property-not-allowed-in-will",
     lambda lv: connect(lv, "c-wprop", flags=0x06,
                        rest=will_part(lv, WILL_TOPIC, b"w", props(b"\x11" + u32(1)))),
     0x81, "not allowed in Will"),
]


def _connect_error_params() -> list[Any]:
    names = {V311: "3.1.1", V5: "5.0"}
    return [
        pytest.param(level, bad, code, reason, id=f"{name}-{names[level]}")
        for levels, name, bad, code, reason in CONNECT_ERRORS
        for level in levels
    ]


@pytest.mark.parametrize(("level", "bad", "v5_code", "reason"), _connect_error_params())
def test_error_in_connect(
    env: Callable[..., Env], level: int, bad: Callable[[int], bytes], v5_code: int, reason: str,
) -> None:
    """v5: CONNACK with the reason code; 3.1.1: close without CONNACK [MQTT-3.1.4-1]."""
    e = env()
    raw = e.raw(level)
    raw.send(bad(level))
    expected = [("ConnAck", v5_code)] if level == V5 else []
    assert summary(raw.packets_until_close()) == expected
    e.bystander_ok()
    e.logged_once(remote_of(raw), reason)


@pytest.mark.parametrize(("name", "level"), [("MQTT", 6), ("MQTT", 3), ("MQIsdp", 4)])
def test_unknown_protocol_level(env: Callable[..., Env], name: str, level: int) -> None:
    """CONNACK 0x01 in the 3.1.1 form [MQTT-3.1.2-2], then close."""
    e = env()
    raw = e.raw(V311)
    raw.send(connect(level, "c-level", name=name))
    assert summary(raw.packets_until_close()) == [("ConnAck", 0x01)]
    e.bystander_ok()
    e.logged_once(remote_of(raw), f"level {level}")


def test_unknown_protocol_name(env: Callable[..., Env]) -> None:
    """Not MQTT: the broker may reveal itself with CONNACK 0x01 [MQTT-3.1.2-1] and closes."""
    e = env()
    raw = e.raw(V311)
    raw.send(connect(V311, "c-name", name="MQTX"))
    assert summary(raw.packets_until_close()) in ([], [("ConnAck", 0x01)])
    e.bystander_ok()
    e.logged_once(remote_of(raw), "unknown protocol name 'MQTX'")


@pytest.mark.parametrize("level", LEVELS)
def test_client_id_longer_than_max_client_id_length(env: Callable[..., Env], level: int) -> None:
    e = env(max_client_id_length=8)
    raw = e.raw(level)
    raw.send(connect(level, "much-too-long-client-id"))
    # v5 0x85 Client Identifier not valid; 3.1.1 return code 2 Identifier rejected
    assert summary(raw.packets_until_close()) == [("ConnAck", 0x85 if level == V5 else 2)]
    e.bystander_ok()
    e.logged_once(remote_of(raw), "client id too long")


@pytest.mark.parametrize(("level", "flags"), [(V311, 0x00), (3, 0x02)])
def test_empty_client_id_refused(env: Callable[..., Env], level: int, flags: int) -> None:
    """3.1.1 without clean session [MQTT-3.1.3-8], and 3.1 always: return code 2."""
    e = env()
    raw = e.raw(V311)
    raw.send(connect(level, "", flags=flags))
    assert summary(raw.packets_until_close()) == [("ConnAck", 2)]
    e.bystander_ok()
    e.logged_once(remote_of(raw), "empty client id")


@pytest.mark.parametrize("level", LEVELS)
def test_keepalive_above_max_keepalive(env: Callable[..., Env], level: int) -> None:
    """v3 is closed without a CONNACK (no return code applies, [MQTT-3.2.2-6]); v5 is
    accepted and told Server Keep Alive."""
    e = env(max_keepalive=60)
    client_id = cid()
    raw = e.raw(level)
    raw.send(connect(level, client_id, keepalive=120))
    if level == V5:
        ack = raw.recv()
        assert isinstance(ack, ConnAck) and ack.reason_code == 0
        assert ack.properties[Property.SERVER_KEEP_ALIVE] == 60
        raw.send(PingReq())
        assert isinstance(raw.recv(), PingResp)
        e.bystander_ok()
        e.logged_nothing()
    else:
        assert summary(raw.packets_until_close()) == []
        e.bystander_ok()
        e.logged_once(client_id, "keepalive 120 s exceeds max_keepalive 60")


# -- before CONNECT -----------------------------------------------------------------------

BEFORE_CONNECT = [
    pytest.param(b"GET / HTTP/1.1\r\n\r\n", "first packet must be CONNECT", id="http-garbage"),
    pytest.param(publish(V311, "bad/early", b"x"), "first packet must be CONNECT",
                 id="publish-before-connect"),
    pytest.param(b"\x20\x02\x00\x00", "CONNACK", id="connack-before-connect"),
    pytest.param(b"\xc0\x00", "first packet must be CONNECT", id="pingreq-before-connect"),
]


@pytest.mark.parametrize(("bad", "reason"), BEFORE_CONNECT)
def test_bad_first_packet(env: Callable[..., Env], bad: bytes, reason: str) -> None:
    """The protocol level is unknown, so no answer can be given: close [MQTT-3.1.0-1]."""
    e = env()
    raw = e.raw()
    raw.send(bad)
    assert raw.packets_until_close() == []
    e.bystander_ok()
    e.logged_once(remote_of(raw), reason)


def test_close_immediately_after_tcp_connect(env: Callable[..., Env]) -> None:
    """A bare TCP open and close (a port probe, a load balancer health check).

    Deliberately not a WARNING: health checks do this every few seconds and would drown
    the log. The broker must simply stay healthy.
    """
    e = env()
    for _ in range(5):
        socket.create_connection(("127.0.0.1", e.port), timeout=5).close()
    e.bystander_ok()
    e.logged_nothing()


@pytest.mark.parametrize("level", LEVELS)
def test_connect_one_byte_at_a_time(env: Callable[..., Env], level: int) -> None:
    """Legal, just slow: CONNACK 0, a working connection, nothing logged."""
    e = env()
    raw = e.raw(level)
    raw.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    data = connect(level, cid())
    for index in range(len(data)):
        raw.send(data[index : index + 1])
        time.sleep(0.002)
    ack = raw.recv()
    assert isinstance(ack, ConnAck) and ack.reason_code == 0
    raw.send(PingReq())
    assert isinstance(raw.recv(), PingResp)
    e.bystander_ok()
    e.logged_nothing()


@pytest.mark.parametrize("level", LEVELS)
def test_close_in_the_middle_of_a_packet(env: Callable[..., Env], level: int) -> None:
    """An abnormal disconnect: the will is published and the truncation is logged."""
    e = env()
    client_id = cid()
    will = f"will-{level}".encode()
    raw = e.connected(level, client_id, will=Will(WILL_TOPIC, will))
    data = publish(level, "bad/half", b"y" * 100)
    raw.send(data[: len(data) // 2])
    raw.close()
    e.bystander_ok(will=will)
    e.logged_once(client_id, "middle of a packet")
