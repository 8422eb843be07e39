"""What the broker does with each packet a client sends: CONNECT to AUTH.

The rule: a handler is a plain method and answers before the next packet is read. Only
where an active plugin's hook is ``async def`` (CONNECT always may be) does a handler
return a coroutine, which the connection awaits; with no such plugin nothing awaits.
"""

from __future__ import annotations

import dataclasses
import logging
import uuid
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any

from .codec import (
    PROTOCOL_5,
    SUBACK_FAILURE,
    Auth,
    ConnAck,
    Connect,
    Disconnect,
    PingReq,
    PingResp,
    Property,
    ProtocolViolation,
    PubAck,
    PubComp,
    Publish,
    PubRec,
    PubRel,
    ReasonCode,
    RemoteProtocolError,
    SubAck,
    Subscribe,
    UnsubAck,
    Unsubscribe,
    connack_code_v3,
)
from .connection import Connection
from .errors import Refuse, RejectPublish
from .message import Message
from .session import Session
from .topics import parse_share

if TYPE_CHECKING:
    from .codec import Will
    from .config import BrokerSettings
    from .inline import InlineSubscription
    from .plugins import Hooks
    from .session import Outbound
    from .stats import Stats
    from .topics import RetainedIndex, SubscriptionTrie

log = logging.getLogger("midge.broker")
clients_log = logging.getLogger("midge.clients")
NEVER = 0xFFFFFFFF
_LEVELS = {3: "3.1", 4: "3.1.1", 5: "5.0"}
#: properties that carry diagnostics, withheld from packets other than PUBLISH, CONNACK
#: and DISCONNECT when a v5 client set Request Problem Information to 0 [MQTT-3.1.2-29]
_PROBLEM_INFO = (Property.REASON_STRING, Property.USER_PROPERTY)


def problem_props(conn: Connection, reason: str) -> dict[int, Any]:
    """A Reason String for a packet other than CONNACK/DISCONNECT, when the client
    allows one (v5, Request Problem Information not 0)."""
    if reason and conn.problem_info and conn.protocol_level == PROTOCOL_5:
        return {Property.REASON_STRING: reason}
    return {}


def _has_wildcard(topic_filter: str) -> bool:
    """A filter with + or # (in the filter of a shared subscription too)."""
    return "+" in topic_filter or "#" in topic_filter


def _is_utf8(payload: bytes) -> bool:
    try:
        payload.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def will_delay(conn: Connection, will: Will) -> int:
    """The Will Delay Interval of a v5 client's will (0 for v3 and without one)."""
    if conn.protocol_level != PROTOCOL_5:
        return 0
    return int(will.properties.get(Property.WILL_DELAY_INTERVAL, 0))


class PendingConnect:
    """A CONNECT being answered: what ``connect`` decided before authentication, kept
    while an enhanced-authentication exchange runs."""

    __slots__ = ("assigned", "keepalive", "method", "packet", "server_keepalive")

    def __init__(self, packet: Connect, assigned: bool, keepalive: int,
                 server_keepalive: int | None) -> None:
        self.packet = packet
        self.assigned = assigned
        self.keepalive = keepalive
        self.server_keepalive = server_keepalive
        #: the Authentication Method (None: no enhanced authentication)
        self.method: str | None = None


