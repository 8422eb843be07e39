"""MQTT 3.1.1 (and 3.1) conformance: CONNECT and CONNACK (specification sections 3.1, 3.2).

Over real loopback sockets against a real broker; malformed CONNECTs are written byte by
byte. Each test names the normative statements it checks with ``mqtt311``.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from midge import hookimpl
from midge.codec import ConnAck, Connect, PingReq, PingResp, Publish, Will

try:
    from v311_helpers import (
        V31,
        V311,
        Factory,
        assert_rejected,
        connect_bytes,
        expect,
        nothing,
        online,
        publish_bytes,
        publishes,
        string,
        subscribe,
        subscribe_bytes,
    )
except ImportError:  # pragma: no cover - core/tests/conformance made a package
    from conformance.v311_helpers import (  # type: ignore[no-redef]
        V31,
        V311,
        Factory,
        assert_rejected,
        connect_bytes,
        expect,
        nothing,
        online,
        publish_bytes,
        publishes,
        string,
        subscribe,
        subscribe_bytes,
    )

LEVELS = pytest.mark.parametrize("level", [V311, V31], ids=["3.1.1", "3.1"])



# -- the first packet, the second CONNECT -------------------------------------------------


@pytest.mark.mqtt311("MQTT-3.1.0-1", "MQTT-4.8.0-1")
@pytest.mark.parametrize("first", [
    pytest.param(b"\xc0\x00", id="PINGREQ"),
    pytest.param(publish_bytes("a/b", b"x"), id="PUBLISH"),
    pytest.param(subscribe_bytes(("a/b", 0)), id="SUBSCRIBE"),
    pytest.param(b"\xe0\x00", id="DISCONNECT"),
])
def test_a_packet_before_connect_closes_the_connection(
    raw_factory: Factory, first: bytes
) -> None:
    assert assert_rejected(raw_factory(), first) == []


@pytest.mark.mqtt311("MQTT-3.1.0-2", "MQTT-4.8.0-1")
@LEVELS
def test_a_second_connect_is_a_protocol_violation(raw_factory: Factory, level: int) -> None:
    raw = online(raw_factory, client_id="twice", level=level)
    assert assert_rejected(raw, connect_bytes("twice", level=level)) == []


# -- protocol name and level --------------------------------------------------------------


@pytest.mark.mqtt311("MQTT-3.1.2-1")
@pytest.mark.parametrize(("name", "level"), [
    ("mqtt", 4), ("MQTX", 4), ("MQIsdp", 4), ("MQTT", 3), ("", 4),
])
def test_a_wrong_protocol_name_is_not_accepted(
    raw_factory: Factory, name: str, level: int
) -> None:
    watcher = online(raw_factory, client_id="namewatch")
    subscribe(watcher, ("name/#", 0))
    will = string("name/will") + string(b"must not be published")
    data = connect_bytes("badname", name=name, level=level, flags=0x04, rest=will)
    sent = assert_rejected(raw_factory(), data)
    # disconnecting is allowed, with a refusal first; going on with it as 3.1.1 is not:
    # no CONNACK 0, no will kept (so none published on the close), no session made
    assert all(isinstance(p, ConnAck) and p.reason_code != 0 for p in sent), sent
    nothing(watcher)
    later = raw_factory()
    assert later.connect("badname", V311, clean_start=False) == ConnAck(0, False)


@pytest.mark.mqtt311("MQTT-3.1.2-2")
@pytest.mark.parametrize("level", [0, 2, 6, 255])
def test_an_unsupported_protocol_level_gets_return_code_1_then_close(
    raw_factory: Factory, level: int
) -> None:
    sent = assert_rejected(raw_factory(), connect_bytes("badlevel", level=level))
    assert sent == [ConnAck(1)]


@pytest.mark.mqtt311("MQTT-3.1.2-3", "MQTT-3.1.4-1", "MQTT-3.2.2-6")
@LEVELS
def test_the_connect_reserved_flag_must_be_zero(raw_factory: Factory, level: int) -> None:
    assert assert_rejected(raw_factory(), connect_bytes("res", level=level, flags=0x03)) == []


# -- will, user name and password flags ---------------------------------------------------

WILL = string("will/t") + string(b"bye")


@pytest.mark.mqtt311("MQTT-3.1.2-11", "MQTT-3.1.2-13", "MQTT-3.1.2-15", "MQTT-3.1.4-1")
@pytest.mark.parametrize("flags", [
    pytest.param(0x0A, id="will-qos-1-without-will"),
    pytest.param(0x12, id="will-qos-2-without-will"),
    pytest.param(0x22, id="will-retain-without-will"),
])
def test_will_qos_and_retain_must_be_zero_without_a_will(
    raw_factory: Factory, flags: int
) -> None:
    assert assert_rejected(raw_factory(), connect_bytes("w", flags=flags)) == []


@pytest.mark.mqtt311("MQTT-3.1.2-11", "MQTT-3.1.4-1")
def test_will_fields_without_the_will_flag_are_refused(raw_factory: Factory) -> None:
    assert assert_rejected(raw_factory(), connect_bytes("w", flags=0x02, rest=WILL)) == []


@pytest.mark.mqtt311("MQTT-3.1.2-14", "MQTT-3.1.4-1")
def test_will_qos_3_is_refused(raw_factory: Factory) -> None:
    data = connect_bytes("w", flags=0x02 | 0x04 | 0x18, rest=WILL)
    assert assert_rejected(raw_factory(), data) == []


@pytest.mark.mqtt311("MQTT-3.1.2-9", "MQTT-3.1.4-1")
def test_a_will_flag_needs_will_topic_and_message(raw_factory: Factory) -> None:
    data = connect_bytes("w", flags=0x06)
    assert assert_rejected(raw_factory(), data) == []
    half = connect_bytes("w", flags=0x06, rest=string("will/t"))
    assert assert_rejected(raw_factory(), half) == []


@pytest.mark.mqtt311("MQTT-3.1.2-18", "MQTT-3.1.2-20", "MQTT-3.1.4-1")
def test_user_name_or_password_present_without_its_flag_is_refused(
    raw_factory: Factory
) -> None:
    assert assert_rejected(raw_factory(), connect_bytes("u", rest=string("user"))) == []
    both = string("user") + string(b"pw")
    assert assert_rejected(raw_factory(), connect_bytes("u", flags=0x82, rest=both)) == []


@pytest.mark.mqtt311("MQTT-3.1.2-19", "MQTT-3.1.2-21", "MQTT-3.1.4-1")
def test_a_user_name_or_password_flag_needs_its_field(raw_factory: Factory) -> None:
    assert assert_rejected(raw_factory(), connect_bytes("u", flags=0x82)) == []
    data = connect_bytes("u", flags=0xC2, rest=string("user"))
    assert assert_rejected(raw_factory(), data) == []


@pytest.mark.mqtt311("MQTT-3.1.2-22", "MQTT-3.1.4-1")
@LEVELS
def test_a_password_without_a_user_name_is_refused(raw_factory: Factory, level: int) -> None:
    data = connect_bytes("u", level=level, flags=0x42, rest=string(b"pw"))
    assert assert_rejected(raw_factory(), data) == []


class Credentials:
    """Records the credentials of every CONNECT; refuses the user name ``bad``."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str | None, bytes | None]] = []

    @hookimpl
    def on_connect_authenticate(self, client: Any, packet: Connect) -> bool:
        self.seen.append((packet.client_id, packet.username, packet.password))
        return packet.username != "bad"

    @hookimpl
    def on_acl_check(self, client: Any, topic: str, write: bool) -> bool:
        return True


