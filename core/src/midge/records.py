"""Typed storage records: the state that outlives the broker process, and its bytes.

The rule: a record holds only what a restart needs, with wall-clock times (a monotonic
clock means nothing in the next process), and its serialisation is byte-exact (payloads
as given, v5 properties in the wire encoding, so user properties keep their order and
duplicates). No I/O here: a storage backend (``Storage``) stores what ``Batch`` says and
gives it back as a ``Snapshot``; ``Batch.items`` and ``snapshot_from_items`` map both to
plain (group, field, value) byte triples for key-value backends. Deliveries, the one
record made per message, travel pre-encoded: the journal encodes each once, when it
takes its batch, straight from the engine's objects.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from .codec import (
    WILL,
    MalformedPacket,
    PacketType,
    Properties,
    Subscription,
    decode_properties,
    encode_properties,
)
from .errors import PluginConfigError

#: the on-disk format this midge writes; a store with a newer one is refused
FORMAT_VERSION = 1

Durability = Literal["sync", "periodic"]


class StorageError(Exception):
    """A storage backend cannot open, read or write its store (the message says why)."""


# -- records -------------------------------------------------------------------------------


@dataclass(slots=True)
class MessageRecord:
    """An application message as stored: what was published, when (wall clock).

    Read-only by convention (made once per stored message, so not frozen: see
    DeliveryRecord)."""

    topic: str
    payload: bytes
    qos: int
    retain: bool
    #: v5 PUBLISH properties (user properties in order, duplicates kept)
    properties: Properties
    #: client id of the publisher ("" for the broker itself)
    origin: str
    #: wall-clock time it was published
    created: float
    #: wall-clock time its Message Expiry Interval ends (None: never)
    expires: float | None = None
    #: its encoding, made once (a message queued to many sessions, or stored again
    #: with a new packet id, is encoded once)
    _encoded: bytes | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class WillRecord:
    """The will of a persistent session's last connection, not yet published."""

    topic: str
    payload: bytes
    qos: int
    retain: bool
    #: v5 will properties (Will Delay Interval included)
    properties: Properties
    #: wall-clock time a delayed will falls due (None: the connection was still open
    #: at the last commit; its delay then counts from the restart)
    due: float | None = None


@dataclass(frozen=True, slots=True)
class SessionRecord:
    """A session that outlives its connection (Session Expiry Interval not 0)."""

    client_id: str
    #: seconds it survives its connection (None: forever)
    expiry_interval: int | None
    #: wall-clock time its connection ended (None: connected at the last commit)
    disconnected_at: float | None = None
    #: the user name of the connection that owns it
    username: str | None = None
    protocol_level: int = 4
    will: WillRecord | None = None


@dataclass(frozen=True, slots=True)
class SubscriptionRecord:
    """One subscription of a persistent session, with its options and identifier."""

    client_id: str
    subscription: Subscription
    identifier: int = 0


@dataclass(slots=True)
class DeliveryRecord:
    """A QoS 1/2 delivery to a persistent session: queued (packet id 0) or inflight.

    Read-only by convention, like the other records (not frozen only because one is made
    per delivery change, and a frozen dataclass costs three times as much to make)."""

    client_id: str
    #: position in the session's queue (increasing in delivery order)
    order: int
    message: MessageRecord
    qos: int
    retain: bool
    subscription_ids: tuple[int, ...] = ()
    #: 0 while queued; else the packet id it was sent with
    packet_id: int = 0
    #: QoS 2: PUBREC received and PUBREL sent (waiting for PUBCOMP)
    released: bool = False


