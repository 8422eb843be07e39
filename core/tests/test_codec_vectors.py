"""Hand-written wire vectors for the codec, derived from the MQTT 3.1.1 and 5.0 specs.

Each valid vector is decoded whole, byte by byte and followed by another packet, and
encoded back to its exact bytes; each invalid vector must raise one exact exception
class carrying one exact reason code.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest

from midge.codec import (
    Auth,
    ConnAck,
    Connect,
    Decoder,
    Disconnect,
    LocalProtocolError,
    MalformedPacket,
    Packet,
    PacketTooLarge,
    PingReq,
    PingResp,
    ProtocolViolation,
    PubAck,
    PubComp,
    Publish,
    PubRec,
    PubRel,
    ReasonCode,
    RemoteProtocolError,
    Role,
    SubAck,
    Subscribe,
    Subscription,
    UnsubAck,
    Unsubscribe,
    UnsupportedProtocolVersion,
    Will,
    encode,
    plain_ack,
)


def h(text: str) -> bytes:
    """Bytes from spaced hex, as the wire layouts are written below."""
    return bytes.fromhex(text)


@dataclass(frozen=True)
class Vector:
    name: str
    level: int
    wire: bytes
    packet: Packet
    #: what encoding ``packet`` gives when ``wire`` is a valid but non-canonical form
    encoded: bytes | None = None


PINGREQ = h("C0 00")

VECTORS = [
    # -- CONNECT ---------------------------------------------------------------------
    Vector(
        "connect-v31",
        3,
        h("10 10 00 06 4D 51 49 73 64 70 03 02 00 3C 00 02 63 31"),
        Connect("c1", 3, True, 60),
    ),
    Vector(
        "connect-v31-will-username-password",
        3,
        h(
            "10 1C 00 06 4D 51 49 73 64 70 03 C6 00 0A 00 02 63 31"
            " 00 01 74 00 01 6D 00 01 75 00 01 70"
        ),
        Connect("c1", 3, True, 10, "u", b"p", Will("t", b"m")),
    ),
    Vector(
        "connect-v311-minimal",
        4,
        h("10 0C 00 04 4D 51 54 54 04 02 00 3C 00 00"),
        Connect("", 4, True, 60),
    ),
    Vector(
        "connect-v311-will-qos1-retain-username-password",
        4,
        h(
            "10 23 00 04 4D 51 54 54 04 EE 00 0A 00 03 63 69 64"
            " 00 03 77 2F 74 00 03 62 79 65 00 04 75 73 65 72 00 02 70 77"
        ),
        Connect("cid", 4, True, 10, "user", b"pw", Will("w/t", b"bye", 1, True)),
    ),
    Vector(
        "connect-v311-username-only-persistent",
        4,
        h("10 11 00 04 4D 51 54 54 04 80 00 00 00 01 78 00 02 61 62"),
        Connect("x", 4, False, 0, "ab"),
    ),
    Vector(
        "connect-v5-properties-will-properties",
        5,
        h(
            "10 5E 00 04 4D 51 54 54 05 D6 00 1E"
            " 1B 11 00 00 0E 10 21 00 14 26 00 01 6B 00 01 76 26 00 01 6B 00 01 77"
            " 27 00 01 00 00"
            " 00 03 76 35 63"
            " 23 18 00 00 00 05 01 01 02 00 00 00 3C 03 00 04 74 65 78 74 08 00 01 72"
            " 09 00 02 01 02 26 00 01 61 00 01 62"
            " 00 04 77 69 6C 6C 00 00 00 01 75 00 02 00 FF"
        ),
        Connect(
            "v5c",
            5,
            True,
            30,
            "u",
            b"\x00\xff",
            Will(
                "will",
                b"",
                2,
                False,
                {
                    0x18: 5,
                    0x01: 1,
                    0x02: 60,
                    0x03: "text",
                    0x08: "r",
                    0x09: b"\x01\x02",
                    0x26: [("a", "b")],
                },
            ),
            {0x11: 3600, 0x21: 20, 0x26: [("k", "v"), ("k", "w")], 0x27: 65536},
        ),
    ),
    Vector(
        "connect-v5-password-without-username",
        5,
        h("10 11 00 04 4D 51 54 54 05 42 00 00 00 00 00 00 02 70 77"),
        Connect("", 5, True, 0, None, b"pw"),
    ),
    # -- CONNACK ---------------------------------------------------------------------
    Vector("connack-v31-refused", 3, h("20 02 00 05"), ConnAck(5)),
    Vector("connack-v311-session-present", 4, h("20 02 01 00"), ConnAck(0, True)),
    Vector("connack-v5-refused", 5, h("20 03 00 87 00"), ConnAck(0x87)),
    Vector(
        "connack-v5-properties",
        5,
        h(
            "20 18 00 00 15 12 00 03 61 62 63 22 00 0A 24 01 25 00 13 00 3C"
            " 1F 00 02 6F 6B"
        ),
        ConnAck(0, False, {0x12: "abc", 0x22: 10, 0x24: 1, 0x25: 0, 0x13: 60, 0x1F: "ok"}),
    ),
    # -- PUBLISH ---------------------------------------------------------------------
    Vector("publish-v31-qos0", 3, h("30 05 00 01 74 68 69"), Publish("t", b"hi")),
    Vector(
        "publish-v311-qos0", 4, h("30 0A 00 03 61 2F 62 68 65 6C 6C 6F"), Publish("a/b", b"hello")
    ),
    Vector(
        "publish-v311-qos1-dup-retain",
        4,
        h("3B 06 00 01 74 00 0A 78"),
        Publish("t", b"x", 1, True, True, 10),
    ),
    Vector(
        "publish-v311-qos2-empty-payload",
        4,
        h("34 05 00 01 74 FF FF"),
        Publish("t", b"", 2, packet_id=65535),
    ),
    Vector("publish-v5-no-properties", 5, h("30 07 00 03 61 2F 62 00 7A"), Publish("a/b", b"z")),
    Vector(
        "publish-v5-qos1-properties",
        5,
        h(
            "32 37 00 03 61 2F 62 00 01 2D 01 01 02 00 00 00 78 23 00 05"
            " 08 00 05 72 65 70 6C 79 09 00 01 2A 26 00 01 6B 00 01 76 0B 81 01"
            " 03 00 0A 74 65 78 74 2F 70 6C 61 69 6E 68 69"
        ),
        Publish(
            "a/b",
            b"hi",
            1,
            False,
            False,
            1,
            {
                0x01: 1,
                0x02: 120,
                0x23: 5,
                0x08: "reply",
                0x09: b"*",
                0x26: [("k", "v")],
                0x0B: [129],
                0x03: "text/plain",
            },
        ),
    ),
    Vector(
        "publish-v5-topic-alias-two-subscription-ids",
        5,
        h("30 0A 00 00 07 0B 01 0B 02 23 00 07"),
        Publish("", b"", properties={0x0B: [1, 2], 0x23: 7}),
    ),
    # -- PUBACK, PUBREC, PUBREL, PUBCOMP ---------------------------------------------
    Vector("puback-v31", 3, h("40 02 12 34"), PubAck(0x1234)),
    Vector("puback-v311", 4, h("40 02 00 01"), PubAck(1)),
    Vector("pubrec-v311", 4, h("50 02 00 02"), PubRec(2)),
    Vector("pubrel-v311", 4, h("62 02 00 03"), PubRel(3)),
    Vector("pubcomp-v311", 4, h("70 02 00 04"), PubComp(4)),
    Vector("puback-v5-short", 5, h("40 02 00 01"), PubAck(1)),
    Vector("puback-v5-reason-code", 5, h("40 03 00 01 10"), PubAck(1, 0x10)),
    Vector(
        "puback-v5-reason-code-properties",
        5,
        h("40 14 00 01 87 10 1F 00 06 64 65 6E 69 65 64 26 00 01 61 00 01 62"),
        PubAck(1, 0x87, {0x1F: "denied", 0x26: [("a", "b")]}),
    ),
    Vector(
        "puback-v5-explicit-success-empty-properties",
        5,
        h("40 04 00 01 00 00"),
        PubAck(1),
        encoded=h("40 02 00 01"),
    ),
    Vector("pubrec-v5-reason-code", 5, h("50 03 00 05 80"), PubRec(5, 0x80)),
    Vector("pubrel-v5-reason-code", 5, h("62 03 00 06 92"), PubRel(6, 0x92)),
    Vector(
        "pubcomp-v5-reason-string",
        5,
        h("70 08 00 07 92 04 1F 00 01 78"),
        PubComp(7, 0x92, {0x1F: "x"}),
    ),
    # -- SUBSCRIBE, SUBACK, UNSUBSCRIBE, UNSUBACK ------------------------------------
    Vector(
        "subscribe-v31", 3, h("82 06 00 01 00 01 78 00"), Subscribe(1, [Subscription("x")])
    ),
    Vector(
        "subscribe-v311",
        4,
        h("82 0C 00 0A 00 03 61 2F 2B 01 00 01 23 02"),
        Subscribe(10, [Subscription("a/+", 1), Subscription("#", 2)]),
    ),
    Vector(
        "subscribe-v5-options-and-properties",
        5,
        h(
            "82 1C 00 0B 09 0B 05 26 00 01 6B 00 01 76"
            " 00 03 61 2F 62 2D 00 03 63 2F 23 12 00 01 2B 00"
        ),
        Subscribe(
            11,
            [
                Subscription("a/b", 1, no_local=True, retain_as_published=True, retain_handling=2),
                Subscription("c/#", 2, retain_handling=1),
                Subscription("+"),
            ],
            {0x0B: [5], 0x26: [("k", "v")]},
        ),
    ),
    Vector("suback-v311", 4, h("90 05 00 0A 01 02 80"), SubAck(10, [1, 2, 0x80])),
    Vector("suback-v5-no-properties", 5, h("90 04 00 0C 00 02"), SubAck(12, [2])),
    Vector(
        "suback-v5-reason-codes",
        5,
        h("90 12 00 0B 05 1F 00 02 6E 6F 00 01 02 87 8F 91 97 9E A1 A2"),
        SubAck(
            11,
            [0x00, 0x01, 0x02, 0x87, 0x8F, 0x91, 0x97, 0x9E, 0xA1, 0xA2],
            {0x1F: "no"},
        ),
    ),
    Vector(
        "unsubscribe-v311",
        4,
        h("A2 0A 00 0C 00 03 61 2F 62 00 01 23"),
        Unsubscribe(12, ["a/b", "#"]),
    ),
    Vector(
        "unsubscribe-v5",
        5,
        h("A2 0F 00 0D 07 26 00 01 6B 00 01 76 00 03 78 2F 2B"),
        Unsubscribe(13, ["x/+"], {0x26: [("k", "v")]}),
    ),
    Vector("unsuback-v311", 4, h("B0 02 00 0C"), UnsubAck(12)),
    Vector(
        "unsuback-v5-reason-codes",
        5,
        h("B0 0D 00 0D 06 1F 00 03 62 61 64 00 11 87 8F"),
        UnsubAck(13, [0x00, 0x11, 0x87, 0x8F], {0x1F: "bad"}),
    ),
    # -- PINGREQ, PINGRESP -----------------------------------------------------------
    *(Vector(f"pingreq-level{level}", level, h("C0 00"), PingReq()) for level in (3, 4, 5)),
    *(Vector(f"pingresp-level{level}", level, h("D0 00"), PingResp()) for level in (3, 4, 5)),
    # -- DISCONNECT ------------------------------------------------------------------
    Vector("disconnect-v31", 3, h("E0 00"), Disconnect()),
    Vector("disconnect-v311", 4, h("E0 00"), Disconnect()),
    Vector("disconnect-v5-short", 5, h("E0 00"), Disconnect()),
    Vector("disconnect-v5-reason-code", 5, h("E0 01 04"), Disconnect(4)),
    Vector(
        "disconnect-v5-reason-code-properties",
        5,
        h(
            "E0 16 8B 14 11 00 00 00 00 1F 00 04 62 79 65 21"
            " 1C 00 05 6F 74 68 65 72"
        ),
        Disconnect(0x8B, {0x11: 0, 0x1F: "bye!", 0x1C: "other"}),
    ),
    Vector(
        "disconnect-v5-explicit-normal-empty-properties",
        5,
        h("E0 02 00 00"),
        Disconnect(),
        encoded=h("E0 00"),
    ),
    # -- AUTH ------------------------------------------------------------------------
    Vector("auth-v5-short", 5, h("F0 00"), Auth()),
    Vector(
        "auth-v5-continue",
        5,
        h("F0 14 18 12 15 00 05 53 43 52 41 4D 16 00 03 01 02 03 1F 00 01 72"),
        Auth(0x18, {0x15: "SCRAM", 0x16: b"\x01\x02\x03", 0x1F: "r"}),
    ),
]


def _decoder_for(vector: Vector) -> Decoder:
    # a CONNECT goes to a fresh server decoder, which learns the level from it
    if isinstance(vector.packet, Connect):
        return Decoder(Role.SERVER)
    return Decoder(Role.ANY, protocol_level=vector.level)


def _ids(vectors: list[Vector]) -> list[str]:
    return [v.name for v in vectors]


def test_every_packet_type_has_a_vector() -> None:
    assert {type(v.packet) for v in VECTORS} == {
        Connect, ConnAck, Publish, PubAck, PubRec, PubRel, PubComp, Subscribe, SubAck,
        Unsubscribe, UnsubAck, PingReq, PingResp, Disconnect, Auth,
    }
    assert {v.level for v in VECTORS if isinstance(v.packet, Connect)} == {3, 4, 5}


@pytest.mark.parametrize("vector", VECTORS, ids=_ids(VECTORS))
def test_decode_whole(vector: Vector) -> None:
    decoder = _decoder_for(vector)
    decoder.feed(vector.wire)
    assert decoder.next_packet() == vector.packet
    assert decoder.buffered == 0
    assert decoder.next_packet() is None
    assert decoder.protocol_level == vector.level


@pytest.mark.parametrize("vector", VECTORS, ids=_ids(VECTORS))
def test_encode_exact_bytes(vector: Vector) -> None:
    expected = vector.wire if vector.encoded is None else vector.encoded
    assert encode(vector.packet, vector.level) == expected


@pytest.mark.parametrize("vector", VECTORS, ids=_ids(VECTORS))
def test_decode_byte_by_byte(vector: Vector) -> None:
    decoder = _decoder_for(vector)
    for index in range(len(vector.wire) - 1):
        decoder.feed(vector.wire[index : index + 1])
        assert decoder.next_packet() is None, f"a packet after {index + 1} bytes"
    decoder.feed(vector.wire[-1:])
    assert decoder.next_packet() == vector.packet
    assert decoder.buffered == 0


@pytest.mark.parametrize("vector", VECTORS, ids=_ids(VECTORS))
def test_decode_with_trailing_packet(vector: Vector) -> None:
    decoder = _decoder_for(vector)
    decoder.feed(vector.wire + PINGREQ[:1])
    assert decoder.next_packet() == vector.packet
    assert decoder.buffered == 1
    assert decoder.next_packet() is None
    decoder.feed(PINGREQ[1:])
    assert decoder.next_packet() == PingReq()
    assert decoder.buffered == 0


def test_three_packets_in_one_feed() -> None:
    decoder = Decoder(Role.SERVER)
    decoder.feed(
        h("10 0C 00 04 4D 51 54 54 04 02 00 3C 00 00")
        + h("30 05 00 01 74 68 69")
        + h("C0 00")
    )
    assert decoder.next_packet() == Connect("", 4, True, 60)
    assert decoder.next_packet() == Publish("t", b"hi")
    assert decoder.next_packet() == PingReq()
    assert decoder.next_packet() is None


# -- invalid vectors -----------------------------------------------------------------

CONNECT_WIRE = {
    3: h("10 0E 00 06 4D 51 49 73 64 70 03 02 00 3C 00 00"),
    4: h("10 0C 00 04 4D 51 54 54 04 02 00 3C 00 00"),
    5: h("10 0D 00 04 4D 51 54 54 05 02 00 3C 00 00 00"),
}

MALFORMED = MalformedPacket, ReasonCode.MALFORMED_PACKET
PROTOCOL = ProtocolViolation, ReasonCode.PROTOCOL_ERROR
UNSUPPORTED = UnsupportedProtocolVersion, ReasonCode.UNSUPPORTED_PROTOCOL_VERSION
FILTER_INVALID = RemoteProtocolError, ReasonCode.TOPIC_FILTER_INVALID
NAME_INVALID = RemoteProtocolError, ReasonCode.TOPIC_NAME_INVALID


@dataclass(frozen=True)
class Invalid:
    name: str
    #: "new": a fresh server decoder; 3/4/5: a server decoder after a CONNECT at that
    #: level; ("client", level): a client decoder at that level
    context: str | int | tuple[str, int]
    wire: bytes
    error: tuple[type[RemoteProtocolError], ReasonCode]


INVALID = [
    # fixed header
    Invalid("remaining-length-5-bytes", 4, h("30 80 80 80 80 01"), MALFORMED),
    Invalid("subscribe-flags-0x80", 4, h("80 06 00 01 00 01 78 00"), MALFORMED),
    Invalid("pubrel-flags-0x60", 4, h("60 02 00 01"), MALFORMED),
    Invalid("connect-flags-0x12", "new", h("12 0C 00 04 4D 51 54 54 04 02 00 3C 00 00"),
            MALFORMED),
    Invalid("packet-type-0", 4, h("00 00"), MALFORMED),
    Invalid("packet-type-0-first", "new", h("00 00"), MALFORMED),
    Invalid("pingreq-remaining-length-1", 4, h("C0 01 00"), MALFORMED),
    Invalid("disconnect-v311-remaining-length-1", 4, h("E0 01 00"), MALFORMED),
    Invalid("puback-v311-trailing-byte", 4, h("40 03 00 01 00"), MALFORMED),
    # PUBLISH
    Invalid("publish-qos-3", 4, h("36 05 00 01 74 00 01"), MALFORMED),
    Invalid("publish-qos0-dup", 4, h("38 03 00 01 74"), MALFORMED),
    Invalid("publish-qos1-packet-id-0", 4, h("32 05 00 01 74 00 00"), MALFORMED),
    Invalid("publish-qos1-no-packet-id", 4, h("32 03 00 01 74"), MALFORMED),
    Invalid("publish-topic-ill-formed-utf8", 4, h("30 04 00 02 C3 28"), MALFORMED),
    Invalid("publish-topic-encoded-surrogate", 4, h("30 05 00 03 ED A0 80"), MALFORMED),
    Invalid("publish-topic-overlong-nul", 4, h("30 04 00 02 C0 80"), MALFORMED),
    Invalid("publish-topic-u0000", 4, h("30 05 00 03 61 00 62"), MALFORMED),
    Invalid("publish-topic-plus", 4, h("30 05 00 03 61 2F 2B"), NAME_INVALID),
    Invalid("publish-v5-topic-hash", 5, h("30 04 00 01 23 00"), NAME_INVALID),
    Invalid("publish-v311-empty-topic", 4, h("30 02 00 00"), PROTOCOL),
    Invalid("publish-v5-empty-topic-without-alias", 5, h("30 03 00 00 00"), PROTOCOL),
    Invalid("publish-v5-no-property-length", 5, h("30 03 00 01 74"), MALFORMED),
    # packet identifiers
    Invalid("subscribe-packet-id-0", 4, h("82 06 00 00 00 01 78 00"), MALFORMED),
    Invalid("unsubscribe-packet-id-0", 4, h("A2 05 00 00 00 01 78"), MALFORMED),
    Invalid("puback-packet-id-0", 4, h("40 02 00 00"), MALFORMED),
    Invalid("puback-v5-packet-id-0", 5, h("40 03 00 00 00"), MALFORMED),
    # SUBSCRIBE and UNSUBSCRIBE
    Invalid("subscribe-filter-hash-not-last", 4, h("82 0A 00 01 00 05 61 2F 23 2F 62 00"),
            FILTER_INVALID),
    Invalid("subscribe-filter-plus-in-level", 4, h("82 07 00 01 00 02 61 2B 00"),
            FILTER_INVALID),
    Invalid("subscribe-filter-hash-in-level", 4, h("82 07 00 01 00 02 23 61 00"),
            FILTER_INVALID),
    Invalid("subscribe-filter-empty", 4, h("82 05 00 01 00 00 00"), FILTER_INVALID),
    Invalid("unsubscribe-filter-hash-not-last", 4, h("A2 09 00 01 00 05 61 2F 23 2F 62"),
            FILTER_INVALID),
    Invalid("subscribe-no-filters", 4, h("82 02 00 01"), PROTOCOL),
    Invalid("subscribe-v5-no-filters", 5, h("82 03 00 01 00"), PROTOCOL),
    Invalid("unsubscribe-no-filters", 4, h("A2 02 00 01"), PROTOCOL),
    Invalid("subscribe-no-options-byte", 4, h("82 05 00 01 00 01 78"), MALFORMED),
    Invalid("subscribe-v5-reserved-bit-6", 5, h("82 07 00 01 00 00 01 78 40"), MALFORMED),
    Invalid("subscribe-v5-reserved-bit-7", 5, h("82 07 00 01 00 00 01 78 80"), MALFORMED),
    Invalid("subscribe-v5-retain-handling-3", 5, h("82 07 00 01 00 00 01 78 30"), PROTOCOL),
    Invalid("subscribe-v5-qos-3", 5, h("82 07 00 01 00 00 01 78 03"), PROTOCOL),
    Invalid("subscribe-v311-reserved-bits", 4, h("82 06 00 01 00 01 78 04"), MALFORMED),
    Invalid("subscribe-v311-qos-3", 4, h("82 06 00 01 00 01 78 03"), MALFORMED),
    Invalid("subscribe-v31-reserved-bits", 3, h("82 06 00 01 00 01 78 80"), MALFORMED),
    # properties
    Invalid("property-duplicate-message-expiry", 5,
            h("30 0E 00 01 74 0A 02 00 00 00 01 02 00 00 00 02"), PROTOCOL),
    # an identifier not valid for its packet type is a Malformed Packet (5.0 2.2.2.2)
    Invalid("property-session-expiry-in-publish", 5, h("30 09 00 01 74 05 11 00 00 00 01"),
            MALFORMED),
    Invalid("property-will-delay-in-connect", "new",
            h("10 12 00 04 4D 51 54 54 05 02 00 3C 05 18 00 00 00 01 00 00"), MALFORMED),
    Invalid("property-unknown-id-0x04", 5, h("30 06 00 01 74 02 04 00"), MALFORMED),
    Invalid("property-receive-maximum-0", "new",
            h("10 10 00 04 4D 51 54 54 05 02 00 3C 03 21 00 00 00 00"), PROTOCOL),
    Invalid("property-payload-format-indicator-2", 5, h("30 06 00 01 74 02 01 02"), PROTOCOL),
    Invalid("property-subscription-identifier-0", 5, h("82 09 00 01 02 0B 00 00 01 78 00"),
            PROTOCOL),
    Invalid("property-subscription-identifier-twice", 5,
            h("82 0B 00 01 04 0B 01 0B 02 00 01 78 00"), PROTOCOL),
    # truncation: a declared length past the end of the packet
    Invalid("truncated-publish-topic", 4, h("30 03 00 05 61"), MALFORMED),
    Invalid("truncated-connect-client-id", "new",
            h("10 0E 00 04 4D 51 54 54 04 02 00 3C 00 05 61 62"), MALFORMED),
    Invalid("truncated-connect-will-payload", "new",
            h("10 12 00 04 4D 51 54 54 04 06 00 3C 00 00 00 01 77 00 05 61"), MALFORMED),
    Invalid("truncated-connect-variable-header", "new", h("10 07 00 04 4D 51 54 54 04"),
            MALFORMED),
    Invalid("truncated-property-block", 5, h("30 06 00 01 74 05 01 01"), MALFORMED),
    Invalid("truncated-property-value", 5, h("30 06 00 01 74 02 02 00"), MALFORMED),
    Invalid("truncated-user-property", 5, h("40 08 00 01 00 04 26 00 05 61"), MALFORMED),
    # CONNECT and connection state
    Invalid("second-connect", 4, CONNECT_WIRE[4], PROTOCOL),
    Invalid("second-connect-v5", 5, CONNECT_WIRE[5], PROTOCOL),
    Invalid("first-packet-pingreq", "new", h("C0 00"), PROTOCOL),
    Invalid("first-packet-publish", "new", h("30 05 00 01 74 68 69"), PROTOCOL),
    Invalid("first-packet-auth", "new", h("F0 00"), PROTOCOL),
    Invalid("auth-on-v311", 4, h("F0 00"), MALFORMED),
    Invalid("auth-on-v31", 3, h("F0 00"), MALFORMED),
    Invalid("connect-reserved-flag", "new", h("10 0C 00 04 4D 51 54 54 04 03 00 3C 00 00"),
            MALFORMED),
    Invalid("connect-will-qos-3", "new",
            h("10 11 00 04 4D 51 54 54 04 1E 00 3C 00 00 00 01 77 00 00"), MALFORMED),
    Invalid("connect-will-retain-without-will", "new",
            h("10 0C 00 04 4D 51 54 54 04 22 00 3C 00 00"), MALFORMED),
    Invalid("connect-will-qos-without-will", "new",
            h("10 0C 00 04 4D 51 54 54 04 0A 00 3C 00 00"), MALFORMED),
    Invalid("connect-v311-password-without-username", "new",
            h("10 10 00 04 4D 51 54 54 04 42 00 3C 00 00 00 02 70 77"), MALFORMED),
    Invalid("connect-v31-password-without-username", "new",
            h("10 12 00 06 4D 51 49 73 64 70 03 42 00 3C 00 00 00 02 70 77"), MALFORMED),
    Invalid("connect-client-id-u0000", "new",
            h("10 0E 00 04 4D 51 54 54 04 02 00 3C 00 02 61 00"), MALFORMED),
    Invalid("connect-will-topic-wildcard", "new",
            h("10 11 00 04 4D 51 54 54 04 06 00 3C 00 00 00 01 23 00 00"), NAME_INVALID),
    Invalid("connect-unknown-level-6", "new", h("10 0C 00 04 4D 51 54 54 06 02 00 3C 00 00"),
            UNSUPPORTED),
    Invalid("connect-mqtt-level-3", "new", h("10 0C 00 04 4D 51 54 54 03 02 00 3C 00 00"),
            UNSUPPORTED),
    Invalid("connect-mqisdp-level-4", "new",
            h("10 0E 00 06 4D 51 49 73 64 70 04 02 00 3C 00 00"), UNSUPPORTED),
    Invalid("connect-unknown-protocol-name", "new",
            h("10 0C 00 04 4D 51 54 58 04 02 00 3C 00 00"), UNSUPPORTED),
    # direction
    Invalid("server-receives-connack", 4, h("20 02 00 00"), PROTOCOL),
    Invalid("server-receives-suback", 5, h("90 04 00 01 00 00"), PROTOCOL),
    Invalid("client-receives-subscribe", ("client", 4), h("82 06 00 01 00 01 78 00"), PROTOCOL),
    Invalid("client-receives-pingreq", ("client", 5), h("C0 00"), PROTOCOL),
    Invalid("client-receives-auth-v311", ("client", 4), h("F0 00"), MALFORMED),
    Invalid("connack-reserved-flags", ("client", 4), h("20 02 02 00"), MALFORMED),
]


def _decoder_in(context: str | int | tuple[str, int], max_packet_size: int | None = None
                ) -> Decoder:
    kwargs = {} if max_packet_size is None else {"max_packet_size": max_packet_size}
    if isinstance(context, tuple):
        return Decoder(Role.CLIENT, protocol_level=context[1], **kwargs)
    decoder = Decoder(Role.SERVER, **kwargs)
    if isinstance(context, int):
        decoder.feed(CONNECT_WIRE[context])
        connect = decoder.next_packet()
        assert isinstance(connect, Connect)
        assert connect.protocol_level == context
    return decoder


@pytest.mark.parametrize("case", INVALID, ids=[c.name for c in INVALID])
def test_invalid(case: Invalid) -> None:
    error, code = case.error
    decoder = _decoder_in(case.context)
    decoder.feed(case.wire)
    with pytest.raises(error) as info:
        decoder.next_packet()
    assert type(info.value) is error
    assert info.value.reason_code == code


def test_invalid_names_are_unique() -> None:
    assert len({c.name for c in INVALID}) == len(INVALID)
    assert len({v.name for v in VECTORS}) == len(VECTORS)


def test_remaining_length_error_needs_no_fifth_length_byte() -> None:
    decoder = _decoder_in(4)
    decoder.feed(h("30 80 80 80"))
    assert decoder.next_packet() is None
    decoder.feed(h("80"))
    with pytest.raises(MalformedPacket) as info:
        decoder.next_packet()
    assert info.value.reason_code == ReasonCode.MALFORMED_PACKET


def test_packet_too_large_from_the_fixed_header_alone() -> None:
    # 200 MiB = 209_715_200 = 0x0C800000: remaining length 80 80 80 64
    decoder = _decoder_in(4, max_packet_size=1 << 20)
    header = h("30 80 80 80 64")
    for byte in header[:-1]:
        decoder.feed(bytes((byte,)))
        assert decoder.next_packet() is None
    decoder.feed(header[-1:])
    with pytest.raises(PacketTooLarge) as info:
        decoder.next_packet()
    assert info.value.reason_code == ReasonCode.PACKET_TOO_LARGE
    assert (info.value.size, info.value.maximum) == (209_715_205, 1 << 20)
    assert decoder.buffered == 5


@pytest.mark.parametrize(("limit", "fits"), [(7, True), (6, False)])
def test_packet_size_limit_counts_the_fixed_header(limit: int, fits: bool) -> None:
    decoder = Decoder(Role.ANY, protocol_level=4, max_packet_size=limit)
    decoder.feed(h("30 05 00 01 74 68 69"))
    if fits:
        assert decoder.next_packet() == Publish("t", b"hi")
        return
    with pytest.raises(PacketTooLarge) as info:
        decoder.next_packet()
    assert (info.value.size, info.value.maximum) == (7, 6)


def test_protocol_level_is_learnt_from_connect() -> None:
    decoder = Decoder(Role.SERVER)
    assert decoder.protocol_level is None
    decoder.feed(CONNECT_WIRE[5])
    assert decoder.next_packet() == Connect("", 5, True, 60)
    assert decoder.protocol_level == 5
    # a v5 PUBACK with a reason code only parses as v5 now
    decoder.feed(h("40 03 00 01 10"))
    assert decoder.next_packet() == PubAck(1, 0x10)


@pytest.mark.parametrize(
    ("packet", "level"),
    [
        (Publish("t", b"", 1), 4),
        (Publish("t", b"", 3, packet_id=1), 4),
        (Auth(), 4),
        (Connect("c", 4, will=Will("t", b"", 3)), 4),
        (Publish("t", properties={0x11: 1}), 5),
        (Publish("t", properties={0x04: 1}), 5),
    ],
    ids=["qos1-no-packet-id", "qos-3", "auth-v311", "will-qos-3", "property-not-allowed",
         "property-unknown"],
)
def test_encoder_refuses(packet: Packet, level: int) -> None:
    with pytest.raises(LocalProtocolError) as info:
        encode(packet, level)
    assert info.value.reason_code == ReasonCode.IMPLEMENTATION_SPECIFIC_ERROR


@pytest.mark.parametrize("wrap", [bytearray, memoryview], ids=["bytearray", "memoryview"])
def test_feed_does_not_alias_the_callers_buffer(wrap: type[bytearray] | type[memoryview]
                                                ) -> None:
    decoder = Decoder(Role.ANY, protocol_level=4)
    first = bytearray(h("30 05 00 01 74"))
    decoder.feed(wrap(first))
    assert decoder.next_packet() is None
    first[:] = h("FF FF FF FF FF")  # the caller reuses its receive buffer
    decoder.feed(wrap(bytearray(h("68 69"))))
    assert decoder.next_packet() == Publish("t", b"hi")
    assert first == bytearray(h("FF FF FF FF FF"))


@pytest.mark.parametrize("kind", [PubAck, PubRec, PubRel, PubComp])
@pytest.mark.parametrize("level", [3, 4, 5])
@pytest.mark.parametrize("packet_id", [1, 513, 65535])
def test_plain_ack_is_the_encoded_packet(kind: type[Any], level: int, packet_id: int) -> None:
    # the broker's shortcut for reason-0 acknowledgements writes what encode() would
    assert plain_ack(kind, packet_id) == encode(kind(packet_id), level)
