"""Connection and packet hooks over real sockets: on_connect, on_connect_authenticate,
on_session_establish(ed), on_disconnect, on_will, on_will_sent, on_auth_packet,
on_packet_read, on_packet_encode, on_packet_sent and on_packet_processed."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from typing import Any

import anyio
import paho.mqtt.client as paho
import pytest
from conftest import Events

from midge import Refuse, hookimpl
from midge.codec import (
    Auth,
    ConnAck,
    Connect,
    Packet,
    PingReq,
    PingResp,
    Property,
    PubAck,
    Publish,
    ReasonCode,
    SubAck,
    Subscribe,
    Subscription,
    Will,
    encode,
)

Factory = Callable[..., Any]
LEVELS = pytest.mark.parametrize("level", [4, 5], ids=["v311", "v5"])


# -- on_connect ----------------------------------------------------------------------------


def test_on_connect_fires_with_the_client_and_the_connect_packet(
    broker_factory: Factory, raw_factory: Factory
) -> None:
    events = Events()

    class Watch:
        @hookimpl
        def on_connect(self, client: Any, packet: Connect) -> None:
            events.add("on_connect", client.remote_host, client.client_id, packet)

    running = broker_factory(plugins=[("watch", Watch())])
    raw = raw_factory(port=running.port, level=5)
    connack = raw.connect("hello", 5, keepalive=30, username="u", password=b"p")
    assert isinstance(connack, ConnAck) and connack.reason_code == 0
    [(host, cid, packet)] = events.wait("on_connect")
    assert host == "127.0.0.1" and cid == "hello"
    assert (packet.client_id, packet.protocol_level, packet.keepalive, packet.username,
            packet.password) == ("hello", 5, 30, "u", b"p")


@pytest.mark.parametrize(("level", "expected"), [(5, 0x8A), (4, 5)], ids=["v5", "v311"])
def test_on_connect_refuse_gives_the_connack_code(
    broker_factory: Factory, raw_factory: Factory, level: int, expected: int
) -> None:
    class Banned:
        @hookimpl
        def on_connect(self, client: Any, packet: Connect) -> None:
            if packet.client_id == "banned":
                raise Refuse(ReasonCode.BANNED)

    running = broker_factory(plugins=[("banned", Banned())])
    raw = raw_factory(port=running.port, level=level)
    assert raw.connect("banned", level) == ConnAck(expected)
    assert raw.closed()
    ok = raw_factory(port=running.port, level=level)
    assert ok.connect("welcome", level).reason_code == 0


def test_on_connect_returning_a_reason_code_refuses(
    broker_factory: Factory, raw_factory: Factory
) -> None:
    class Busy:
        @hookimpl
        def on_connect(self, client: Any, packet: Connect) -> int:
            return ReasonCode.SERVER_BUSY

    running = broker_factory(plugins=[("busy", Busy())])
    raw = raw_factory(port=running.port, level=5)
    assert raw.connect("c", 5) == ConnAck(ReasonCode.SERVER_BUSY)


def test_on_connect_other_exception_refuses_with_0x80_and_is_logged(
    broker_factory: Factory, raw_factory: Factory, caplog: pytest.LogCaptureFixture
) -> None:
    class Broken:
        @hookimpl
        def on_connect(self, client: Any, packet: Connect) -> None:
            raise RuntimeError("oops")

    running = broker_factory(plugins=[("broken", Broken())])
    raw = raw_factory(port=running.port, level=5)
    with caplog.at_level(logging.ERROR, logger="midge.plugins"):
        assert raw.connect("c", 5) == ConnAck(0x80)
    assert any("broken" in r.getMessage() and "on_connect" in r.getMessage()
               for r in caplog.records)


def test_async_on_connect_is_awaited_before_connack(
    broker_factory: Factory, raw_factory: Factory
) -> None:
    events = Events()

    class SlowCheck:
        @hookimpl
        async def on_connect(self, client: Any, packet: Connect) -> None:
            await anyio.sleep(0.2)
            events.add("checked")
            if packet.client_id == "late-refusal":
                raise Refuse(ReasonCode.QUOTA_EXCEEDED)

    running = broker_factory(plugins=[("slow", SlowCheck())])
    raw = raw_factory(port=running.port, level=5)
    assert raw.connect("fine", 5).reason_code == 0
    assert len(events.of("checked")) == 1  # done before CONNACK was sent
    refused = raw_factory(port=running.port, level=5)
    assert refused.connect("late-refusal", 5) == ConnAck(ReasonCode.QUOTA_EXCEEDED)


# -- on_connect_authenticate ---------------------------------------------------------------


class Passwords:
    """Allows ``user``/``secret``, denies other users, abstains for anonymous clients."""

    def __init__(self, events: Events) -> None:
        self.events = events

    @hookimpl
    def on_connect_authenticate(self, client: Any, packet: Connect) -> bool | None:
        self.events.add("on_connect_authenticate", client.client_id, packet.username,
                        packet.password)
        if packet.username is None:
            return None
        return packet.username == "user" and packet.password == b"secret"


@pytest.mark.parametrize(("level", "bad_password", "anonymous"),
                         [(5, 0x86, 0x87), (4, 4, 5)], ids=["v5", "v311"])
def test_on_connect_authenticate_votes_on_credentials(
    broker_factory: Factory, raw_factory: Factory, level: int, bad_password: int,
    anonymous: int
) -> None:
    events = Events()
    running = broker_factory(allow_anonymous=False, plugins=[("pw", Passwords(events))])
    good = raw_factory(port=running.port, level=level)
    assert good.connect("good", level, username="user", password=b"secret").reason_code == 0
    bad = raw_factory(port=running.port, level=level)
    assert bad.connect("bad", level, username="user", password=b"wrong") == ConnAck(bad_password)
    anon = raw_factory(port=running.port, level=level)
    # no decision (the plugin abstains, the listener is not anonymous) denies
    assert anon.connect("anon", level) == ConnAck(anonymous)
    assert events.of("on_connect_authenticate") == [
        ("good", "user", b"secret"), ("bad", "user", b"wrong"), ("anon", None, None)]


def test_async_on_connect_authenticate_is_awaited_before_connack(
    broker_factory: Factory, raw_factory: Factory
) -> None:
    events = Events()

    class SlowHash:
        @hookimpl
        async def on_connect_authenticate(self, client: Any, packet: Connect) -> bool:
            await anyio.to_thread.run_sync(lambda: None)
            await anyio.sleep(0.2)
            events.add("hashed", packet.username)
            return packet.password == b"right"

    running = broker_factory(allow_anonymous=False, plugins=[("slow", SlowHash())])
    raw = raw_factory(port=running.port, level=5)
    assert raw.connect("a", 5, username="u", password=b"right").reason_code == 0
    assert events.of("hashed") == [("u",)]
    denied = raw_factory(port=running.port, level=5)
    assert denied.connect("b", 5, username="u", password=b"wrong") == ConnAck(0x86)


# -- sessions and disconnects --------------------------------------------------------------


class SessionWatch:
    def __init__(self, events: Events) -> None:
        self.events = events

    @hookimpl
    def on_session_establish(self, client: Any, packet: Connect) -> None:
        self.events.add("on_session_establish", client.client_id, client.session, packet)

    @hookimpl
    def on_session_established(self, client: Any, packet: Connect) -> None:
        self.events.add("on_session_established", client.client_id, client.session,
                        client.connected, packet)

    @hookimpl
    def on_disconnect(self, client: Any, error: str | None, expire: bool) -> None:
        self.events.add("on_disconnect", client.client_id, error, expire)


def test_session_hooks_fire_around_session_creation(
    broker_factory: Factory, raw_factory: Factory
) -> None:
    events = Events()
    running = broker_factory(plugins=[("s", SessionWatch(events))])
    raw = raw_factory(port=running.port)
    raw.connect("sess")
    [(cid, session, packet)] = events.wait("on_session_establish")
    assert (cid, session, packet.client_id) == ("sess", None, "sess")  # not yet created
    [(cid, session, connected, packet)] = events.wait("on_session_established")
    assert cid == "sess" and session is not None and connected
    assert session.client_id == "sess" and packet.client_id == "sess"


def test_session_hooks_do_not_fire_for_a_refused_client(
    broker_factory: Factory, raw_factory: Factory
) -> None:
    events = Events()
    running = broker_factory(allow_anonymous=False, plugins=[("s", SessionWatch(events))])
    raw = raw_factory(port=running.port)
    assert raw.connect("nope") == ConnAck(5)
    assert raw.closed()
    events.none("on_session_establish")
    assert events.of("on_session_established") == events.of("on_disconnect") == []


@LEVELS
def test_on_disconnect_after_a_normal_disconnect(
    broker_factory: Factory, client_factory: Factory, level: int
) -> None:
    events = Events()
    running = broker_factory(plugins=[("s", SessionWatch(events))])
    protocol = paho.MQTTv5 if level == 5 else paho.MQTTv311
    client = client_factory("polite", protocol=protocol, port=running.port)
    client.close()
    assert events.wait("on_disconnect") == [("polite", None, True)]


def test_on_disconnect_after_a_lost_connection_of_a_persistent_session(
    broker_factory: Factory, raw_factory: Factory
) -> None:
    events = Events()
    running = broker_factory(plugins=[("s", SessionWatch(events))])
    raw = raw_factory(port=running.port, level=5)
    raw.connect("lost", 5, clean_start=False,
                properties={Property.SESSION_EXPIRY_INTERVAL: 60})
    raw.close()
    [(cid, error, expire)] = events.wait("on_disconnect")
    assert cid == "lost" and error == "connection closed by the client" and expire is False


def test_async_on_disconnect_runs_for_connections_closed_by_shutdown(
    broker_factory: Factory, raw_factory: Factory
) -> None:
    events = Events()

    class Flush:
        @hookimpl
        async def on_disconnect(self, client: Any, error: str | None, expire: bool) -> None:
            await anyio.sleep(0)
            events.add("on_disconnect", client.client_id)

    running = broker_factory(plugins=[("flush", Flush())])
    raw = raw_factory(port=running.port)
    raw.connect("at-shutdown")
    running.call(running.broker.shutdown)
    assert raw.closed()
    assert events.wait("on_disconnect") == [("at-shutdown",)]


# -- wills ---------------------------------------------------------------------------------


class WillWatch:
    def __init__(self, events: Events) -> None:
        self.events = events

    @hookimpl
    def on_will(self, client: Any, will: Will) -> Will:
        self.events.add("on_will", client.client_id, will)
        return dataclasses.replace(will, payload=will.payload + b" (edited)")

    @hookimpl
    def on_will_sent(self, client: Any, will: Will) -> None:
        self.events.add("on_will_sent", client.client_id, will)


def test_on_will_can_change_the_will_and_on_will_sent_sees_the_result(
    broker_factory: Factory, raw_factory: Factory, client_factory: Factory
) -> None:
    events = Events()
    running = broker_factory(plugins=[("w", WillWatch(events))])
    watcher = client_factory(port=running.port)
    watcher.subscribe("will/#", 1)
    raw = raw_factory(port=running.port)
    raw.connect("dying", will=Will("will/t", b"gone", 1))
    raw.close()
    message = watcher.expect()
    assert (message.topic, message.payload) == ("will/t", b"gone (edited)")
    [(cid, will)] = events.wait("on_will")
    assert cid == "dying" and (will.topic, will.payload, will.qos) == ("will/t", b"gone", 1)
    [(cid, sent)] = events.wait("on_will_sent")
    assert cid == "dying" and sent.payload == b"gone (edited)"


def test_no_will_hooks_after_a_normal_disconnect(
    broker_factory: Factory, client_factory: Factory
) -> None:
    events = Events()
    running = broker_factory(plugins=[("w", WillWatch(events)),
                                      ("s", SessionWatch(events))])
    client = client_factory("tidy", port=running.port, will=("will/t", b"unused", 1))
    client.close()
    events.wait("on_disconnect")
    events.none("on_will")
    assert events.of("on_will_sent") == []


# -- enhanced authentication ---------------------------------------------------------------


def test_on_auth_packet_answers_an_auth_exchange(
    broker_factory: Factory, raw_factory: Factory
) -> None:
    events = Events()

    class Challenge:
        @hookimpl
        def on_connect_authenticate(self, client: Any, packet: Connect) -> bool:
            return True

        @hookimpl
        def on_auth_packet(self, client: Any, packet: Auth) -> Auth:
            events.add("on_auth_packet", client.client_id, packet)
            return Auth(0, {Property.AUTHENTICATION_METHOD: "TEST"})

    running = broker_factory(plugins=[("auth", Challenge())])
    raw = raw_factory(port=running.port, level=5)
    connack = raw.connect("reauth", 5, properties={Property.AUTHENTICATION_METHOD: "TEST"})
    assert connack.reason_code == 0, connack
    assert connack.properties[Property.AUTHENTICATION_METHOD] == "TEST"
    # the CONNECT's method and data reached the hook as AUTH 0x18 (continue)
    [(cid, packet)] = events.wait("on_auth_packet")
    assert cid == "reauth" and packet == Auth(0x18, {Property.AUTHENTICATION_METHOD: "TEST"})
    raw.send(Auth(0x19, {Property.AUTHENTICATION_METHOD: "TEST"}))  # re-authenticate
    assert raw.recv() == Auth(0, {Property.AUTHENTICATION_METHOD: "TEST"})
    (cid, packet) = events.wait("on_auth_packet", 2)[1]
    assert cid == "reauth" and packet.reason_code == 0x19


# -- packets -------------------------------------------------------------------------------


class PacketFilter:
    """Drops PUBLISHes to drop/#, renames the topic old/t to new/t, records the rest."""

    def __init__(self, events: Events) -> None:
        self.events = events

    @hookimpl
    def on_packet_read(self, client: Any, packet: Packet) -> Packet | None:
        from midge import DropPacket

        self.events.add("on_packet_read", client.client_id, packet)
        if isinstance(packet, Publish):
            if packet.topic.startswith("drop/"):
                raise DropPacket
            if packet.topic == "old/t":
                return dataclasses.replace(packet, topic="new/t")
        return None