class Handlers:
    """The packet handlers of ``Broker`` (a mixin; ``self`` is the broker)."""

    if TYPE_CHECKING:
        limits: BrokerSettings
        hooks: Hooks
        stats: Stats
        trie: SubscriptionTrie
        retained: RetainedIndex[Message]
        sessions: dict[str, Session]
        clients: dict[str, Connection]
        expiring: dict[str, Session]
        max_inflight: int
        inline_subscribers: dict[str, InlineSubscription]
        #: connections in the AUTH exchange of their CONNECT
        auth_exchanges: dict[Connection, PendingConnect]

        def route(self, message: Message, publisher: Connection | None = None) -> int: ...
        def deliver(self, client_id: str, message: Message, qos: int, retain: bool,
                    subscription_ids: tuple[int, ...] = ()) -> None: ...
        def write_publish(self, conn: Connection, out: Outbound, dup: bool = False) -> None: ...
        def pump(self, conn: Connection, session: Session) -> None: ...
        def allowed(self, conn: Connection, topic: str, write: bool) -> bool: ...
        def check_topic(self, topic: str, reason: ReasonCode) -> None: ...
        def discard_session(self, session: Session) -> None: ...
        def publish_will(self, conn: Connection, will: Will) -> None: ...
        def retained_for(self, topic_filter: str) -> list[Message]: ...
        def cancel_will(self, client_id: str, session_ends: bool) -> None: ...

    def packet_handlers(self) -> dict[type[Any], Any]:
        return {
            Publish: self._on_publish,
            PubAck: self._on_puback,
            PubRec: self._on_pubrec,
            PubRel: self._on_pubrel,
            PubComp: self._on_pubcomp,
            Subscribe: self._on_subscribe,
            Unsubscribe: self._on_unsubscribe,
            PingReq: self._on_pingreq,
            Disconnect: self._on_disconnect,
            Auth: self._on_auth,
        }

    # -- CONNECT -------------------------------------------------------------------------

    async def connect(self, conn: Connection, packet: Connect) -> None:
        """Validate, authenticate, take over or resume the session, answer CONNACK."""
        level = conn.protocol_level = packet.protocol_level
        v5 = level == PROTOCOL_5
        props = packet.properties
        cid = packet.client_id
        assigned = False
        limits = self.limits
        if len(cid.encode()) > limits.max_client_id_length:
            return self._refuse(conn, ReasonCode.CLIENT_IDENTIFIER_NOT_VALID, "client id too long")
        if not cid:
            if level == 3 or not packet.clean_start:
                return self._refuse(
                    conn, ReasonCode.CLIENT_IDENTIFIER_NOT_VALID,
                    "empty client id without clean session",
                )
            cid = "midge" + uuid.uuid4().hex[:18]
            assigned = True
        conn.client_id = cid
        conn.username = packet.username
        if v5:  # also for the AUTH packets of an enhanced-authentication exchange
            conn.problem_info = props.get(Property.REQUEST_PROBLEM_INFORMATION, 1) == 1
        keepalive = packet.keepalive
        server_keepalive = None
        max_keepalive = limits.max_keepalive
        if max_keepalive < 65535 and (keepalive > max_keepalive or keepalive == 0):
            if v5:
                server_keepalive = keepalive = max_keepalive
            elif keepalive > max_keepalive:
                # v3 cannot be told another keepalive; Mosquitto answers the same way
                return self._refuse(
                    conn, ReasonCode.CLIENT_IDENTIFIER_NOT_VALID,
                    f"keepalive {keepalive} s exceeds max_keepalive {max_keepalive}",
                )
        will = packet.will
        if will is not None:
            # a will the broker could not publish is refused up front [MQTT-3.2.2-12]
            # [MQTT-3.2.2-13]
            if will.qos > limits.maximum_qos:
                return self._refuse(
                    conn, ReasonCode.QOS_NOT_SUPPORTED,
                    f"will QoS {will.qos} exceeds maximum_qos {limits.maximum_qos}",
                )
            if will.retain and not limits.retain_available:
                return self._refuse(conn, ReasonCode.RETAIN_NOT_SUPPORTED,
                                    "retained will but retain_available is false")
        hooks = self.hooks
        if hooks.on_connect is not None:
            refusal = hooks.on_connect(conn, packet)
            if hooks.on_connect.is_async:
                refusal = await refusal
            if refusal is not None:
                return self._refuse(conn, ReasonCode(refusal), "refused by a plugin")
        pending = PendingConnect(packet, assigned, keepalive, server_keepalive)
        method = props.get(Property.AUTHENTICATION_METHOD) if v5 else None
        if method is not None:
            request_props: dict[int, Any] = {Property.AUTHENTICATION_METHOD: method}
            data = props.get(Property.AUTHENTICATION_DATA)
            if data is not None:
                request_props[Property.AUTHENTICATION_DATA] = data
            pending.method = method
            await self._auth_step(
                conn, pending, Auth(ReasonCode.CONTINUE_AUTHENTICATION, request_props)
            )
            return None
        await self._accept(conn, pending, {})
        return None

    async def _accept(
        self, conn: Connection, pending: PendingConnect, auth_props: dict[int, Any]
    ) -> None:
        """The rest of CONNECT once any enhanced authentication succeeded: the
        ``on_connect_authenticate`` vote, the session, CONNACK."""
        packet = pending.packet
        props = packet.properties
        level = packet.protocol_level
        v5 = level == PROTOCOL_5
        cid = conn.client_id
        limits = self.limits
        hooks = self.hooks
        assigned = pending.assigned
        keepalive = pending.keepalive
        server_keepalive = pending.server_keepalive
        allowed = None
        if hooks.on_connect_authenticate is not None:
            allowed = hooks.on_connect_authenticate(conn, packet)
            if hooks.on_connect_authenticate.is_async:
                allowed = await allowed
        if allowed is not True:
            if packet.username is None:
                return self._refuse(conn, ReasonCode.NOT_AUTHORIZED, "not authorized")
            return self._refuse(
                conn, ReasonCode.BAD_USERNAME_OR_PASSWORD, "bad user name or password"
            )
        if conn.closing:
            return None  # the connection went away while plugins were deciding
        if hooks.on_session_establish is not None:
            hooks.on_session_establish(conn, packet)
        session, present = self._take_session(conn, packet, cid)
        session.auth_method = pending.method
        session.reauthenticating = False
        if v5:
            receive_max = props.get(Property.RECEIVE_MAXIMUM)
            if receive_max:
                session.max_inflight = min(receive_max, self.max_inflight)
            conn.max_packet_out = props.get(Property.MAXIMUM_PACKET_SIZE, conn.max_packet_out)
            conn.alias_max_out = props.get(Property.TOPIC_ALIAS_MAXIMUM, 0)
        ack_props: dict[int, Any] = {}
        if v5:
            expiry = props.get(Property.SESSION_EXPIRY_INTERVAL, 0)
            if expiry > limits.session_expiry_max:
                expiry = limits.session_expiry_max
                ack_props[Property.SESSION_EXPIRY_INTERVAL] = expiry
            session.expiry_interval = None if expiry == NEVER else expiry
        elif packet.clean_start:
            session.expiry_interval = 0
        else:
            session.expiry_interval = limits.persistent_session_expiry or None

        conn.keepalive = keepalive
        conn.will = packet.will
        conn.session = session
        conn.connected = True
        self.clients[cid] = conn
        if v5:
            if assigned:
                ack_props[Property.ASSIGNED_CLIENT_IDENTIFIER] = cid
            if server_keepalive is not None:
                ack_props[Property.SERVER_KEEP_ALIVE] = server_keepalive
            ack_props[Property.RECEIVE_MAXIMUM] = limits.receive_maximum
            if limits.max_packet_size < 268_435_455:
                ack_props[Property.MAXIMUM_PACKET_SIZE] = limits.max_packet_size
            ack_props[Property.TOPIC_ALIAS_MAXIMUM] = limits.topic_alias_maximum
            if limits.maximum_qos < 2:
                ack_props[Property.MAXIMUM_QOS] = limits.maximum_qos
            if not limits.retain_available:
                ack_props[Property.RETAIN_AVAILABLE] = 0
            if not limits.wildcard_subscriptions:
                ack_props[Property.WILDCARD_SUBSCRIPTION_AVAILABLE] = 0
            if not limits.subscription_identifiers:
                ack_props[Property.SUBSCRIPTION_IDENTIFIER_AVAILABLE] = 0
            ack_props[Property.SHARED_SUBSCRIPTION_AVAILABLE] = int(limits.shared_subscriptions)
            if limits.response_information and props.get(
                Property.REQUEST_RESPONSE_INFORMATION
            ):
                ack_props[Property.RESPONSE_INFORMATION] = limits.response_information
            ack_props.update(auth_props)
        conn.send(ConnAck(0, present, ack_props))
        self.stats.clients_connected = len(self.clients)
        clients_log.info(
            "client %s connected from %s (MQTT %s, clean=%s, keepalive=%d, session present=%s)",
            cid, conn.remote, _LEVELS[level], packet.clean_start, keepalive, present,
        )
        if hooks.on_session_established is not None:
            hooks.on_session_established(conn, packet)
        for out in session.resume():
            if out.released:
                conn.send(PubRel(out.packet_id))
            else:
                self.write_publish(conn, out, dup=True)
        self.pump(conn, session)
        return None

    # -- enhanced authentication (MQTT 5 section 4.12) -----------------------------------

    async def _auth_step(self, conn: Connection, pending: PendingConnect,
                         request: Auth) -> None:
        """One step of the AUTH exchange of a CONNECT (MQTT 5 section 4.12): ``request``
        (built from the CONNECT, or the client's AUTH 0x18) goes through
        ``on_auth_packet``; its answer continues the exchange, accepts or refuses."""
        method = pending.method
        assert method is not None
        self.auth_exchanges.pop(conn, None)
        hook = self.hooks.on_auth_packet
        if hook is None:
            self._refuse(conn, ReasonCode.BAD_AUTHENTICATION_METHOD,
                         f"authentication method {method!r} is not supported")
            return
        try:
            answer = hook(conn, request)
            if hook.is_async:
                answer = await answer
        except Refuse as exc:
            self._refuse(conn, exc.reason_code,
                         exc.reason or "refused by enhanced authentication")
            return
        if conn.closing:
            return
        if answer is request or not isinstance(answer, Auth):
            # nobody answered: no plugin knows this method
            self._refuse(conn, ReasonCode.BAD_AUTHENTICATION_METHOD,
                         f"authentication method {method!r} is not supported")
            return
        code = answer.reason_code
        if code == ReasonCode.SUCCESS:
            await self._accept(conn, pending, self._auth_props(conn, answer, method, True))
            return
        if code != ReasonCode.CONTINUE_AUTHENTICATION:
            self._refuse(
                conn,
                ReasonCode(code) if code >= 0x80 else ReasonCode.UNSPECIFIED_ERROR,
                f"on_auth_packet answered reason code 0x{code:02X}",
            )
            return
        conn.send(Auth(code, self._auth_props(conn, answer, method)))
        # the connection stays open, not yet connected, for the client's AUTH reply;
        # the CONNECT timeout bounds the whole exchange
        self.auth_exchanges[conn] = pending

    def authenticating(self, conn: Connection) -> bool:
        """``conn`` sent CONNECT and is in an AUTH exchange: keep it open for AUTH."""
        return conn in self.auth_exchanges

    @staticmethod
    def _auth_props(
        conn: Connection, answer: Auth, method: str, final: bool = False
    ) -> dict[int, Any]:
        """The properties of a plugin's AUTH answer, as sent: the connection's method,
        and no diagnostics on AUTH when the client asked for none."""
        props = dict(answer.properties)
        props[Property.AUTHENTICATION_METHOD] = method
        if not final and not conn.problem_info:
            for key in _PROBLEM_INFO:
                props.pop(key, None)
        return props

    def _take_session(self, conn: Connection, packet: Connect,
                      cid: str) -> tuple[Session, bool]:
        session = self.sessions.get(cid)
        # a session with expiry 0 (a clean session) ends with the connection just taken
        # over: its state must not be reused [MQTT-3.1.2-6] (MQTT 5 section 3.1.2.11.2)
        ends = session is None or packet.clean_start or session.expiry_interval == 0
        old = self.clients.get(cid)
        if old is not None and old is not conn:
            clients_log.info(
                "client %s: session taken over by a new connection from %s", cid, conn.remote
            )
            if old.will is not None and not ends and will_delay(old, old.will):
                # the session continues and the will has a delay: it is not sent
                # (MQTT 5 section 3.1.3.2.2)
                old.will = None
            old.session_taken_over()
            self.clients.pop(cid, None)
        self.cancel_will(cid, ends)
        if session is not None and ends:
            self.discard_session(session)
            session = None
        present = session is not None
        if session is None:
            session = Session(cid, packet.protocol_level, self.max_inflight,
                              self.limits.max_queued_messages)
            self.sessions[cid] = session
        self.expiring.pop(cid, None)
        session.protocol_level = packet.protocol_level
        session.max_inflight = self.max_inflight
        return session, present

    def _refuse(self, conn: Connection, reason: ReasonCode, why: str) -> None:
        log.warning(
            "client %s from %s refused: %s (0x%02X)", conn.name, conn.remote, why, int(reason)
        )
        conn.close_reason = f"refused: {why}"
        if conn.protocol_level == PROTOCOL_5:
            conn.send(ConnAck(reason))
        else:
            conn.send(ConnAck(connack_code_v3(reason)))
        # a refusal ends the connection, also when it answers an AUTH of the exchange
        conn.finish(conn.close_reason)

    # -- PUBLISH and its acknowledgements ------------------------------------------------

    def _on_publish(
        self, conn: Connection, packet: Publish
    ) -> Coroutine[Any, Any, None] | None:
        session = conn.session
        assert session is not None
        if conn.protocol_level == PROTOCOL_5 and Property.TOPIC_ALIAS in packet.properties:
            self._resolve_alias(conn, packet)
        topic = packet.topic
        self.check_topic(topic, ReasonCode.TOPIC_NAME_INVALID)
        limits = self.limits
        if packet.qos > limits.maximum_qos:
            raise RemoteProtocolError(
                ReasonCode.QOS_NOT_SUPPORTED,
                f"PUBLISH QoS {packet.qos} exceeds the maximum QoS {limits.maximum_qos}",
            )
        if packet.retain and not limits.retain_available:
            raise RemoteProtocolError(ReasonCode.RETAIN_NOT_SUPPORTED,
                                      "retained PUBLISH but retain is not available")
        self.stats.messages_received += 1
        if packet.qos == 2:
            if packet.packet_id in session.inbound_qos2:
                if packet.dup or conn.protocol_level != PROTOCOL_5:
                    # a resent duplicate: acknowledge, don't route [MQTT-4.3.3-10]
                    conn.send(PubRec(packet.packet_id))
                    return None
                # DUP=0 is a first attempt [MQTT-3.3.1-1]: a new message on a packet id
                # still awaiting PUBREL. It is not routed (no duplicates onward,
                # [MQTT-4.3.3-10]) and the client is told 0x91; after a PUBREC of 0x80
                # or above the id starts afresh [MQTT-4.3.3-9]
                log.warning("client %s reused packet id %d before releasing it; "
                            "answered 0x91", conn.client_id, packet.packet_id)
                session.inbound_qos2.discard(packet.packet_id)
                self._acknowledge(conn, packet, ReasonCode.PACKET_IDENTIFIER_IN_USE,
                                  "packet identifier in use")
                return None
            if len(session.inbound_qos2) >= self.limits.receive_maximum:
                raise RemoteProtocolError(
                    ReasonCode.RECEIVE_MAXIMUM_EXCEEDED,
                    f"more than {self.limits.receive_maximum} QoS 2 messages unacknowledged",
                )
        if (packet.properties.get(Property.PAYLOAD_FORMAT_INDICATOR) == 1
                and conn.protocol_level == PROTOCOL_5 and not _is_utf8(packet.payload)):
            # declared UTF-8 but is not: refused, not routed (MQTT 5 3.3.2.3.2)
            if not packet.qos:
                raise RemoteProtocolError(ReasonCode.PAYLOAD_FORMAT_INVALID,
                                          "payload declared UTF-8 is not valid UTF-8")
            log.warning("client %s published a payload declared UTF-8 that is not; dropped",
                        conn.client_id)
            self._acknowledge(conn, packet, ReasonCode.PAYLOAD_FORMAT_INVALID,
                              "payload is not valid UTF-8")
            return None
        if topic.startswith("$"):
            log.warning("client %s may not publish to %s; dropped", conn.client_id, topic)
            self._acknowledge(conn, packet, ReasonCode.NOT_AUTHORIZED)
            return None
        if not self.allowed(conn, topic, True):
            log.warning("client %s is not authorized to publish to %s; dropped",
                        conn.client_id, topic)
            self._acknowledge(conn, packet, ReasonCode.NOT_AUTHORIZED)
            return None
        hook = self.hooks.on_publish
        if hook is not None:
            if hook.is_async:
                return self._publish_awaiting(conn, packet)
            try:
                packet = hook(conn, packet)
            except RejectPublish as exc:
                self._acknowledge(conn, packet, exc.reason_code, exc.reason)
                return None
        self._publish_accepted(conn, packet)
        return None

    def _resolve_alias(self, conn: Connection, packet: Publish) -> None:
        """Apply an inbound Topic Alias: set it (with a topic) or use it (without)."""
        alias = packet.properties[Property.TOPIC_ALIAS]
        maximum = self.limits.topic_alias_maximum
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

    async def _publish_awaiting(self, conn: Connection, packet: Publish) -> None:
        assert self.hooks.on_publish is not None
        try:
            packet = await self.hooks.on_publish(conn, packet)
        except RejectPublish as exc:
            self._acknowledge(conn, packet, exc.reason_code, exc.reason)
            return
        self._publish_accepted(conn, packet)

    def _publish_accepted(self, conn: Connection, packet: Publish) -> None:
        message = Message(packet.topic, packet.payload, packet.qos, packet.retain,
                          packet.properties, conn.client_id)
        delivered = self.route(message, conn)
        if self.hooks.on_published is not None:
            self.hooks.on_published(conn, packet)
        if packet.qos:
            code = ReasonCode.SUCCESS if delivered else ReasonCode.NO_MATCHING_SUBSCRIBERS
            self._acknowledge(conn, packet, code)

    def _acknowledge(self, conn: Connection, packet: Publish, code: int,
                     reason: str = "") -> None:
        props: dict[int, Any] = {}
        if conn.protocol_level != PROTOCOL_5:
            code = 0
        elif reason:
            props = problem_props(conn, reason)
        if packet.qos == 1:
            conn.send(PubAck(packet.packet_id, code, props))
        elif packet.qos == 2:
            if code < 0x80:
                assert conn.session is not None
                conn.session.inbound_qos2.add(packet.packet_id)
            conn.send(PubRec(packet.packet_id, code, props))

    def _on_puback(self, conn: Connection, packet: PubAck) -> None:
        session = conn.session
        assert session is not None
        if session.puback(packet.packet_id) is not None:
            if self.hooks.on_qos_complete is not None:
                self.hooks.on_qos_complete(conn, packet.packet_id)
            if session.pending:
                self.pump(conn, session)

    def _on_pubrec(self, conn: Connection, packet: PubRec) -> None:
        session = conn.session
        assert session is not None
        if packet.reason_code >= 0x80:
            if session.drop(packet.packet_id) is not None and self.hooks.on_qos_dropped:
                self.hooks.on_qos_dropped(
                    conn, packet.packet_id, f"PUBREC 0x{packet.reason_code:02X}"
                )
            self.pump(conn, session)
            return
        if session.pubrec(packet.packet_id) is None and conn.protocol_level == PROTOCOL_5:
            conn.send(PubRel(packet.packet_id, ReasonCode.PACKET_IDENTIFIER_NOT_FOUND))
            return
        conn.send(PubRel(packet.packet_id))

    def _on_pubrel(self, conn: Connection, packet: PubRel) -> None:
        session = conn.session
        assert session is not None
        pid = packet.packet_id
        if pid in session.inbound_qos2:
            session.inbound_qos2.discard(pid)
            conn.send(PubComp(pid))
        elif conn.protocol_level == PROTOCOL_5:
            conn.send(PubComp(pid, ReasonCode.PACKET_IDENTIFIER_NOT_FOUND))
        else:
            conn.send(PubComp(pid))

    def _on_pubcomp(self, conn: Connection, packet: PubComp) -> None:
        session = conn.session
        assert session is not None
        if session.pubcomp(packet.packet_id) is not None:
            if self.hooks.on_qos_complete is not None:
                self.hooks.on_qos_complete(conn, packet.packet_id)
            self.pump(conn, session)

    # -- SUBSCRIBE / UNSUBSCRIBE ---------------------------------------------------------

    def _on_subscribe(self, conn: Connection, packet: Subscribe) -> None:
        session = conn.session
        assert session is not None
        v5 = conn.protocol_level == PROTOCOL_5
        refused = self.limits.refused_subscription_code if v5 else SUBACK_FAILURE
        limits = self.limits
        for sub in packet.subscriptions:
            self.check_topic(sub.topic_filter, ReasonCode.TOPIC_FILTER_INVALID)
        if v5:
            # features the CONNACK said are unavailable: a Protocol Error with their own
            # reason code (MQTT 5 3.2.2.3.13-15, section 4.13)
            if (not limits.subscription_identifiers
                    and Property.SUBSCRIPTION_IDENTIFIER in packet.properties):
                raise RemoteProtocolError(ReasonCode.SUBSCRIPTION_IDENTIFIERS_NOT_SUPPORTED,
                                          "subscription identifiers are not available")
            for sub in packet.subscriptions:
                topic_filter = sub.topic_filter
                if not limits.shared_subscriptions and topic_filter.startswith("$share/"):
                    raise RemoteProtocolError(
                        ReasonCode.SHARED_SUBSCRIPTIONS_NOT_SUPPORTED,
                        f"shared subscription {topic_filter} but they are not available",
                    )
                if not limits.wildcard_subscriptions and _has_wildcard(topic_filter):
                    raise RemoteProtocolError(
                        ReasonCode.WILDCARD_SUBSCRIPTIONS_NOT_SUPPORTED,
                        f"wildcard subscription {topic_filter} but they are not available",
                    )
        hooks = self.hooks
        if hooks.on_subscribe is not None:
            packet = hooks.on_subscribe(conn, packet)
        sids = packet.properties.get(Property.SUBSCRIPTION_IDENTIFIER)
        sid = sids[0] if sids else 0
        codes: list[int] = []
        granted = []
        for sub in packet.subscriptions:
            topic_filter = acl_filter = sub.topic_filter
            try:
                share = parse_share(topic_filter)
            except ValueError as exc:
                log.warning("client %s: subscription refused: %s", conn.client_id, exc)
                codes.append(ReasonCode.TOPIC_FILTER_INVALID if v5 else SUBACK_FAILURE)
                continue
            if not v5 and (
                (share is not None and not limits.shared_subscriptions)
                or (not limits.wildcard_subscriptions and _has_wildcard(topic_filter))
            ):
                log.warning("client %s: subscription to %s refused: not available",
                            conn.client_id, topic_filter)
                codes.append(SUBACK_FAILURE)
                continue
            if share is not None:
                if sub.no_local and v5:
                    raise ProtocolViolation(f"No Local on the shared subscription {topic_filter}")
                # the ACL judges the filter the messages come from
                acl_filter = share[1]
            if not self.allowed(conn, acl_filter, False):
                log.warning("client %s is not authorized to subscribe to %s",
                            conn.client_id, topic_filter)
                codes.append(refused)
                continue
            if sub.qos > limits.maximum_qos:  # granted at most the maximum QoS
                sub = dataclasses.replace(sub, qos=limits.maximum_qos)
            new = self.trie.add(session.client_id, sub, sid)
            session.subscriptions[topic_filter] = (sub, sid)
            codes.append(sub.qos)
            if share is None:  # no retained messages on a shared subscribe (MQTT 5 4.8.2)
                granted.append((sub, new))
        conn.send(SubAck(packet.packet_id, codes))
        if hooks.on_subscribed is not None:
            hooks.on_subscribed(conn, packet, codes)
        for sub, new in granted:
            if sub.retain_handling == 2 or (sub.retain_handling == 1 and not new):
                continue
            for message in self.retained_for(sub.topic_filter):
                qos = min(message.qos, sub.qos)
                self.deliver(session.client_id, message, qos, True, (sid,) if sid else ())
                if hooks.on_retain_published is not None:
                    hooks.on_retain_published(conn, message)

    def _on_unsubscribe(self, conn: Connection, packet: Unsubscribe) -> None:
        session = conn.session
        assert session is not None
        hooks = self.hooks
        if hooks.on_unsubscribe is not None:
            packet = hooks.on_unsubscribe(conn, packet)
        codes: list[int] = []
        for topic_filter in packet.topic_filters:
            existed = self.trie.remove(session.client_id, topic_filter)
            session.subscriptions.pop(topic_filter, None)
            codes.append(ReasonCode.SUCCESS if existed else ReasonCode.NO_SUBSCRIPTION_EXISTED)
        conn.send(UnsubAck(packet.packet_id, codes if conn.protocol_level == PROTOCOL_5 else []))
        if hooks.on_unsubscribed is not None:
            hooks.on_unsubscribed(conn, packet)

    # -- the rest ------------------------------------------------------------------------

    def _on_pingreq(self, conn: Connection, packet: PingReq) -> None:
        conn.send(PingResp())

    def _on_disconnect(self, conn: Connection, packet: Disconnect) -> None:
        session = conn.session
        if conn.protocol_level == PROTOCOL_5 and session is not None:
            expiry = packet.properties.get(Property.SESSION_EXPIRY_INTERVAL)
            if expiry is not None:
                if session.expiry_interval == 0 and expiry:
                    raise ProtocolViolation(
                        "DISCONNECT may not set a session expiry when CONNECT set 0"
                    )
                expiry = min(expiry, self.limits.session_expiry_max)
                session.expiry_interval = None if expiry == NEVER else expiry
        # only Normal disconnection (0x00) discards the will; 0x04 and every error reason
        # leave it to be published (MQTT 5 sections 3.1.2.5 and 3.14, [MQTT-3.14.4-3])
        conn.clean_disconnect = packet.reason_code == ReasonCode.NORMAL_DISCONNECTION
        conn.finish(
            "client sent DISCONNECT" if conn.clean_disconnect
            else f"client sent DISCONNECT 0x{packet.reason_code:02X}"
        )

    def _on_auth(self, conn: Connection, packet: Auth) -> Coroutine[Any, Any, None] | None:
        """Re-authentication (MQTT 5 section 4.12.1): AUTH 0x19 starts it, AUTH 0x18
        continues it; each goes through ``on_auth_packet``."""
        if not conn.connected:
            return self._auth_reply(conn, packet)
        session = conn.session
        assert session is not None
        method = session.auth_method
        if method is None:
            raise ProtocolViolation("AUTH without an authentication method in CONNECT")
        if packet.properties.get(Property.AUTHENTICATION_METHOD) != method:
            raise ProtocolViolation("AUTH with another authentication method than CONNECT")
        code = packet.reason_code
        if code == ReasonCode.CONTINUE_AUTHENTICATION:
            if not session.reauthenticating:
                raise ProtocolViolation("AUTH 0x18 without a re-authentication in progress")
        elif code != ReasonCode.REAUTHENTICATE:
            raise ProtocolViolation(f"AUTH with reason code 0x{code:02X} from a client")
        hook = self.hooks.on_auth_packet
        if hook is None:  # plugins cannot go away, but be safe
            self.disconnect_client(conn, ReasonCode.BAD_AUTHENTICATION_METHOD,
                                   "authentication method not supported")
            return None
        if hook.is_async:
            return self._reauth_awaiting(conn, packet, method)
        try:
            answer = hook(conn, packet)
        except Refuse as exc:
            self._reauth_refused(conn, exc)
            return None
        self._reauth_answer(conn, packet, answer, method)
        return None

    def _auth_reply(self, conn: Connection, packet: Auth) -> Coroutine[Any, Any, None]:
        """The client's AUTH during the exchange of its CONNECT."""
        pending = self.auth_exchanges.get(conn)
        if pending is None:
            raise ProtocolViolation("AUTH before CONNACK without an exchange in progress")
        if packet.reason_code != ReasonCode.CONTINUE_AUTHENTICATION:
            raise ProtocolViolation(
                f"AUTH 0x{packet.reason_code:02X} during the authentication exchange"
            )
        if packet.properties.get(Property.AUTHENTICATION_METHOD) != pending.method:
            raise ProtocolViolation("AUTH with another authentication method than CONNECT")
        return self._auth_step(conn, pending, packet)

    async def _reauth_awaiting(self, conn: Connection, packet: Auth, method: str) -> None:
        assert self.hooks.on_auth_packet is not None
        try:
            answer = await self.hooks.on_auth_packet(conn, packet)
        except Refuse as exc:
            self._reauth_refused(conn, exc)
            return
        self._reauth_answer(conn, packet, answer, method)

    def _reauth_refused(self, conn: Connection, exc: Refuse) -> None:
        log.warning("client %s: re-authentication refused (0x%02X)", conn.name,
                    int(exc.reason_code))
        self.disconnect_client(conn, exc.reason_code,
                               exc.reason or "re-authentication failed")

    def _reauth_answer(self, conn: Connection, packet: Auth, answer: Any, method: str) -> None:
        if conn.closing or conn.session is None:
            return
        session = conn.session
        if answer is packet or not isinstance(answer, Auth):
            log.warning("client %s: no plugin answered re-authentication with %r",
                        conn.name, method)
            self.disconnect_client(conn, ReasonCode.BAD_AUTHENTICATION_METHOD,
                                   "authentication method not supported")
            return
        code = answer.reason_code
        if code not in (ReasonCode.SUCCESS, ReasonCode.CONTINUE_AUTHENTICATION):
            self.disconnect_client(
                conn, ReasonCode(code) if code >= 0x80 else ReasonCode.UNSPECIFIED_ERROR,
                "re-authentication failed",
            )
            return
        session.reauthenticating = code == ReasonCode.CONTINUE_AUTHENTICATION
        if code == ReasonCode.SUCCESS:
            clients_log.info("client %s re-authenticated", conn.name)
        conn.send(Auth(code, self._auth_props(conn, answer, method)))

    # -- server-initiated DISCONNECT -----------------------------------------------------

    def disconnect(
        self, client_id: str, reason_code: int = ReasonCode.ADMINISTRATIVE_ACTION, *,
        reason: str | None = None, server_reference: str | None = None,
    ) -> bool:
        """Disconnect a connected client from plugin or embedding code.

        A v5 client gets DISCONNECT ``reason_code`` (0x80 and above, or 0x00), with
        ``reason`` as its Reason String unless it asked for no problem information, and
        ``server_reference`` as Server Reference with 0x9C (use another server) or 0x9D
        (server moved); a v3 client is just closed. Its will is published as for any
        connection the server closes. Returns False when ``client_id`` is not connected.
        Call it from the broker's event loop (a hook, or ``portal.call``).
        """
        conn = self.clients.get(client_id)
        if conn is None:
            return False
        code = ReasonCode(reason_code)
        clients_log.info("client %s: disconnected by the server (0x%02X%s)", client_id,
                         int(code), f": {reason}" if reason else "")
        return self.disconnect_client(conn, code, reason or "", server_reference)

    def disconnect_client(
        self, conn: Connection, reason_code: int, reason: str = "",
        server_reference: str | None = None,
    ) -> bool:
        """Close a client's connection from the broker's side: a v5 client gets DISCONNECT
        with ``reason_code`` (a Reason String when it allows one, a Server Reference for
        0x9C/0x9D); a v3 client is just closed. The will follows the normal rules."""
        if conn.closing:
            return False
        if conn.connected and conn.protocol_level == PROTOCOL_5:
            props: dict[int, Any] = {}
            if reason and conn.problem_info:
                props[Property.REASON_STRING] = reason
            if server_reference is not None and reason_code in (
                ReasonCode.USE_ANOTHER_SERVER, ReasonCode.SERVER_MOVED
            ):
                props[Property.SERVER_REFERENCE] = server_reference
            conn.send(Disconnect(reason_code, props))
        conn.kill(None, reason or f"disconnected by the server (0x{int(reason_code):02X})")
        return True
