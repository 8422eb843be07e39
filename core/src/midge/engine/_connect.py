"""The CONNECT and AUTH flow: validate, ask the plugins, take the session, CONNACK.

The rule: each step that needs a plugin's decision (``on_connect``,
``on_connect_authenticate``, ``on_auth_packet``) is an ``ask``: with plain hooks the
whole CONNECT is answered in the call that read it; with ``async def`` hooks the flow
stops at that step and continues when the shell tells the answer. A refusal answers
CONNACK with its reason code and closes.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..codec import (
    MAX_VARINT,
    PROTOCOL_5,
    PROTOCOL_31,
    Auth,
    ConnAck,
    Connect,
    Property,
    ProtocolViolation,
    ReasonCode,
    connack_code_v3,
)
from ..errors import Refuse
from ..logsafe import safe
from ._ask import Ask, ask
from ._sessions import EXPIRY_NEVER
from ._state import CONNECTED, CONNECTING

if TYPE_CHECKING:
    from ..config import BrokerSettings
    from ..hooks import Hooks
    from ..stats import Stats
    from ._access import Access
    from ._connection import Connection
    from ._flapping import Flapping
    from ._router import Router
    from ._sessions import Registry

log = logging.getLogger("midge.broker")
clients_log = logging.getLogger("midge.clients")

#: the largest keepalive CONNECT can carry (the limit is off at this value)
KEEPALIVE_MAX = 0xFFFF
_LEVELS = {3: "3.1", 4: "3.1.1", 5: "5.0"}
#: properties that carry diagnostics, withheld from AUTH when a v5 client set Request
#: Problem Information to 0 [MQTT-3.1.2-29]
_PROBLEM_INFO = (Property.REASON_STRING, Property.USER_PROPERTY)


class PendingConnect:
    """A CONNECT being answered: what was decided before authentication, kept while an
    enhanced-authentication exchange runs."""

    __slots__ = ("assigned", "keepalive", "method", "packet", "server_keepalive")

    def __init__(self, packet: Connect, assigned: bool, keepalive: int,
                 server_keepalive: int | None, method: str | None) -> None:
        self.packet = packet
        self.assigned = assigned
        self.keepalive = keepalive
        self.server_keepalive = server_keepalive
        #: the Authentication Method (None: no enhanced authentication)
        self.method = method


class ConnectFlow:
    """CONNECT, the AUTH exchange of CONNECT, and re-authentication after it."""

    def __init__(self, limits: BrokerSettings, hooks: Hooks, registry: Registry,
                 router: Router, clock: Callable[[], float], access: Access,
                 stats: Stats, *, flapping: Flapping | None = None) -> None:
        self._limits = limits
        self._access = access
        self._stats = stats
        self._hooks = hooks
        self._registry = registry
        self._router = router
        self._clock = clock
        #: refuses client ids that keep connecting and dropping (off by default)
        self._flapping = flapping
        #: connections in the enhanced-authentication exchange of their CONNECT
        self.exchanges: dict[Connection, PendingConnect] = {}

    def forget(self, conn: Connection) -> None:
        """``conn`` ended before CONNACK."""
        self.exchanges.pop(conn, None)

    # -- CONNECT ---------------------------------------------------------------------------

    def connect(self, conn: Connection, packet: Connect) -> Ask | None:
        """Validate the CONNECT, then ask ``on_connect``."""
        level = conn.outbox.level = packet.protocol_level
        v5 = level == PROTOCOL_5
        props = packet.properties
        cid = packet.client_id
        assigned = False
        limits = self._limits
        conn.state = CONNECTING
        if len(cid.encode()) > limits.max_client_id_length:
            conn.client_id = cid
            return self._refuse(conn, ReasonCode.CLIENT_IDENTIFIER_NOT_VALID, "client id too long")
        if not cid:
            # v5 assigns an id whatever Clean Start says [MQTT-3.1.3-6]; 3.1.1 only for a
            # clean session [MQTT-3.1.3-8]; 3.1 never
            if level == PROTOCOL_31 or not (v5 or packet.clean_start):
                return self._refuse(conn, ReasonCode.CLIENT_IDENTIFIER_NOT_VALID,
                                    "empty client id without clean session")
            cid = "midge" + uuid.uuid4().hex[:18]
            assigned = conn.id_assigned = True
        conn.client_id = cid
        if self._flapping is not None and self._flapping.refused(conn):
            return None
        # a transport-established identity (TLS use_identity_as_username) wins
        conn.username = packet.username if conn.identity is None else conn.identity
        if v5:  # also for the AUTH packets of an enhanced-authentication exchange
            conn.problem_info = props.get(Property.REQUEST_PROBLEM_INFORMATION, 1) == 1
            outbox = conn.outbox
            outbox.max_packet = props.get(Property.MAXIMUM_PACKET_SIZE, outbox.max_packet)
        keepalive = packet.keepalive
        server_keepalive = None
        max_keepalive = limits.max_keepalive
        if max_keepalive < KEEPALIVE_MAX and (keepalive > max_keepalive or keepalive == 0):
            if v5:
                server_keepalive = keepalive = max_keepalive
            elif keepalive > max_keepalive:
                # v3 cannot be told another keepalive, and no v3 return code says "your
                # keepalive": the connection is closed without a CONNACK [MQTT-3.2.2-6]
                why = f"keepalive {keepalive} s exceeds max_keepalive {max_keepalive}"
                conn.warn(log, "client %s from %s refused: %s (closed without CONNACK)",
                          conn.name, conn.remote, why)
                conn.close(None, f"refused: {why}")
                return None
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
        method = props.get(Property.AUTHENTICATION_METHOD) if v5 else None
        pending = PendingConnect(packet, assigned, keepalive, server_keepalive, method)
        return ask(self._hooks.on_connect, (conn, packet), None,
                   self._connect_checked, conn, pending)

    def _connect_checked(self, conn: Connection, pending: PendingConnect,
                         refusal: int | None, error: BaseException | None) -> Ask | None:
        if error is not None:
            raise error
        if conn.closing:
            return None  # the connection went away while plugins were deciding
        if refusal is not None:
            return self._refuse(conn, ReasonCode(refusal), "refused by a plugin")
        method = pending.method
        if method is None:
            return self._authenticate(conn, pending, {})
        props = pending.packet.properties
        request_props: dict[int, Any] = {Property.AUTHENTICATION_METHOD: method}
        data = props.get(Property.AUTHENTICATION_DATA)
        if data is not None:
            request_props[Property.AUTHENTICATION_DATA] = data
        return self._auth_step(conn, pending,
                               Auth(ReasonCode.CONTINUE_AUTHENTICATION, request_props))

    def _authenticate(self, conn: Connection, pending: PendingConnect,
                      auth_props: dict[int, Any]) -> Ask | None:
        """Once any enhanced authentication succeeded: the ``on_connect_authenticate``
        vote."""
        return ask(self._hooks.on_connect_authenticate, (conn, pending.packet), None,
                   self._authenticated, conn, pending, auth_props)

    def _authenticated(self, conn: Connection, pending: PendingConnect,
                       auth_props: dict[int, Any], allowed: bool | None,
                       error: BaseException | None) -> Ask | None:
        if isinstance(error, Refuse):
            # a plugin that cannot decide now (0x89 Server busy) or bans (0x8A)
            return self._refuse(conn, error.reason_code, error.reason or "refused by a plugin")
        if error is not None:
            raise error
        if conn.closing:
            return None
        if allowed is not True:
            if pending.packet.username is None:
                return self._refuse(conn, ReasonCode.NOT_AUTHORIZED, "not authorized")
            return self._refuse(conn, ReasonCode.BAD_USERNAME_OR_PASSWORD,
                                "bad user name or password")
        refusal = self._admission(conn, pending.packet)
        if refusal is not None:
            return self._refuse(conn, *refusal)
        self._accept(conn, pending, auth_props)
        return None

    def _admission(self, conn: Connection, packet: Connect) -> tuple[ReasonCode, str] | None:
        """What an authenticated client may still be refused for: a will it may not
        publish, a client id whose session belongs to another user, a quota."""
        will = packet.will
        if will is not None:
            why = self._access.will_refusal(conn, will.topic)
            if why is not None:
                return ReasonCode.NOT_AUTHORIZED, why
        return self._registry.admission(conn, conn.client_id, packet.clean_start)

    def _accept(self, conn: Connection, pending: PendingConnect,
                auth_props: dict[int, Any]) -> None:
        """Take the session, answer CONNACK 0, resend what the session had unfinished."""
        packet = pending.packet
        props = packet.properties
        level = packet.protocol_level
        v5 = level == PROTOCOL_5
        cid = conn.client_id
        limits = self._limits
        hooks = self._hooks
        registry = self._registry
        if hooks.on_session_establish is not None:
            hooks.on_session_establish(conn, packet)
        session, present = registry.take(conn, cid, packet.clean_start)
        conn.auth_method = pending.method
        conn.reauthenticating = False
        ack_props: dict[int, Any] = {}
        if v5:
            receive_max = props.get(Property.RECEIVE_MAXIMUM)
            if receive_max:
                session.max_inflight = min(receive_max, registry.max_inflight)
            conn.outbox.alias_max = props.get(Property.TOPIC_ALIAS_MAXIMUM, 0)
            expiry = props.get(Property.SESSION_EXPIRY_INTERVAL, 0)
            if expiry > limits.session_expiry_max:
                expiry = limits.session_expiry_max
                ack_props[Property.SESSION_EXPIRY_INTERVAL] = expiry
            session.expiry_interval = None if expiry == EXPIRY_NEVER else expiry
        elif packet.clean_start:
            session.expiry_interval = 0
        else:
            session.expiry_interval = limits.persistent_session_expiry or None
        conn.keepalive = pending.keepalive
        conn.will = packet.will
        conn.session = session
        session.username = conn.username
        session.protocol_level = level
        if conn.journal is not None:
            conn.journal.track(session, conn.will)
        conn.state = CONNECTED
        registry.connected(conn)
        if v5:
            self._connack_properties(ack_props, conn, pending)
            ack_props.update(auth_props)
        conn.durable()
        # MQTT 3.1 has no Session Present flag: its CONNACK's first byte is reserved
        conn.send(ConnAck(0, present and level != PROTOCOL_31, ack_props))
        if clients_log.isEnabledFor(logging.INFO):  # its arguments cost a connect's time
            clients_log.info(
                "client %s connected from %s on %s (MQTT %s, clean=%s, keepalive=%d, "
                "session present=%s)", conn.name, conn.remote, conn.listener.label,
                _LEVELS[level], packet.clean_start, pending.keepalive, present,
                extra=conn.log_fields,
            )
        if hooks.on_session_established is not None:
            hooks.on_session_established(conn, packet)
        self._router.resume(conn, session)

    def _connack_properties(self, ack_props: dict[int, Any], conn: Connection,
                            pending: PendingConnect) -> None:
        """What a v5 CONNACK tells: the assigned id, the limits and what is available."""
        limits = self._limits
        props = pending.packet.properties
        if pending.assigned:
            ack_props[Property.ASSIGNED_CLIENT_IDENTIFIER] = conn.client_id
        if pending.server_keepalive is not None:
            ack_props[Property.SERVER_KEEP_ALIVE] = pending.server_keepalive
        ack_props[Property.RECEIVE_MAXIMUM] = limits.receive_maximum
        if limits.max_packet_size < MAX_VARINT:
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
        if limits.response_information and props.get(Property.REQUEST_RESPONSE_INFORMATION):
            ack_props[Property.RESPONSE_INFORMATION] = limits.response_information

    def _refuse(self, conn: Connection, reason: ReasonCode, why: str) -> Ask | None:
        """Answer CONNACK ``reason`` and close; nothing more is asked (None)."""
        # the log names the client as it asked to be named (not by an id the broker
        # would have assigned), and gives the code the client was actually sent
        if conn.client_id and not conn.id_assigned:
            who = f"client {conn.name} from {conn.remote}"
        else:
            who = f"client with an empty client id from {conn.remote}"
        conn.close_reason = f"refused: {why}"
        if conn.v5:
            conn.send(ConnAck(reason))
            code = f"CONNACK 0x{int(reason):02X}"
        else:
            v3_code = connack_code_v3(reason)
            conn.send(ConnAck(v3_code))
            code = f"CONNACK return code {v3_code}"
        self._stats.refused(reason.name.lower())
        # a stranger can cause this line at will: throttled, and every field escaped
        conn.warn(log, "%s refused: %s (%s)", who, safe(why, 256), code)
        # a refusal ends the connection, also when it answers an AUTH of the exchange
        conn.close(None, conn.close_reason)
        return None

    # -- enhanced authentication (MQTT 5 section 4.12) -----------------------------------

    def _auth_step(self, conn: Connection, pending: PendingConnect, request: Auth) -> Ask | None:
        """One step of the AUTH exchange of a CONNECT: ``request`` (built from the
        CONNECT, or the client's AUTH 0x18) goes through ``on_auth_packet``."""
        self.exchanges.pop(conn, None)
        return ask(self._hooks.on_auth_packet, (conn, request), request,
                   self._auth_answered, conn, pending, request)

    def _auth_answered(self, conn: Connection, pending: PendingConnect, request: Auth,
                       answer: Any, error: BaseException | None) -> Ask | None:
        method = pending.method
        assert method is not None
        if isinstance(error, Refuse):
            return self._refuse(conn, error.reason_code,
                                error.reason or "refused by enhanced authentication")
        if error is not None:
            raise error
        if conn.closing:
            return None
        if answer is request or not isinstance(answer, Auth):
            # nobody answered: no plugin knows this method
            return self._refuse(conn, ReasonCode.BAD_AUTHENTICATION_METHOD,
                                f"authentication method {method!r} is not supported")
        code = answer.reason_code
        if code == ReasonCode.SUCCESS:
            return self._authenticate(conn, pending, self._auth_props(conn, answer, method, True))
        if code != ReasonCode.CONTINUE_AUTHENTICATION:
            return self._refuse(
                conn, _failure_code(code), f"on_auth_packet answered reason code 0x{code:02X}"
            )
        conn.send(Auth(code, self._auth_props(conn, answer, method)))
        # the connection stays open, not yet connected, for the client's AUTH reply;
        # the CONNECT timeout bounds the whole exchange
        self.exchanges[conn] = pending
        return None

    def auth(self, conn: Connection, packet: Auth) -> Ask | None:
        """An AUTH from the client: the reply in the exchange of its CONNECT, or
        re-authentication after CONNACK (AUTH 0x19 starts it, AUTH 0x18 continues it)."""
        if not conn.connected:
            return self._auth_reply(conn, packet)
        method = conn.auth_method
        if method is None:
            raise ProtocolViolation("AUTH without an authentication method in CONNECT")
        if packet.properties.get(Property.AUTHENTICATION_METHOD) != method:
            raise ProtocolViolation("AUTH with another authentication method than CONNECT")
        code = packet.reason_code
        if code == ReasonCode.CONTINUE_AUTHENTICATION:
            if not conn.reauthenticating:
                raise ProtocolViolation("AUTH 0x18 without a re-authentication in progress")
        elif code != ReasonCode.REAUTHENTICATE:
            raise ProtocolViolation(f"AUTH with reason code 0x{code:02X} from a client")
        return ask(self._hooks.on_auth_packet, (conn, packet), packet,
                   self._reauth_answered, conn, packet, method)

    def _auth_reply(self, conn: Connection, packet: Auth) -> Ask | None:
        pending = self.exchanges.get(conn)
        if pending is None:
            raise ProtocolViolation("AUTH before CONNACK without an exchange in progress")
        if packet.reason_code != ReasonCode.CONTINUE_AUTHENTICATION:
            raise ProtocolViolation(
                f"AUTH 0x{packet.reason_code:02X} during the authentication exchange"
            )
        if packet.properties.get(Property.AUTHENTICATION_METHOD) != pending.method:
            raise ProtocolViolation("AUTH with another authentication method than CONNECT")
        return self._auth_step(conn, pending, packet)

    def _reauth_answered(self, conn: Connection, packet: Auth, method: str, answer: Any,
                         error: BaseException | None) -> None:
        if isinstance(error, Refuse):
            conn.warn(log, "client %s: re-authentication refused (0x%02X)", conn.name,
                      int(error.reason_code))
            why = error.reason or "re-authentication failed"
            conn.close(error.reason_code, why, reason=why)
            return
        if error is not None:
            raise error
        if not conn.connected:
            return
        if answer is packet or not isinstance(answer, Auth):
            conn.warn(log, "client %s: no plugin answered re-authentication with %r",
                      conn.name, method)
            why = "authentication method not supported"
            conn.close(ReasonCode.BAD_AUTHENTICATION_METHOD, why, reason=why)
            return
        code = answer.reason_code
        if code not in (ReasonCode.SUCCESS, ReasonCode.CONTINUE_AUTHENTICATION):
            why = "re-authentication failed"
            conn.close(_failure_code(code), why, reason=why)
            return
        conn.reauthenticating = code == ReasonCode.CONTINUE_AUTHENTICATION
        if code == ReasonCode.SUCCESS:
            clients_log.info("client %s re-authenticated", conn.name, extra=conn.log_fields)
        conn.send(Auth(code, self._auth_props(conn, answer, method)))

    @staticmethod
    def _auth_props(conn: Connection, answer: Auth, method: str,
                    final: bool = False) -> dict[int, Any]:
        """The properties of a plugin's AUTH answer, as sent: the connection's method,
        and no diagnostics on AUTH when the client asked for none."""
        props = dict(answer.properties)
        props[Property.AUTHENTICATION_METHOD] = method
        if not final and not conn.problem_info:
            for key in _PROBLEM_INFO:
                props.pop(key, None)
        return props


def _failure_code(code: int) -> ReasonCode:
    """A plugin's failure answer as a reason code a client may be sent (0x80 and up)."""
    if code >= ReasonCode.UNSPECIFIED_ERROR:
        return ReasonCode(code)
    return ReasonCode.UNSPECIFIED_ERROR