def test_on_packet_read_sees_every_packet_including_connect(
    broker_factory: Factory, raw_factory: Factory
) -> None:
    events = Events()
    running = broker_factory(plugins=[("f", PacketFilter(events))])
    raw = raw_factory(port=running.port)
    raw.connect("reader")
    raw.send(PingReq())
    assert raw.recv() == PingResp()
    read = events.wait("on_packet_read", count=2)
    assert isinstance(read[0][1], Connect) and read[0][1].client_id == "reader"
    assert read[1] == ("reader", PingReq())


def test_on_packet_read_drop_packet_ignores_it_without_disconnecting(
    broker_factory: Factory, raw_factory: Factory, client_factory: Factory
) -> None:
    events = Events()
    running = broker_factory(plugins=[("f", PacketFilter(events))])
    watcher = client_factory(port=running.port)
    watcher.subscribe("#", 1)
    raw = raw_factory(port=running.port)
    raw.connect("dropper")
    raw.send(Publish("drop/me", b"x", 1, packet_id=1))
    raw.send(PingReq())
    assert raw.recv() == PingResp()  # no PUBACK: the PUBLISH was never handled
    raw.send(Publish("old/t", b"renamed", 1, packet_id=2))
    assert raw.recv() == PubAck(2)
    message = watcher.expect()
    assert (message.topic, message.payload) == ("new/t", b"renamed")
    watcher.expect_none()