@dataclass(slots=True)
class Batch:
    """The durable changes of one or more event-loop turns, committed as one unit.

    A backend applies ``cleared`` first (each session's record and everything it owns:
    subscriptions, deliveries, inbound packet ids), then every entry of the dicts: a
    record is stored (replacing the one with the same key), None deletes it.
    """

    seq: int
    cleared: set[str] = field(default_factory=set)
    sessions: dict[str, SessionRecord | None] = field(default_factory=dict)
    subscriptions: dict[tuple[str, str], SubscriptionRecord | None] = field(default_factory=dict)
    #: (client id, order) -> a record, or its encoding (what ``encode_delivery`` makes of
    #: it: the journal hands its deliveries over encoded), or None to delete
    deliveries: dict[tuple[str, int], DeliveryRecord | bytes | None] = field(
        default_factory=dict)
    #: of the deliveries stored, those no earlier batch stored: a backend that keeps a
    #: log may forget one whose delete comes before the log reaches its table (a hint;
    #: ignoring it is always correct)
    created: set[tuple[str, int]] = field(default_factory=set)
    #: (client id, packet id) of inbound QoS 2 PUBLISHes awaiting PUBREL: True stored,
    #: False released
    inbound: dict[tuple[str, int], bool] = field(default_factory=dict)
    retained: dict[str, MessageRecord | None] = field(default_factory=dict)
    #: sys info counters to continue from (None: unchanged)
    counters: dict[str, int] | None = None

    def __len__(self) -> int:
        return (len(self.cleared) + len(self.sessions) + len(self.subscriptions)
                + len(self.deliveries) + len(self.inbound) + len(self.retained)
                + (self.counters is not None))

    def delivery_records(self) -> list[tuple[tuple[str, int], DeliveryRecord | None]]:
        """The deliveries as records (the encoded ones decoded), for a backend that
        keeps records rather than bytes."""
        return [(key, decode_delivery(*key, value) if isinstance(value, bytes) else value)
                for key, value in self.deliveries.items()]

    def items(self, deliveries: bool = True) -> tuple[
            list[bytes], Iterator[tuple[bytes, bytes, bytes | None]]]:
        """This batch for a key-value store: the groups to delete whole (the cleared
        sessions' children), then (group, field, value or None to delete) triples, made
        as they are read (once: a batch of thousands of changes needs no list of
        thousands of tuples, which the garbage collector would count and visit).
        ``deliveries=False`` leaves the deliveries out, for a backend that writes them
        itself (``child_group`` and ``delivery_field`` make their keys)."""
        return [child_group(cid) for cid in self.cleared], self._triples(deliveries)

    def _triples(self, deliveries: bool) -> Iterator[tuple[bytes, bytes, bytes | None]]:
        for cid in self.cleared:
            if cid not in self.sessions:
                yield SESSIONS, cid.encode(), None
        for cid, session in self.sessions.items():
            yield SESSIONS, cid.encode(), None if session is None else encode_session(session)
        for (cid, topic_filter), sub in self.subscriptions.items():
            yield (child_group(cid), b"u" + topic_filter.encode(),
                   None if sub is None else encode_subscription(sub))
        children: dict[str, bytes] = {}
        name = _ORDER.pack
        last: str | None = None
        group = b""
        for (cid, order), delivery in self.deliveries.items() if deliveries else ():
            if cid != last:  # runs of one session's deliveries are the common case
                known = children.get(cid)
                group = known if known is not None else children.setdefault(
                    cid, child_group(cid))
                last = cid
            if isinstance(delivery, DeliveryRecord):
                delivery = encode_delivery(delivery)
            yield group, name(b"d", order), delivery
        for (cid, pid), present in self.inbound.items():
            yield child_group(cid), b"i" + pid.to_bytes(2, "big"), b"" if present else None
        for topic, message in self.retained.items():
            yield (RETAINED, topic.encode(),
                   None if message is None else encode_message(message))
        if self.counters is not None:
            yield META, b"counters", encode_counters(self.counters)


@dataclass(slots=True)
class Snapshot:
    """Everything a store holds, as the broker reads it once at start."""

    sessions: list[SessionRecord] = field(default_factory=list)
    subscriptions: list[SubscriptionRecord] = field(default_factory=list)
    #: per session in ``order``
    deliveries: list[DeliveryRecord] = field(default_factory=list)
    inbound: list[tuple[str, int]] = field(default_factory=list)
    retained: list[MessageRecord] = field(default_factory=list)
    counters: dict[str, int] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.sessions or self.retained or self.counters)


