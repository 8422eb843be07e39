"""The PUBLISH flow and the acknowledgement flows, both ways.

The rule: an inbound PUBLISH is checked (alias, limits, QoS 2 packet id, payload format,
``$`` topics, the ACL), offered to ``on_publish`` (an ``ask``), routed, reported, and
only then acknowledged; PUBACK, PUBREC, PUBREL and PUBCOMP from the client move its
session's QoS flows and refill its inflight window.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..codec import (
    PROTOCOL_5,
    Property,
    ProtocolViolation,
    PubAck,
    PubComp,
    Publish,
    PubRec,
    PubRel,
    ReasonCode,
    RemoteProtocolError,
)
from ..errors import RejectPublish
from ..logsafe import safe
from ..message import Message
from ._ask import Ask, ask

if TYPE_CHECKING:
    from ..config import BrokerSettings
    from ..hooks import Hooks
    from ..stats import Stats
    from ._access import Access
    from ._connection import Connection
    from ._router import Router

log = logging.getLogger("midge.broker")

# read per message: on Python 3.11 an enum member's lookup (``ReasonCode.X``) goes through
# ``EnumType.__getattr__``'s hook, about ten times a global's cost
_SUCCESS = ReasonCode.SUCCESS
_NO_MATCHING_SUBSCRIBERS = ReasonCode.NO_MATCHING_SUBSCRIBERS
_UNSPECIFIED_ERROR = ReasonCode.UNSPECIFIED_ERROR
_TOPIC_ALIAS = Property.TOPIC_ALIAS
_PAYLOAD_FORMAT = Property.PAYLOAD_FORMAT_INDICATOR


def problem_props(conn: Connection, reason: str) -> dict[int, Any]:
    """A Reason String for a packet other than CONNACK/DISCONNECT, when the client
    allows one (v5, Request Problem Information not 0)."""
    if reason and conn.problem_info and conn.v5:
        return {Property.REASON_STRING: reason}
    return {}


def _is_utf8(payload: bytes) -> bool:
    try:
        payload.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


class PublishFlow:
    """What a client's PUBLISH, PUBACK, PUBREC, PUBREL and PUBCOMP do."""

    def __init__(self, limits: BrokerSettings, hooks: Hooks, stats: Stats, access: Access,
                 router: Router, clock: Callable[[], float]) -> None:
        self._limits = limits
        self._hooks = hooks
        self._stats = stats
        self._access = access
        self._router = router
        self._clock = clock

    # -- PUBLISH from the client -----------------------------------------------------------

    def publish(self, conn: Connection, packet: Publish) -> Ask | None:
        session = conn.session
        assert session is not None
        v5 = conn.outbox.level == PROTOCOL_5
        limits = self._limits
        stats = self._stats
        try:
            if v5 and _TOPIC_ALIAS in packet.properties:
                self._resolve_alias(conn, packet)
            topic = packet.topic
            # a topic with a cached write decision already passed the topic limits and
            # the $ rule (they are checked before the ACL is asked): a steady publisher
            # pays one lookup
            writable = conn.acl_cache.get((topic, True))
            if writable is None:
                self._access.check_topic(topic, ReasonCode.TOPIC_NAME_INVALID)
            if packet.qos > limits.maximum_qos:
                raise RemoteProtocolError(
                    ReasonCode.QOS_NOT_SUPPORTED,
                    f"PUBLISH QoS {packet.qos} exceeds the maximum QoS {limits.maximum_qos}",
                )
            if packet.retain and not limits.retain_available:
                raise RemoteProtocolError(ReasonCode.RETAIN_NOT_SUPPORTED,
                                          "retained PUBLISH but retain is not available")
        except RemoteProtocolError:
            # a PUBLISH packet all the same (free when nothing is raised)
            stats.packets_received[Publish] += 1
            raise
        # the messages received (``messages_received`` is their sum)
        stats.received_by_qos[packet.qos] += 1
        stats.received_bytes_by_qos[packet.qos] += len(packet.payload)
        if packet.qos == 2:
            if packet.packet_id in session.inbound_qos2:
                if packet.dup or not v5:
                    # a resent duplicate: acknowledge, don't route [MQTT-4.3.3-10]
                    conn.durable()
                    conn.send(PubRec(packet.packet_id))
                    return None
                # DUP=0 is a first attempt [MQTT-3.3.1-1]: a new message on a packet id
                # still awaiting PUBREL. It is not routed (no duplicates onward,
                # [MQTT-4.3.3-10]) and the client is told 0x91; after a PUBREC of 0x80
                # or above the id starts afresh [MQTT-4.3.3-9]
                conn.warn(log, "client %s reused packet id %d before releasing it; "
                          "answered 0x91", conn.name, packet.packet_id)
                session.release_qos2(packet.packet_id)
                self._acknowledge(conn, packet, ReasonCode.PACKET_IDENTIFIER_IN_USE,
                                  "packet identifier in use")
                return None
            if len(session.inbound_qos2) >= limits.receive_maximum:
                raise RemoteProtocolError(
                    ReasonCode.RECEIVE_MAXIMUM_EXCEEDED,
                    f"more than {limits.receive_maximum} QoS 2 messages unacknowledged",
                )
        if (v5 and packet.properties.get(_PAYLOAD_FORMAT) == 1
                and not _is_utf8(packet.payload)):
            # declared UTF-8 but is not: refused, not routed (MQTT 5 3.3.2.3.2)
            if not packet.qos:
                raise RemoteProtocolError(ReasonCode.PAYLOAD_FORMAT_INVALID,
                                          "payload declared UTF-8 is not valid UTF-8")
            conn.warn(log, "client %s published a payload declared UTF-8 that is not; "
                      "dropped", conn.name)
            self._acknowledge(conn, packet, ReasonCode.PAYLOAD_FORMAT_INVALID,
                              "payload is not valid UTF-8")
            return None
        if writable is None:
            if topic.startswith("$"):
                conn.warn(log, "client %s may not publish to %s; dropped", conn.name,
                          safe(topic))
                self._acknowledge(conn, packet, ReasonCode.NOT_AUTHORIZED)
                return None
            writable = self._access.allowed(conn, topic, True)
        if not writable:
            conn.warn(log, "client %s is not authorized to publish to %s; dropped",
                      conn.name, safe(topic))
            self._acknowledge(conn, packet, ReasonCode.NOT_AUTHORIZED)
            return None
        if packet.retain and packet.payload:
            why = self._router.retain_refusal(topic, len(packet.payload))
            if why is not None:
                conn.warn(log, "client %s: retained message to %s refused: %s", conn.name,
                          safe(topic), why)
                self._acknowledge(conn, packet, ReasonCode.QUOTA_EXCEEDED, why)
                return None
        hook = self._hooks.on_publish
        if hook is None:
            self._accepted(conn, packet)
            return None
        return ask(hook, (conn, packet), packet, self._published, conn, packet)

    def _published(self, conn: Connection, packet: Publish, accepted: Publish | None,
                   error: BaseException | None) -> None:
        """``on_publish`` answered: route what it returned, or acknowledge its rejection."""
        if isinstance(error, RejectPublish):
            self._acknowledge(conn, packet, error.reason_code, error.reason)
            return
        if error is not None:
            raise error
        if not conn.connected:
            return  # the connection went away while plugins were deciding
        self._accepted(conn, accepted if isinstance(accepted, Publish) else packet)

    def _accepted(self, conn: Connection, packet: Publish) -> None:
        message = Message(packet.topic, packet.payload, packet.qos, packet.retain,
                          packet.properties, conn.client_id, self._clock())
        delivered = self._router.route(message, conn)
        if self._hooks.on_published is not None:
            self._hooks.on_published(conn, packet)
        if packet.qos:
            code = _SUCCESS if delivered else _NO_MATCHING_SUBSCRIBERS
            self._acknowledge(conn, packet, code)

    def _resolve_alias(self, conn: Connection, packet: Publish) -> None:
        """Apply an inbound Topic Alias: set it (with a topic) or use it (without)."""
        alias = packet.properties[Property.TOPIC_ALIAS]
        maximum = self._limits.topic_alias_maximum
        if not 0 < alias <= maximum:
            raise RemoteProtocolError(
                ReasonCode.TOPIC_ALIAS_INVALID,
                f"topic alias {alias} is outside 1..{maximum}" if maximum
                else "topic alias used but the maximum is 0",
            )
        if packet.topic:
            conn.aliases_in[alias] = packet.topic
            return
        topic = conn.aliases_in.get(alias)
        if topic is None:
            raise ProtocolViolation(f"topic alias {alias} was never set on this connection")
        packet.topic = topic

    def _acknowledge(self, conn: Connection, packet: Publish, code: int,
                     reason: str = "") -> None:
        props: dict[int, Any] = {}
        if conn.outbox.level != PROTOCOL_5:
            code = _SUCCESS
        elif reason:
            props = problem_props(conn, reason)
        if packet.qos == 1:
            conn.durable()
            if code or props:
                conn.send(PubAck(packet.packet_id, code, props))
            else:
                conn.outbox.ack(PubAck, packet.packet_id)
        elif packet.qos == 2:
            if code < _UNSPECIFIED_ERROR:
                assert conn.session is not None
                conn.session.receive_qos2(packet.packet_id)
            conn.durable()
            if code or props:
                conn.send(PubRec(packet.packet_id, code, props))
            else:
                conn.outbox.ack(PubRec, packet.packet_id)

    # -- acknowledgements from the client --------------------------------------------------

    def puback(self, conn: Connection, packet: PubAck) -> None:
        session = conn.session
        assert session is not None
        if session.puback(packet.packet_id) is not None:
            if self._hooks.on_qos_complete is not None:
                self._hooks.on_qos_complete(conn, packet.packet_id)
            if session.pending:
                self._router.pump(conn, session)

    def pubrec(self, conn: Connection, packet: PubRec) -> None:
        session = conn.session
        assert session is not None
        if packet.reason_code >= _UNSPECIFIED_ERROR:
            if session.drop(packet.packet_id) is not None and self._hooks.on_qos_dropped:
                self._hooks.on_qos_dropped(
                    conn, packet.packet_id, f"PUBREC 0x{packet.reason_code:02X}"
                )
            self._router.pump(conn, session)
            return
        if session.pubrec(packet.packet_id) is None and conn.v5:
            conn.send(PubRel(packet.packet_id, ReasonCode.PACKET_IDENTIFIER_NOT_FOUND))
            return
        conn.durable()
        conn.outbox.ack(PubRel, packet.packet_id)

    def pubrel(self, conn: Connection, packet: PubRel) -> None:
        session = conn.session
        assert session is not None
        pid = packet.packet_id
        if session.release_qos2(pid):
            conn.durable()
            conn.outbox.ack(PubComp, pid)
        elif conn.v5:
            conn.send(PubComp(pid, ReasonCode.PACKET_IDENTIFIER_NOT_FOUND))
        else:
            conn.send(PubComp(pid))

    def pubcomp(self, conn: Connection, packet: PubComp) -> None:
        session = conn.session
        assert session is not None
        if session.pubcomp(packet.packet_id) is not None:
            if self._hooks.on_qos_complete is not None:
                self._hooks.on_qos_complete(conn, packet.packet_id)
            self._router.pump(conn, session)