class Outbound:
    """Rewrites outgoing PUBLISH payloads and records every packet sent."""

    def __init__(self, events: Events) -> None:
        self.events = events

    @hookimpl
    def on_packet_encode(self, client: Any, packet: Packet) -> Packet | None:
        self.events.add("on_packet_encode", client.client_id, packet)
        if isinstance(packet, Publish):
            return dataclasses.replace(packet, payload=packet.payload.upper())
        return None

    @hookimpl
    def on_packet_sent(self, client: Any, packet: Packet, data: bytes) -> None:
        self.events.add("on_packet_sent", client.client_id, packet, data)

    @hookimpl
    def on_packet_processed(self, client: Any, packet: Packet, error: str | None) -> None:
        self.events.add("on_packet_processed", client.client_id, packet, error)


@LEVELS
def test_on_packet_encode_can_change_outgoing_packets(
    broker_factory: Factory, raw_factory: Factory, level: int
) -> None:
    events = Events()
    running = broker_factory(plugins=[("o", Outbound(events))])
    raw = raw_factory(port=running.port, level=level)
    raw.connect("enc", level)
    raw.send(Subscribe(1, [Subscription("e/#", 0)]))
    assert raw.recv() == SubAck(1, [0])
    raw.send(Publish("e/t", b"quiet", 0))
    delivered = raw.recv()
    assert isinstance(delivered, Publish) and delivered.payload == b"QUIET"
    kinds = [type(args[1]) for args in events.of("on_packet_encode")]
    assert kinds == [ConnAck, SubAck, Publish]


