"""Wire primitives: variable byte integers, UTF-8 strings, binary data, topic rules.

The rule: every read is bounded by an explicit end and raises MalformedPacket when the
data runs out, so no caller ever sees an IndexError or a UnicodeDecodeError.
"""

from __future__ import annotations

from ._errors import LocalProtocolError, MalformedPacket, ProtocolViolation, RemoteProtocolError
from ._reasons import ReasonCode

MAX_VARINT = 268_435_455


def read_varint(buf: bytes | bytearray, pos: int, end: int) -> tuple[int, int]:
    value = 0
    shift = 0
    for _ in range(4):
        if pos >= end:
            raise MalformedPacket("variable byte integer is truncated")
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7
    raise MalformedPacket("variable byte integer is longer than 4 bytes")


def encode_varint(value: int) -> bytes:
    if value < 128:
        if value < 0:
            raise LocalProtocolError(f"variable byte integer {value} is negative")
        return bytes((value,))
    if value > MAX_VARINT:
        raise LocalProtocolError(f"variable byte integer {value} exceeds {MAX_VARINT}")
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def read_u16(buf: bytes | bytearray, pos: int, end: int) -> tuple[int, int]:
    if pos + 2 > end:
        raise MalformedPacket("two byte integer is truncated")
    return (buf[pos] << 8) | buf[pos + 1], pos + 2


def read_binary(buf: bytes | bytearray, pos: int, end: int) -> tuple[bytes, int]:
    if pos + 2 > end:
        raise MalformedPacket("binary data length is truncated")
    stop = pos + 2 + ((buf[pos] << 8) | buf[pos + 1])
    if stop > end:
        raise MalformedPacket("binary data runs past the end of the packet")
    return bytes(buf[pos + 2 : stop]), stop


def read_string(buf: bytes | bytearray, pos: int, end: int) -> tuple[str, int]:
    if pos + 2 > end:
        raise MalformedPacket("string length is truncated")
    stop = pos + 2 + ((buf[pos] << 8) | buf[pos + 1])
    if stop > end:
        raise MalformedPacket("string runs past the end of the packet")
    return decode_utf8(buf[pos + 2 : stop]), stop


def decode_utf8(raw: bytes | bytearray) -> str:
    """Decode a UTF-8 string as MQTT defines it: well-formed, no surrogates, no U+0000."""
    try:
        # Python's strict UTF-8 codec already rejects encoded surrogates and overlongs.
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise MalformedPacket(
            f"ill-formed UTF-8 string: {exc.reason} at byte {exc.start}"
        ) from None
    if "\x00" in text:
        raise MalformedPacket("UTF-8 string contains U+0000")
    return text


def encode_string(text: str) -> bytes:
    try:
        raw = text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise LocalProtocolError(f"string {text!r} is not encodable as UTF-8") from exc
    if len(raw) > 0xFFFF:
        raise LocalProtocolError(f"string of {len(raw)} bytes exceeds 65535")
    return len(raw).to_bytes(2, "big") + raw


def encode_binary(data: bytes) -> bytes:
    if len(data) > 0xFFFF:
        raise LocalProtocolError(f"binary data of {len(data)} bytes exceeds 65535")
    return len(data).to_bytes(2, "big") + bytes(data)


def check_topic_name(topic: str) -> None:
    """A topic name to publish to: non-empty, no wildcard characters."""
    if not topic:
        raise ProtocolViolation("topic name is empty")
    if "+" in topic or "#" in topic:
        raise RemoteProtocolError(
            ReasonCode.TOPIC_NAME_INVALID, f"topic name {topic!r} contains a wildcard character"
        )


def check_topic_filter(topic_filter: str) -> None:
    """A topic filter: non-empty; '+' fills a whole level; '#' is a whole, last level."""
    if not topic_filter:
        raise RemoteProtocolError(ReasonCode.TOPIC_FILTER_INVALID, "topic filter is empty")
    if topic_filter.startswith("$share/"):
        # a shared subscription: the broker judges the share name (and answers a bad one
        # in the SUBACK, 0x8F); only the filter after it is checked here
        _, sep, topic_filter = topic_filter[7:].partition("/")
        if not sep or not topic_filter:
            return
    if "+" not in topic_filter and "#" not in topic_filter:
        return
    levels = topic_filter.split("/")
    last = len(levels) - 1
    for index, level in enumerate(levels):
        if level in ("+", "#"):
            if level == "#" and index != last:
                raise RemoteProtocolError(
                    ReasonCode.TOPIC_FILTER_INVALID,
                    f"topic filter {topic_filter!r}: '#' must be the last level",
                )
        elif "+" in level or "#" in level:
            raise RemoteProtocolError(
                ReasonCode.TOPIC_FILTER_INVALID,
                f"topic filter {topic_filter!r}: a wildcard must occupy a whole level",
            )
