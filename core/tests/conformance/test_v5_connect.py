"""MQTT 5.0 CONNECT and CONNACK (sections 3.1, 3.2 and 4.1) over real sockets."""

from __future__ import annotations

import time
from typing import Any

import pytest
from v5wire import (
    CONNACK_CODES,
    Factory,
    closed_silently,
    closed_with,
    connect_bytes,
    drain,
    expect_publish,
    frame,
    next_of,
    props,
    publish,
    quiet,
    s,
    subscribe,
    v5,
)

from midge import hookimpl
from midge.codec import (
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


class Gate:
    """Lets every client in except the client id ``refused``, and every topic."""

    @hookimpl
    def on_connect_authenticate(self, client: Any, packet: Connect) -> bool:
        return packet.client_id != "refused"

    @hookimpl
    def on_acl_check(self, client: Any, topic: str, write: bool) -> bool:
        return True


@pytest.fixture
def gated(broker_factory: Factory) -> Any:
    return broker_factory(allow_anonymous=False, plugins=[("gate", Gate())])


@pytest.mark.mqtt5("MQTT-3.1.0-1", "MQTT-3.14.0-1")
def test_a_first_packet_other_than_connect_is_closed_without_an_answer(
    raw_factory: Factory,
) -> None:
    raw = raw_factory(level=5)
    raw.send(bytes((0xC0, 0x00)))  # PINGREQ
    closed_silently(raw)


@pytest.mark.mqtt5("MQTT-3.1.0-2", "MQTT-3.2.0-2", "MQTT-4.13.1-1")
def test_a_second_connect_is_a_protocol_error(raw_factory: Factory) -> None:
    raw = v5(raw_factory, "twice")
    raw.send(Connect("twice", 5))
    packets = raw.packets_until_close()
    assert not any(isinstance(p, ConnAck) for p in packets), packets
    assert packets[-1] == Disconnect(ReasonCode.PROTOCOL_ERROR)


@pytest.mark.mqtt5("MQTT-3.1.2-1")
@pytest.mark.parametrize("name", [b"MQTX", b"mqtt", b"MQ"])
def test_another_protocol_name_is_refused_and_closed(raw_factory: Factory, name: bytes) -> None:
    raw = raw_factory(level=5)
    raw.send(connect_bytes(b"badname", name=name))
    raw.decoder.protocol_level = 4  # an unknown level is answered in the 3.1.1 form
    packets = raw.packets_until_close()
    assert all(isinstance(p, ConnAck) and p.reason_code != 0 for p in packets), packets


@pytest.mark.mqtt5("MQTT-3.1.2-2")
@pytest.mark.parametrize("level", [0, 2, 6, 0x85])
def test_an_unsupported_protocol_version_is_refused_and_closed(
    raw_factory: Factory, level: int
) -> None:
    raw = raw_factory(level=4)
    raw.send(connect_bytes(b"badlevel", level=level))
    # the 3.1.1 form of "unsupported protocol version" (5.0 allows 0x84 or this)
    assert raw.packets_until_close() == [ConnAck(1)]


@pytest.mark.mqtt5("MQTT-3.1.2-3", "MQTT-3.1.4-1", "MQTT-3.2.2-8")
def test_the_reserved_connect_flag_is_malformed(raw_factory: Factory) -> None:
    raw = raw_factory(level=5)
    raw.send(connect_bytes(b"reserved", flags=0x03))
    connack = closed_with(raw, ReasonCode.MALFORMED_PACKET, ConnAck)
    assert connack.reason_code in CONNACK_CODES and not connack.session_present


@pytest.mark.mqtt5("MQTT-3.1.2-4", "MQTT-3.1.4-4", "MQTT-3.2.2-2")
def test_clean_start_1_discards_the_existing_session(raw_factory: Factory) -> None:
    first = v5(raw_factory, "clean1", expiry=300)
    assert subscribe(first, "clean1/t", 1) == [1]
    first.send(Disconnect())
    first.packets_until_close()
    again = v5(raw_factory, "clean1", clean=True, expiry=300)
    assert again.connack.session_present is False
    publish(v5(raw_factory, "clean1-pub"), "clean1/t", b"gone", 1)
    quiet(again)


@pytest.mark.mqtt5("MQTT-3.1.2-5", "MQTT-3.1.2-23", "MQTT-3.2.2-3", "MQTT-4.5.0-1")
def test_clean_start_0_resumes_the_session_with_its_queued_messages(
    raw_factory: Factory,
) -> None:
    first = v5(raw_factory, "resume", expiry=300)
    assert subscribe(first, "resume/t", 1) == [1]
    first.send(Disconnect())
    first.packets_until_close()
    publish(v5(raw_factory, "resume-pub"), "resume/t", b"while away", 1)
    back = v5(raw_factory, "resume", clean=False, expiry=300)
    assert back.connack.session_present is True
    assert expect_publish(back).payload == b"while away"
    publish(v5(raw_factory, "resume-pub2"), "resume/t", b"live", 1)
    assert expect_publish(back).payload == b"live"


@pytest.mark.mqtt5("MQTT-3.1.2-6", "MQTT-3.2.2-3")
def test_clean_start_0_without_a_session_creates_one(raw_factory: Factory) -> None:
    first = v5(raw_factory, "fresh0", clean=False, expiry=300)
    assert first.connack.session_present is False
    first.send(Disconnect())
    first.packets_until_close()
    assert v5(raw_factory, "fresh0", clean=False, expiry=300).connack.session_present is True


# -- wills -----------------------------------------------------------------------------------


@pytest.mark.mqtt5("MQTT-3.1.2-7", "MQTT-3.1.2-8", "MQTT-3.1.2-14")
def test_the_will_is_published_non_retained_when_the_connection_drops(
    raw_factory: Factory,
) -> None:
    watcher = v5(raw_factory, "will-watch")
    subscribe(watcher, "will/gone", 0)
    dying = v5(raw_factory, "will-dies", will=Will("will/gone", b"bye", 0, False))
    dying.close()
    message = expect_publish(watcher)
    assert (message.topic, message.payload, message.retain) == ("will/gone", b"bye", False)
    late = v5(raw_factory, "will-late")
    subscribe(late, "will/gone", 0)
    quiet(late)  # not retained


@pytest.mark.mqtt5("MQTT-3.1.2-15")
def test_a_will_with_will_retain_is_published_retained(raw_factory: Factory) -> None:
    dying = v5(raw_factory, "will-ret", will=Will("will/ret", b"kept", 1, True))
    dying.close()
    time.sleep(0.2)
    late = v5(raw_factory, "will-ret-late")
    subscribe(late, "will/ret", 1)
    message = expect_publish(late)
    assert (message.payload, message.retain) == (b"kept", True)


@pytest.mark.mqtt5("MQTT-3.1.2-10", "MQTT-3.14.4-3")
def test_a_normal_disconnect_discards_the_will(raw_factory: Factory) -> None:
    watcher = v5(raw_factory, "will-watch2")
    subscribe(watcher, "will/normal", 0)
    leaving = v5(raw_factory, "will-normal", will=Will("will/normal", b"never", 0, False))
    leaving.send(Disconnect(0))
    leaving.packets_until_close()
    quiet(watcher, 0.5)


@pytest.mark.mqtt5("MQTT-3.1.2-10")
def test_a_published_will_is_not_published_again(raw_factory: Factory) -> None:
    watcher = v5(raw_factory, "will-watch3")
    subscribe(watcher, "will/once", 0)
    dying = v5(raw_factory, "will-once", expiry=300, will=Will("will/once", b"1", 0, False))
    dying.close()
    assert expect_publish(watcher).payload == b"1"
    back = v5(raw_factory, "will-once", clean=False, expiry=300)
    back.close()
    quiet(watcher, 0.5)


@pytest.mark.mqtt5("MQTT-3.1.2-9", "MQTT-3.1.4-1")
def test_will_flag_without_the_will_fields_is_malformed(raw_factory: Factory) -> None:
    raw = raw_factory(level=5)
    raw.send(connect_bytes(b"nowill", flags=0x06))  # will flag, nothing after the client id
    closed_with(raw, ReasonCode.MALFORMED_PACKET, ConnAck)


@pytest.mark.mqtt5("MQTT-3.1.2-11", "MQTT-3.1.2-13")
@pytest.mark.parametrize("flags", [0x0A, 0x12, 0x22], ids=["qos1", "qos2", "retain"])
def test_will_qos_or_retain_without_the_will_flag_is_malformed(
    raw_factory: Factory, flags: int
) -> None:
    raw = raw_factory(level=5)
    raw.send(connect_bytes(b"willbits", flags=flags))
    closed_with(raw, ReasonCode.MALFORMED_PACKET, ConnAck)


@pytest.mark.mqtt5("MQTT-3.1.2-12")
def test_will_qos_3_is_malformed(raw_factory: Factory) -> None:
    raw = raw_factory(level=5)
    will = b"\x00" + s("w/t") + s(b"p")
    raw.send(connect_bytes(b"willqos3", flags=0x1E, payload_tail=will))
    closed_with(raw, ReasonCode.MALFORMED_PACKET, ConnAck)


@pytest.mark.mqtt5("MQTT-3.1.2-16", "MQTT-3.1.2-17", "MQTT-3.1.2-18", "MQTT-3.1.2-19",
                   "MQTT-3.1.3-1")
@pytest.mark.parametrize(("flags", "tail"), [
    (0x02, s("user")),  # no user name flag, a user name present
    (0x82, b""),  # user name flag, no user name
    (0x82, s("user") + s(b"pw")),  # no password flag, a password present
    (0xC2, s("user")),  # password flag, no password
], ids=["username-extra", "username-missing", "password-extra", "password-missing"])
def test_user_name_and_password_must_match_their_flags(
    raw_factory: Factory, flags: int, tail: bytes
) -> None:
    raw = raw_factory(level=5)
    raw.send(connect_bytes(b"creds", flags=flags, payload_tail=tail))
    closed_with(raw, ReasonCode.MALFORMED_PACKET, ConnAck)


@pytest.mark.mqtt5("MQTT-3.1.2-16", "MQTT-3.1.2-17", "MQTT-3.1.2-18", "MQTT-3.1.2-19",
                   "MQTT-3.1.3-1")
def test_user_name_and_password_in_their_place_are_accepted(raw_factory: Factory) -> None:
    raw = raw_factory(level=5)
    raw.send(connect_bytes(b"creds-ok", flags=0xC2, payload_tail=s("user") + s(b"pw")))
    assert next_of(raw, ConnAck).reason_code == 0


# -- keep alive, session expiry --------------------------------------------------------------


@pytest.mark.mqtt5("MQTT-3.1.2-22", "MQTT-3.2.2-22")
def test_a_silent_client_is_closed_after_one_and_a_half_keepalives(
    raw_factory: Factory,
) -> None:
    raw = v5(raw_factory, "ka-silent", keepalive=2)
    assert Property.SERVER_KEEP_ALIVE not in raw.connack.properties
    started = time.monotonic()
    closed_with(raw, ReasonCode.KEEP_ALIVE_TIMEOUT, timeout=6)
    # 3 s, and the broker checks every 0.5 s: not at 1x (2 s), not at 2x (4 s)
    assert 2.9 <= time.monotonic() - started <= 3.9


@pytest.mark.mqtt5("MQTT-3.1.2-22")
def test_a_client_that_pings_is_kept(raw_factory: Factory) -> None:
    raw = v5(raw_factory, "ka-pings", keepalive=1)
    for _ in range(4):
        time.sleep(0.6)
        raw.send(PingReq())
        assert next_of(raw, PingResp) == PingResp()


@pytest.mark.mqtt5("MQTT-4.1.0-1")
def test_the_session_is_kept_while_the_connection_is_open(raw_factory: Factory) -> None:
    raw = v5(raw_factory, "open-long", expiry=1)
    subscribe(raw, "open/t", 1)
    time.sleep(1.7)  # past the expiry interval and a few sweeps
    publish(v5(raw_factory, "open-pub"), "open/t", b"still", 1)
    assert expect_publish(raw).payload == b"still"


@pytest.mark.mqtt5("MQTT-4.1.0-2", "MQTT-3.1.2-23")
def test_the_session_is_discarded_once_its_expiry_has_passed(raw_factory: Factory) -> None:
    raw = v5(raw_factory, "expires", expiry=1)
    subscribe(raw, "expires/t", 1)
    raw.close()
    time.sleep(0.3)
    # within the interval the session is there
    back = v5(raw_factory, "expires", clean=False, expiry=1)
    assert back.connack.session_present
    back.close()
    time.sleep(2.0)
    assert v5(raw_factory, "expires", clean=False).connack.session_present is False


# -- client identifiers ----------------------------------------------------------------------


@pytest.mark.mqtt5("MQTT-3.1.3-2", "MQTT-3.1.3-3", "MQTT-3.1.3-5")
@pytest.mark.parametrize("cid", ["a", "0123456789abcdefghijkLM", "Z9"])
def test_short_alphanumeric_client_ids_are_accepted(raw_factory: Factory, cid: str) -> None:
    raw = v5(raw_factory, cid, expiry=300)
    assert Property.ASSIGNED_CLIENT_IDENTIFIER not in raw.connack.properties
    raw.close()
    # the client id names the session
    assert v5(raw_factory, cid, clean=False, expiry=300).connack.session_present


@pytest.mark.mqtt5("MQTT-3.1.3-6", "MQTT-3.1.3-7", "MQTT-3.2.2-16")
def test_an_empty_client_id_gets_a_unique_assigned_identifier(raw_factory: Factory) -> None:
    one = v5(raw_factory, "", expiry=300)
    two = v5(raw_factory, "", expiry=300)
    first = one.connack.properties[Property.ASSIGNED_CLIENT_IDENTIFIER]
    second = two.connack.properties[Property.ASSIGNED_CLIENT_IDENTIFIER]
    assert first and second and first != second
    subscribe(one, "assigned/t", 1)
    one.close()
    # the session is the assigned id's, as if the client had sent it
    back = v5(raw_factory, first, clean=False, expiry=300)
    assert back.connack.session_present
    publish(two, "assigned/t", b"to one", 1)
    assert expect_publish(back).payload == b"to one"


@pytest.mark.mqtt5("MQTT-3.1.3-6", "MQTT-3.1.3-7")
def test_an_empty_client_id_with_clean_start_0_is_assigned_one(raw_factory: Factory) -> None:
    raw = v5(raw_factory, "", clean=False, expiry=300)
    assert raw.connack.properties[Property.ASSIGNED_CLIENT_IDENTIFIER]


@pytest.mark.mqtt5("MQTT-3.1.3-8", "MQTT-3.2.2-6", "MQTT-3.2.2-7", "MQTT-3.2.2-8")
def test_a_rejected_client_id_gets_0x85_and_is_closed(broker_factory: Factory,
                                                        raw_factory: Factory) -> None:
    running = broker_factory(max_client_id_length=8)
    raw = raw_factory(port=running.port, level=5)
    raw.send(Connect("much-too-long-id", 5))
    connack = closed_with(raw, ReasonCode.CLIENT_IDENTIFIER_NOT_VALID, ConnAck)
    assert connack.session_present is False


@pytest.mark.mqtt5("MQTT-3.1.3-9")
def test_a_reconnect_within_the_will_delay_cancels_the_will(raw_factory: Factory) -> None:
    watcher = v5(raw_factory, "delay-watch")
    subscribe(watcher, "will/delay", 0)
    will = Will("will/delay", b"late", 0, False, {Property.WILL_DELAY_INTERVAL: 1})
    dying = v5(raw_factory, "delay-dies", expiry=60, will=will)
    dying.close()
    time.sleep(0.2)
    v5(raw_factory, "delay-dies", clean=False, expiry=60)
    quiet(watcher, 1.6)


@pytest.mark.mqtt5("MQTT-3.1.3-9")
def test_without_a_reconnect_the_delayed_will_is_sent(raw_factory: Factory) -> None:
    watcher = v5(raw_factory, "delay-watch2")
    subscribe(watcher, "will/delay2", 0)
    will = Will("will/delay2", b"late", 0, False, {Property.WILL_DELAY_INTERVAL: 1})
    dying = v5(raw_factory, "delay-dies2", expiry=60, will=will)
    dying.close()
    assert expect_publish(watcher, timeout=3).payload == b"late"


@pytest.mark.mqtt5("MQTT-3.1.3-10")
def test_the_order_of_the_will_user_properties_is_kept(raw_factory: Factory) -> None:
    watcher = v5(raw_factory, "wup-watch")
    subscribe(watcher, "will/up", 0)
    pairs = [("b", "1"), ("a", "2"), ("b", "3"), ("c", "")]
    dying = v5(raw_factory, "wup-dies",
               will=Will("will/up", b"x", 0, False, {Property.USER_PROPERTY: pairs}))
    dying.close()
    assert expect_publish(watcher).properties[Property.USER_PROPERTY] == pairs


@pytest.mark.mqtt5("MQTT-3.1.4-3", "MQTT-3.14.4-1", "MQTT-3.14.4-2", "MQTT-3.14.2-1")
def test_a_second_connection_with_the_same_client_id_takes_the_session_over(
    raw_factory: Factory,
) -> None:
    old = v5(raw_factory, "takeover")
    new = v5(raw_factory, "takeover")
    packets = old.packets_until_close()
    assert packets == [Disconnect(ReasonCode.SESSION_TAKEN_OVER)]
    new.send(PingReq())
    assert next_of(new, PingResp) == PingResp()


@pytest.mark.mqtt5("MQTT-3.1.4-5", "MQTT-3.2.0-1", "MQTT-3.2.2-1")
def test_an_accepted_connect_is_answered_first_with_connack_0(raw_factory: Factory) -> None:
    raw = raw_factory(level=5)
    # a QoS 0 PUBLISH right behind the CONNECT, in the same write
    raw.send(connect_bytes(b"first-ack") + frame(0x30, s("first/t"), b"\x00", b"p"))
    raw.sock.settimeout(3)
    data = raw.sock.recv(2)
    assert data[0] == 0x20, data
    more = raw.sock.recv(3)
    assert more[0] & 0xFE == 0 and more[1] == 0  # flags bits 7-1 zero, reason 0x00


@pytest.mark.mqtt5("MQTT-3.1.4-2", "MQTT-3.1.4-6", "MQTT-3.2.2-6", "MQTT-3.2.2-7",
                   "MQTT-3.2.2-8", "MQTT-4.13.2-1", "MQTT-3.14.0-1")
def test_a_refused_connect_processes_nothing_after_it(gated: Any, raw_factory: Factory) -> None:
    refused = raw_factory(port=gated.port, level=5)
    refused.send(connect_bytes(b"refused", flags=0x02)
                 + frame(0x31, s("gate/kept"), b"\x00", b"never stored"))
    connack = closed_with(refused, ReasonCode.NOT_AUTHORIZED, ConnAck)
    assert connack.session_present is False and connack.reason_code in CONNACK_CODES
    other = v5(raw_factory, "allowed", port=gated.port)
    subscribe(other, "gate/#", 0)
    quiet(other)


@pytest.mark.mqtt5("MQTT-3.2.2-9", "MQTT-3.2.2-10", "MQTT-3.2.2-11")
def test_a_server_limited_to_qos_1_says_so_and_still_takes_qos_2_subscribes(
    broker_factory: Factory, raw_factory: Factory,
) -> None:
    running = broker_factory(maximum_qos=1)
    raw = v5(raw_factory, "maxqos", port=running.port)
    assert raw.connack.properties[Property.MAXIMUM_QOS] == 1
    assert subscribe(raw, "mq/t", 2) == [1]
    raw.send(Publish("mq/t", b"x", 2, packet_id=5))
    closed_with(raw, ReasonCode.QOS_NOT_SUPPORTED)


@pytest.mark.mqtt5("MQTT-3.2.2-12")
def test_a_will_above_the_maximum_qos_is_refused(broker_factory: Factory,
                                                 raw_factory: Factory) -> None:
    running = broker_factory(maximum_qos=1)
    raw = raw_factory(port=running.port, level=5)
    raw.send(Connect("willq2", 5, will=Will("w/q", b"x", 2)))
    closed_with(raw, ReasonCode.QOS_NOT_SUPPORTED, ConnAck)


@pytest.mark.mqtt5("MQTT-3.2.2-13", "MQTT-3.2.2-14")
def test_without_retain_available_retained_wills_and_publishes_are_refused(
    broker_factory: Factory, raw_factory: Factory,
) -> None:
    running = broker_factory(retain_available=False)
    raw = raw_factory(port=running.port, level=5)
    raw.send(Connect("willret", 5, will=Will("w/r", b"x", 0, True)))
    closed_with(raw, ReasonCode.RETAIN_NOT_SUPPORTED, ConnAck)
    ok = v5(raw_factory, "pubret", port=running.port)
    assert ok.connack.properties[Property.RETAIN_AVAILABLE] == 0
    ok.send(Publish("w/r", b"x", 0, True))
    closed_with(ok, ReasonCode.RETAIN_NOT_SUPPORTED)


@pytest.mark.mqtt5("MQTT-3.2.2-15")
def test_a_packet_above_the_server_maximum_is_disconnected_with_0x95(
    broker_factory: Factory, raw_factory: Factory,
) -> None:
    running = broker_factory(max_packet_size=200)
    raw = v5(raw_factory, "toolarge", port=running.port)
    assert raw.connack.properties[Property.MAXIMUM_PACKET_SIZE] == 200
    raw.send(Publish("big/t", b"x" * 300))
    closed_with(raw, ReasonCode.PACKET_TOO_LARGE)


@pytest.mark.mqtt5("MQTT-3.2.2-19", "MQTT-3.2.2-20")
def test_connack_carries_no_reason_string_or_user_property_for_a_small_client(
    raw_factory: Factory,
) -> None:
    raw = v5(raw_factory, "tinyconn", maximum_packet_size=32)
    assert Property.REASON_STRING not in raw.connack.properties
    assert Property.USER_PROPERTY not in raw.connack.properties


@pytest.mark.mqtt5("MQTT-3.1.2-28")
def test_response_information_only_when_requested(broker_factory: Factory,
                                                  raw_factory: Factory) -> None:
    running = broker_factory(response_information="replies/")
    asked = v5(raw_factory, "ri-yes", port=running.port, request_response_information=1)
    assert asked.connack.properties[Property.RESPONSE_INFORMATION] == "replies/"
    zero = v5(raw_factory, "ri-zero", port=running.port, request_response_information=0)
    assert Property.RESPONSE_INFORMATION not in zero.connack.properties
    absent = v5(raw_factory, "ri-absent", port=running.port)
    assert Property.RESPONSE_INFORMATION not in absent.connack.properties


@pytest.mark.mqtt5("MQTT-3.1.2-29")
def test_request_problem_information_0_keeps_reason_strings_off_acks(
    raw_factory: Factory,
) -> None:
    # PUBACK 0x99 (payload not UTF-8) carries a Reason String when problem info is allowed
    told = v5(raw_factory, "pi-yes")
    puback = publish(told, "pi/t", b"\xff\xfe", 1, payload_format_indicator=1)
    assert puback.reason_code == ReasonCode.PAYLOAD_FORMAT_INVALID
    assert Property.REASON_STRING in puback.properties
    quiet_ = v5(raw_factory, "pi-no", request_problem_information=0)
    puback = publish(quiet_, "pi/t", b"\xff\xfe", 1, payload_format_indicator=1)
    assert puback.reason_code == ReasonCode.PAYLOAD_FORMAT_INVALID
    assert Property.REASON_STRING not in puback.properties
    assert Property.USER_PROPERTY not in puback.properties


@pytest.mark.mqtt5("MQTT-4.2.0-1")
def test_packets_split_and_joined_across_tcp_segments_are_one_stream(
    raw_factory: Factory,
) -> None:
    raw = raw_factory(level=5)
    data = (connect_bytes(b"stream") + frame(0x82, b"\x00\x01", props(), s("st/t"), b"\x00")
            + frame(0x30, s("st/t"), b"\x00", b"abc"))
    for index in range(len(data)):
        raw.sock.sendall(data[index:index + 1])
    packets = drain(raw)
    assert [type(p).__name__ for p in packets] == ["ConnAck", "SubAck", "Publish"], packets