@LEVELS
def test_on_packet_sent_gets_the_packet_and_its_bytes(
    broker_factory: Factory, raw_factory: Factory, level: int
) -> None:
    events = Events()
    running = broker_factory(plugins=[("o", Outbound(events))])
    raw = raw_factory(port=running.port, level=level)
    connack = raw.connect("sent", level)
    raw.send(PingReq())
    assert raw.recv() == PingResp()
    sent = events.wait("on_packet_sent", count=2)
    assert sent[0] == ("sent", connack, encode(connack, level))
    assert sent[1] == ("sent", PingResp(), encode(PingResp(), level))


def test_on_packet_processed_fires_after_each_handled_packet(
    broker_factory: Factory, raw_factory: Factory
) -> None:
    events = Events()
    running = broker_factory(plugins=[("o", Outbound(events))])
    raw = raw_factory(port=running.port)
    raw.connect("proc")
    raw.send(Publish("p/t", b"x", 1, packet_id=3))
    assert raw.recv() == PubAck(3)
    raw.send(PingReq())
    assert raw.recv() == PingResp()
    processed = events.wait("on_packet_processed", count=3)
    assert [type(args[1]) for args in processed] == [Connect, Publish, PingReq]
    assert all(args[0] == "proc" and args[2] is None for args in processed)