@pytest.mark.mqtt311("MQTT-3.1.3-1")
def test_payload_fields_are_read_in_their_order(
    broker_factory: Factory, raw_factory: Factory
) -> None:
    creds = Credentials()
    running = broker_factory(allow_anonymous=False, plugins=[("c", creds)])
    watcher = online(raw_factory, running.port, client_id="watcher")
    subscribe(watcher, ("order/#", 1))
    rest = string("order/will") + string(b"last words") + string("alice") + string(b"pw")
    raw = raw_factory(port=running.port)
    raw.send(connect_bytes("ordered", flags=0x02 | 0x04 | 0x08 | 0x80 | 0x40, rest=rest))
    assert raw.recv() == ConnAck(0)
    assert creds.seen[-1] == ("ordered", "alice", b"pw")
    raw.close()
    [will] = publishes(watcher, 1)
    assert (will.topic, will.payload, will.qos) == ("order/will", b"last words", 1)


@pytest.mark.mqtt311("MQTT-3.1.3-3", "MQTT-3.1.4-1", "MQTT-3.2.2-6")
def test_a_connect_without_a_client_id_field_is_refused(raw_factory: Factory) -> None:
    data = connect_bytes("x")[:-3]  # drop the client id (length 1: 3 bytes)
    data = bytes((data[0], len(data) - 2)) + data[2:]
    assert assert_rejected(raw_factory(), data) == []


# -- client identifiers -------------------------------------------------------------------