class Storage(Protocol):
    """A storage backend, as a storage plugin's ``storage_backend`` hook returns it.

    ``open`` raises StorageError when the store cannot be used (naming it and the cause);
    ``commit`` applies a Batch atomically and durably (one sync) or raises; the broker
    retries a failed commit with backoff and holds the acknowledgements that need it.
    """

    #: for log lines and errors: the backend and where it keeps its data
    name: str
    durability: Durability
    #: seconds between commits with ``durability = "periodic"``
    flush_interval: float

    async def open(self) -> None: ...

    async def load(self) -> Snapshot: ...

    async def commit(self, batch: Batch) -> None: ...

    async def close(self) -> None: ...


def storage_options(table: dict[str, Any]) -> tuple[Durability, float]:
    """The ``durability`` and ``flush_interval`` keys every storage plugin takes."""
    durability = table.get("durability", "sync")
    if durability not in ("sync", "periodic"):
        raise PluginConfigError("durability",
                                f"{durability!r} is not allowed; use \"sync\" or \"periodic\"")
    interval = table.get("flush_interval", 1.0)
    if isinstance(interval, bool) or not isinstance(interval, int | float) or not (
        0.001 <= interval <= 3600
    ):
        raise PluginConfigError("flush_interval",
                                f"{interval!r} is not a number of seconds in 0.001..3600")
    return durability, float(interval)


# -- key-value layout ----------------------------------------------------------------------

#: group of the session records (field: client id)
SESSIONS = b"S"
#: group of the retained messages (field: topic)
RETAINED = b"R"
#: group of the store's own data (fields: b"version", b"counters")
META = b"M"


def child_group(client_id: str) -> bytes:
    """The group of what a session owns: subscriptions (b"u" + filter), deliveries
    (``delivery_field``), inbound QoS 2 ids (b"i" + 2-byte packet id)."""
    raw = client_id.encode()
    return b"C" + len(raw).to_bytes(2, "big") + raw


_ORDER = struct.Struct(">cQ")


def delivery_field(order: int) -> bytes:
    """The field of a delivery in its session's group: b"d" + its 8-byte order."""
    return _ORDER.pack(b"d", order)


def snapshot_from_items(items: Iterable[tuple[bytes, bytes, bytes]]) -> Snapshot:
    """A Snapshot from every (group, field, value) a key-value store holds."""
    snap = Snapshot()
    deliveries: list[DeliveryRecord] = []
    for group, name, value in items:
        if group == SESSIONS:
            snap.sessions.append(decode_session(name.decode(), value))
        elif group == RETAINED:
            snap.retained.append(decode_message(value))
        elif group == META:
            if name == b"counters":
                snap.counters = decode_counters(value)
        elif group[:1] == b"C":
            cid = group[3:].decode()
            kind = name[:1]
            if kind == b"u":
                snap.subscriptions.append(decode_subscription(cid, name[1:].decode(), value))
            elif kind == b"d":
                deliveries.append(decode_delivery(cid, int.from_bytes(name[1:], "big"), value))
            elif kind == b"i":
                snap.inbound.append((cid, int.from_bytes(name[1:], "big")))
    deliveries.sort(key=lambda d: (d.client_id, d.order))
    snap.deliveries = deliveries
    return snap


def check_version(stored: bytes | None, name: str) -> bool:
    """Whether a store must be initialised (True: empty); refuses a newer format."""
    if stored is None:
        return True
    try:
        version = int(stored)
    except ValueError:
        raise StorageError(f"{name}: format version {stored!r} is not a number") from None
    if version > FORMAT_VERSION:
        raise StorageError(
            f"{name}: written by a newer midge (format version {version}; this one reads "
            f"up to {FORMAT_VERSION}); refusing to start on it"
        )
    return False


# -- serialisation -------------------------------------------------------------------------
# Every value starts with a version byte, then fields in a fixed order: integers packed,
# strings and bytes length-prefixed, properties in their MQTT wire encoding.

_D = struct.Struct(">d")
_PUBLISH = int(PacketType.PUBLISH)


class _Writer:
    __slots__ = ("out",)

    def __init__(self) -> None:
        self.out = bytearray(b"\x01")

    def u(self, value: int, size: int = 4) -> None:
        self.out += value.to_bytes(size, "big")

    def f64(self, value: float | None) -> None:
        if value is None:
            self.out += b"\x00"
        else:
            self.out += b"\x01" + _D.pack(value)

    def blob(self, value: bytes) -> None:
        self.out += len(value).to_bytes(4, "big")
        self.out += value

    def text(self, value: str | None) -> None:
        if value is None:
            self.out += b"\xff\xff\xff\xff"
        else:
            self.blob(value.encode())

    def props(self, value: Properties, packet: int) -> None:
        self.out += encode_properties(value, packet)