@pytest.mark.mqtt311("MQTT-3.1.3-5", "MQTT-3.1.4-4")
@pytest.mark.parametrize("client_id", [
    "a", "0123456789abcdefghijklm", "ABCDEFGHIJKLMNOPQRSTUVW", "nopqrstuvwxyzXYZ0123456",
])
def test_short_alphanumeric_client_ids_are_accepted(
    raw_factory: Factory, client_id: str
) -> None:
    raw = raw_factory()
    assert raw.connect(client_id, V311) == ConnAck(0)


@pytest.mark.mqtt311("MQTT-3.1.3-5")
@pytest.mark.xfail(strict=True, reason=(
    "midge deviation from MQTT 3.1 (3.1.1 is met): 3.1 limits client ids to 23 characters "
    "and answers a longer one with return code 2; midge accepts it"))
def test_mqtt_3_1_refuses_client_ids_over_23_characters(raw_factory: Factory) -> None:
    raw = raw_factory(level=V31)
    assert raw.connect("x" * 24, V31) == ConnAck(2)
    assert raw.closed()


@pytest.mark.mqtt311("MQTT-3.1.3-6")
def test_an_empty_client_id_gets_a_unique_one(raw_factory: Factory) -> None:
    first = online(raw_factory, client_id="")
    second = online(raw_factory, client_id="")
    # were they given the same id, the second would have taken over the first
    subscribe(first, ("anon/t", 0))
    subscribe(second, ("anon/t", 0))
    sender = online(raw_factory, client_id="sender")
    sender.send(Publish("anon/t", b"both"))
    assert expect(first, Publish).payload == b"both"
    assert expect(second, Publish).payload == b"both"


@pytest.mark.mqtt311("MQTT-3.1.3-7", "MQTT-3.1.3-8", "MQTT-3.2.2-4", "MQTT-3.2.2-5")
def test_an_empty_client_id_with_clean_session_0_gets_return_code_2(
    raw_factory: Factory
) -> None:
    raw = raw_factory()
    assert raw.connect("", V311, clean_start=False) == ConnAck(2, False)
    assert raw.closed()


@pytest.mark.mqtt311("MQTT-3.1.3-9")
def test_mqtt_3_1_refuses_an_empty_client_id_even_with_clean_session(
    raw_factory: Factory
) -> None:
    # MQTT 3.1 requires 1 to 23 characters; 3.1.1 made the empty id legal
    raw = raw_factory(level=V31)
    assert raw.connect("", V31, clean_start=True) == ConnAck(2)
    assert raw.closed()


@pytest.mark.mqtt311("MQTT-3.1.3-9", "MQTT-3.2.2-5")
def test_a_rejected_client_id_gets_return_code_2_then_close(
    broker_factory: Factory, raw_factory: Factory
) -> None:
    running = broker_factory(max_client_id_length=8)
    raw = raw_factory(port=running.port)
    assert raw.connect("nine-char", V311) == ConnAck(2)
    assert raw.closed()


# -- CONNECT processing -------------------------------------------------------------------


@pytest.mark.mqtt311("MQTT-3.1.4-2", "MQTT-3.1.3-2")
@LEVELS
def test_a_second_client_with_the_same_id_takes_over(raw_factory: Factory, level: int) -> None:
    old = online(raw_factory, client_id="same", level=level)
    new = online(raw_factory, client_id="same", level=level)
    assert old.closed()
    new.send(PingReq())
    assert new.recv() == PingResp()


@pytest.mark.mqtt311("MQTT-3.1.4-5")
def test_data_after_a_refused_connect_is_not_processed(raw_factory: Factory) -> None:
    raw = raw_factory()
    refused = connect_bytes("", flags=0x00)  # empty id without clean session: refused
    raw.send(refused + publish_bytes("refused/t", b"must not be kept", byte0=0x31))
    assert raw.packets_until_close() == [ConnAck(2)]
    late = online(raw_factory, client_id="late")
    subscribe(late, ("refused/#", 0))
    nothing(late)


@pytest.mark.mqtt311("MQTT-3.2.2-4", "MQTT-3.2.2-5")
def test_a_refusal_never_claims_a_session(broker_factory: Factory, raw_factory: Factory) -> None:
    running = broker_factory(allow_anonymous=False, plugins=[("c", Credentials())])
    keeper = raw_factory(port=running.port)
    assert keeper.connect("kept", V311, clean_start=False, username="good") == ConnAck(0)
    keeper.close()
    refused = raw_factory(port=running.port)
    assert refused.connect("kept", V311, clean_start=False, username="bad") == ConnAck(4, False)
    assert refused.closed()
    back = raw_factory(port=running.port)  # the refusal left the session alone
    assert back.connect("kept", V311, clean_start=False, username="good") == ConnAck(0, True)