class _Reader:
    __slots__ = ("buf", "pos")

    def __init__(self, buf: bytes) -> None:
        if buf[:1] != b"\x01":
            raise StorageError(f"record with unknown layout {buf[:1]!r}")
        self.buf = buf
        self.pos = 1

    def u(self, size: int = 4) -> int:
        pos = self.pos
        self.pos = pos + size
        return int.from_bytes(self.buf[pos:pos + size], "big")

    def f64(self) -> float | None:
        flag = self.buf[self.pos]
        self.pos += 1
        if not flag:
            return None
        (value,) = _D.unpack_from(self.buf, self.pos)
        self.pos += 8
        return float(value)

    def blob(self) -> bytes:
        size = self.u()
        pos = self.pos
        self.pos = pos + size
        return self.buf[pos:pos + size]

    def text(self) -> str | None:
        if self.buf[self.pos:self.pos + 4] == b"\xff\xff\xff\xff":
            self.pos += 4
            return None
        return self.blob().decode()

    def props(self, packet: int) -> Properties:
        try:
            props, self.pos = decode_properties(self.buf, self.pos, len(self.buf), packet)
        except MalformedPacket as exc:
            raise StorageError(f"stored properties are damaged: {exc}") from None
        return props


def _message(w: _Writer, m: MessageRecord) -> None:
    w.text(m.topic)
    w.blob(m.payload)
    w.u(m.qos | (m.retain << 2), 1)
    w.props(m.properties, _PUBLISH)
    w.text(m.origin)
    w.f64(m.created)
    w.f64(m.expires)


def _read_message(r: _Reader) -> MessageRecord:
    topic = r.text() or ""
    payload = r.blob()
    flags = r.u(1)
    props = r.props(_PUBLISH)
    origin = r.text() or ""
    created = r.f64() or 0.0
    expires = r.f64()
    return MessageRecord(topic, payload, flags & 3, bool(flags & 4), props, origin, created,
                         expires)


_U4 = struct.Struct(">I")
#: the two times at the end of a message: created, then expires (or a 0 flag)
_TIMES = struct.Struct(">BdBd")
_TIME_NO_EXPIRY = struct.Struct(">BdB")
#: a message's flags byte, alone or with the empty properties after it
_FLAGS = [bytes((flags,)) for flags in range(8)]
_FLAGS_NO_PROPERTIES = [bytes((flags, 0)) for flags in range(8)]
#: a delivery's encoding starts with: version, flags, packet id, subscription id count
DELIVERY_HEAD = struct.Struct(">BBHH")


def message_fields(topic: str, payload: bytes, qos: int, retain: bool,
                   properties: Properties, origin: str, created: float,
                   expires: float | None) -> bytes:
    """A message's fields as ``_message`` writes them, without the version byte: what a
    delivery's encoding ends with (``delivery_bytes``), made once per message."""
    raw_topic = topic.encode()
    raw_origin = origin.encode()
    pack = _U4.pack
    flags = qos | (retain << 2)
    return b"".join((
        pack(len(raw_topic)), raw_topic, pack(len(payload)), payload,
        _FLAGS[flags] + encode_properties(properties, _PUBLISH) if properties
        else _FLAGS_NO_PROPERTIES[flags],
        pack(len(raw_origin)), raw_origin,
        _TIME_NO_EXPIRY.pack(1, created, 0) if expires is None
        else _TIMES.pack(1, created, 1, expires),
    ))


def _message_bytes(m: MessageRecord) -> bytes:
    """``message_fields`` of a record (cached on it)."""
    encoded = m._encoded
    if encoded is None:
        encoded = m._encoded = message_fields(m.topic, m.payload, m.qos, m.retain,
                                              m.properties, m.origin, m.created, m.expires)
    return encoded


def encode_message(m: MessageRecord) -> bytes:
    return b"\x01" + _message_bytes(m)