@pytest.mark.mqtt311("MQTT-3.2.2-1")
@LEVELS
def test_clean_session_1_is_answered_with_session_present_0(
    raw_factory: Factory, level: int
) -> None:
    first = online(raw_factory, client_id="sp", level=level, clean=False)
    subscribe(first, ("sp/t", 1))
    first.close()
    raw = raw_factory(level=level)
    assert raw.connect("sp", level, clean_start=True) == ConnAck(0, False)


@pytest.mark.mqtt311("MQTT-3.2.2-2", "MQTT-3.2.2-3")
def test_session_present_tells_whether_a_session_was_stored(raw_factory: Factory) -> None:
    raw = raw_factory()
    assert raw.connect("sp2", V311, clean_start=False) == ConnAck(0, False)
    raw.close()
    again = raw_factory()
    assert again.connect("sp2", V311, clean_start=False) == ConnAck(0, True)


@pytest.mark.mqtt311("MQTT-3.2.2-2")
def test_mqtt_3_1_connack_has_no_session_present_flag(raw_factory: Factory) -> None:
    raw = raw_factory(level=V31)
    assert raw.connect("sp31", V31, clean_start=False) == ConnAck(0, False)
    raw.close()
    again = raw_factory(level=V31)
    again.sock.sendall(connect_bytes("sp31", level=V31, flags=0x00))
    again.sock.settimeout(3)
    assert again.sock.recv(4) == b"\x20\x02\x00\x00"


@pytest.mark.mqtt311("MQTT-3.2.0-1", "MQTT-3.1.4-4")
def test_connack_comes_before_any_other_packet(raw_factory: Factory) -> None:
    sub = online(raw_factory, client_id="first", clean=False)
    subscribe(sub, ("first/t", 1))
    sub.close()
    pub = online(raw_factory, client_id="pub")
    for index in range(3):
        pub.send(Publish("first/t", b"%d" % index, 1, packet_id=index + 1))
        expect(pub, object)
    raw = raw_factory()
    # the queued messages go out only after CONNACK
    raw.send(Connect("first", V311, clean_start=False))
    assert raw.recv() == ConnAck(0, True)
    assert [p.payload for p in publishes(raw, 3)] == [b"0", b"1", b"2"]


# -- keep alive ---------------------------------------------------------------------------


@pytest.mark.mqtt311("MQTT-3.1.2-24", "MQTT-3.1.2-8")
@LEVELS
def test_a_silent_client_is_disconnected_after_one_and_a_half_keepalives(
    raw_factory: Factory, level: int
) -> None:
    watcher = online(raw_factory, client_id="ka-watch")
    subscribe(watcher, ("ka/#", 0))
    raw = raw_factory(level=level)
    start = time.monotonic()
    assert raw.connect("ka", level, keepalive=1, will=Will("ka/will", b"gone")) == ConnAck(0)
    assert raw.closed(timeout=4.0)
    elapsed = time.monotonic() - start
    assert 1.0 <= elapsed <= 3.0, elapsed
    # closed "as if the network had failed": the will is published
    assert expect(watcher, Publish).payload == b"gone"


@pytest.mark.mqtt311("MQTT-3.1.2-24", "MQTT-3.12.4-1")
def test_pings_keep_a_client_connected_and_are_answered(raw_factory: Factory) -> None:
    raw = online(raw_factory, client_id="pinger", keepalive=1)
    deadline = time.monotonic() + 2.5
    while time.monotonic() < deadline:  # more than twice 1.5 keepalives, bounded
        raw.send(PingReq())
        assert raw.recv() == PingResp()
        time.sleep(0.4)
    raw.send(PingReq())
    assert raw.recv() == PingResp()


@pytest.mark.mqtt311("MQTT-3.2.2-6")
def test_a_keepalive_above_the_maximum_gets_no_inapplicable_return_code(
    broker_factory: Factory, raw_factory: Factory
) -> None:
    running = broker_factory(max_keepalive=10)
    raw = raw_factory(port=running.port)
    sent = assert_rejected(raw, connect_bytes("sleepy", keepalive=60))
    assert sent == []


@pytest.mark.mqtt311("MQTT-4.7.1-1", "MQTT-4.7.3-1", "MQTT-3.1.4-1")
@pytest.mark.parametrize("topic", ["will/#", "will/+/x", ""])
def test_a_will_topic_must_be_a_valid_topic_name(raw_factory: Factory, topic: str) -> None:
    data = connect_bytes("badwill", flags=0x06, rest=string(topic) + string(b"m"))
    assert assert_rejected(raw_factory(), data) == []