def decode_message(raw: bytes) -> MessageRecord:
    return _read_message(_Reader(raw))


def encode_session(s: SessionRecord) -> bytes:
    w = _Writer()
    w.u(0xFFFF_FFFF_FF if s.expiry_interval is None else s.expiry_interval, 5)
    w.f64(s.disconnected_at)
    w.text(s.username)
    w.u(s.protocol_level, 1)
    will = s.will
    if will is None:
        w.u(0, 1)
    else:
        w.u(1 | (will.qos << 1) | (will.retain << 3), 1)
        w.text(will.topic)
        w.blob(will.payload)
        w.props(will.properties, WILL)
        w.f64(will.due)
    return bytes(w.out)


def decode_session(client_id: str, raw: bytes) -> SessionRecord:
    r = _Reader(raw)
    expiry: int | None = r.u(5)
    if expiry == 0xFFFF_FFFF_FF:
        expiry = None
    disconnected = r.f64()
    username = r.text()
    level = r.u(1)
    flags = r.u(1)
    will = None
    if flags & 1:
        topic = r.text() or ""
        payload = r.blob()
        props = r.props(WILL)
        will = WillRecord(topic, payload, (flags >> 1) & 3, bool(flags & 8), props, r.f64())
    return SessionRecord(client_id, expiry, disconnected, username, level, will)


def encode_subscription(s: SubscriptionRecord) -> bytes:
    sub = s.subscription
    w = _Writer()
    w.u(sub.qos | (sub.no_local << 2) | (sub.retain_as_published << 3)
          | (sub.retain_handling << 4), 1)
    w.u(s.identifier)
    return bytes(w.out)


def decode_subscription(client_id: str, topic_filter: str, raw: bytes) -> SubscriptionRecord:
    r = _Reader(raw)
    flags = r.u(1)
    sub = Subscription(topic_filter, flags & 3, bool(flags & 4), bool(flags & 8),
                       (flags >> 4) & 3)
    return SubscriptionRecord(client_id, sub, r.u())


def delivery_bytes(qos: int, retain: bool, released: bool, packet_id: int,
                   subscription_ids: tuple[int, ...], message: bytes) -> bytes:
    """A delivery's encoding from its fields and its message's ``message_fields``."""
    head = DELIVERY_HEAD.pack(1, qos | (retain << 2) | (released << 3), packet_id,
                              len(subscription_ids))
    if subscription_ids:
        head += struct.pack(f">{len(subscription_ids)}I", *subscription_ids)
    return head + message


def encode_delivery(d: DeliveryRecord) -> bytes:
    return delivery_bytes(d.qos, d.retain, d.released, d.packet_id, d.subscription_ids,
                          _message_bytes(d.message))


def decode_delivery(client_id: str, order: int, raw: bytes) -> DeliveryRecord:
    r = _Reader(raw)
    flags = r.u(1)
    pid = r.u(2)
    sids = tuple(r.u() for _ in range(r.u(2)))
    message = _read_message(r)
    return DeliveryRecord(client_id, order, message, flags & 3, bool(flags & 4), sids, pid,
                          bool(flags & 8))


def encode_counters(counters: dict[str, int]) -> bytes:
    w = _Writer()
    w.u(len(counters), 2)
    for key, value in sorted(counters.items()):
        w.text(key)
        w.u(value, 8)
    return bytes(w.out)


def decode_counters(raw: bytes) -> dict[str, int]:
    r = _Reader(raw)
    out: dict[str, int] = {}
    for _ in range(r.u(2)):
        key = r.text() or ""
        out[key] = r.u(8)
    return out


__all__ = [
    "DELIVERY_HEAD", "FORMAT_VERSION", "META", "RETAINED", "SESSIONS", "Batch",
    "DeliveryRecord", "Durability", "MessageRecord", "SessionRecord", "Snapshot", "Storage",
    "StorageError", "SubscriptionRecord", "WillRecord", "check_version", "child_group",
    "decode_counters", "decode_delivery", "decode_message", "decode_session",
    "decode_subscription", "delivery_bytes", "delivery_field", "encode_counters",
    "encode_delivery", "encode_message", "encode_session", "encode_subscription",
    "message_fields", "snapshot_from_items", "storage_options",
]
