"""The Broker: listeners, the client registry, sessions, routing, wills and expiry.

The rule: routing never awaits. A PUBLISH is matched against the trie and appended to
each subscriber's connection buffer or session queue before the next packet is read;
only CONNECT (which may have to wait for plugins later) is a coroutine.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable
from typing import Any

import anyio
from anyio.abc import SocketAttribute, TaskGroup, TaskStatus

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
from .config import ListenerSettings, Settings
from .connection import Connection
from .message import Message
from .session import Enqueued, Outbound, Session
from .stats import Stats
from .topics import RetainedIndex, SubscriptionTrie

log = logging.getLogger("midge.broker")
#: per-client lifecycle lines (connected, disconnected, wills): shown with -v
clients_log = logging.getLogger("midge.clients")

#: seconds between sweeps for CONNECT timeouts, keepalive and session expiry
SWEEP_INTERVAL = 0.5
#: seconds connections get to close when the broker stops
SHUTDOWN_GRACE = 5.0
NEVER = 0xFFFFFFFF


class Broker:
    """An MQTT broker. ``await broker.run()`` serves until ``shutdown()``."""

    def __init__(self, settings: Settings | None = None) -> None:
        self.settings = settings or Settings.default()
        self.limits = self.settings.broker
        self.stats = Stats()
        self.trie = SubscriptionTrie()
        self.retained: RetainedIndex[Message] = RetainedIndex()
        #: every session, online or not, by client id
        self.sessions: dict[str, Session] = {}
        #: connected clients (CONNACK sent) by client id
        self.clients: dict[str, Connection] = {}
        #: every open network connection, before and after CONNECT
        self.connections: set[Connection] = set()
        #: offline sessions with a finite expiry
        self._expiring: dict[str, Session] = {}
        self._service_scope: anyio.CancelScope | None = None
        self._conns_tg: TaskGroup | None = None
        #: (host, port) actually bound, per listener, once running
        self.addresses: list[tuple[str, int]] = []
        max_inflight = self.limits.max_inflight_messages
        self._max_inflight = max_inflight or 65535
        self.handlers: dict[type[Any], Callable[[Connection, Any], None]] = {
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

    # -- running -------------------------------------------------------------------------

    async def run(self, *, task_status: TaskStatus[Broker] = anyio.TASK_STATUS_IGNORED) -> None:
        """Bind every listener, serve until ``shutdown()``, then close gracefully."""
        listeners = []
        try:
            for spec in self.settings.listeners:
                try:
                    multi = await anyio.create_tcp_listener(
                        local_host=spec.host, local_port=spec.port, reuse_port=False
                    )
                except OSError as exc:
                    # name the address: with several listeners "address in use" is a riddle
                    raise OSError(
                        exc.errno, f"cannot listen on {spec.host}:{spec.port}: {exc.strerror}"
                    ) from exc
                for listener in multi.listeners:
                    listeners.append((listener, spec))
                    address: Any = listener.extra(SocketAttribute.local_address)
                    host, port = address[0], address[1]
                    self.addresses.append((str(host), int(port)))
                    log.info(
                        "listening on %s:%s (tcp%s)", host, port,
                        ", anonymous clients allowed" if spec.allow_anonymous else "",
                    )
        except BaseException:
            for listener, _ in listeners:
                await listener.aclose()
            raise
        async with anyio.create_task_group() as conns:
            self._conns_tg = conns
            async with anyio.create_task_group() as service:
                self._service_scope = service.cancel_scope
                for listener, spec in listeners:
                    service.start_soon(self._accept_loop, listener, spec)
                service.start_soon(self._sweep_loop)
                task_status.started(self)
            log.info("shutting down: closing %d connections", len(self.connections))
            for listener, _ in listeners:
                await listener.aclose()
            for conn in list(self.connections):
                conn.kill(ReasonCode.SERVER_SHUTTING_DOWN, "server shutting down")
            conns.cancel_scope.deadline = anyio.current_time() + SHUTDOWN_GRACE
        log.info("stopped")

    def shutdown(self) -> None:
        """Stop accepting, tell v5 clients 0x8B, close every connection, return from run."""
        if self._service_scope is not None:
            self._service_scope.cancel()

    async def _accept_loop(self, listener: Any, spec: ListenerSettings) -> None:
        assert self._conns_tg is not None
        while True:
            try:
                stream = await listener.accept()
            except OSError as exc:
                # out of file descriptors and the like: keep serving the others
                log.error("accept on %s failed: %s", spec.label, exc)
                await anyio.sleep(0.1)
                continue
            self._conns_tg.start_soon(self._serve_connection, stream, spec)

    async def _serve_connection(self, stream: Any, spec: ListenerSettings) -> None:
        try:
            host, port = stream.extra(SocketAttribute.remote_address)[:2]
            remote = f"{host}:{port}"
        except Exception:
            remote = "?"
        if len(self.connections) >= self.limits.max_connections:
            log.warning(
                "refusing connection from %s: max_connections %d reached",
                remote, self.limits.max_connections,
            )
            await stream.aclose()
            return
        conn = Connection(self, stream, spec, remote, self.limits.max_packet_size)
        self.connections.add(conn)
        self.stats.connections_total += 1
        try:
            await conn.run()
        finally:
            self.connections.discard(conn)

    async def _sweep_loop(self) -> None:
        while True:
            await anyio.sleep(SWEEP_INTERVAL)
            self.sweep(time.monotonic())

    def sweep(self, now: float) -> None:
        """Close connections past their CONNECT timeout or keepalive; expire sessions."""
        connect_timeout = self.limits.connect_timeout
        for conn in list(self.connections):
            if not conn.connected:
                if now - conn.opened > connect_timeout and not conn.closing:
                    log.warning(
                        "client %s sent no CONNECT within %d s; closing",
                        conn.name, connect_timeout,
                    )
                    conn.kill(None, "CONNECT timeout")
            elif conn.keepalive and now - conn.last_seen > conn.keepalive * 1.5:
                clients_log.info(
                    "client %s: keepalive of %d s expired; closing", conn.name, conn.keepalive
                )
                conn.kill(ReasonCode.KEEP_ALIVE_TIMEOUT, "keepalive timeout")
        if self._expiring:
            for cid, session in list(self._expiring.items()):
                if session.expires_at is not None and session.expires_at <= now:
                    clients_log.info("session %s expired", cid)
                    self._discard_session(session)

    # -- CONNECT -------------------------------------------------------------------------

    async def connect(self, conn: Connection, packet: Connect) -> None:
        """Handle CONNECT: validate, authenticate, take over or resume, answer CONNACK."""
        level = conn.protocol_level = packet.protocol_level
        v5 = level == PROTOCOL_5
        props = packet.properties
        cid = packet.client_id
        assigned = False
        if len(cid.encode()) > self.limits.max_client_id_length:
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
        keepalive = packet.keepalive
        server_keepalive = None
        max_keepalive = self.limits.max_keepalive
        if max_keepalive < 65535 and (keepalive > max_keepalive or keepalive == 0):
            if v5:
                server_keepalive = keepalive = max_keepalive
            elif keepalive > max_keepalive:
                # v3 cannot be told another keepalive; Mosquitto answers the same way
                return self._refuse(
                    conn, ReasonCode.CLIENT_IDENTIFIER_NOT_VALID,
                    f"keepalive {keepalive} s exceeds max_keepalive {max_keepalive}",
                )
        if Property.AUTHENTICATION_METHOD in props:
            return self._refuse(
                conn, ReasonCode.BAD_AUTHENTICATION_METHOD,
                f"authentication method {props[Property.AUTHENTICATION_METHOD]!r} is not supported",
            )
        refusal = self._authenticate(conn, packet)
        if refusal is not None:
            return self._refuse(conn, refusal, "not authorized")

        old = self.clients.get(cid)
        if old is not None and old is not conn:
            clients_log.info(
                "client %s: session taken over by a new connection from %s", cid, conn.remote
            )
            old.session = None
            old.kill(ReasonCode.SESSION_TAKEN_OVER, "session taken over")
            del self.clients[cid]
        session = self.sessions.get(cid)
        # a session with expiry 0 (a clean session) ends with the connection just taken
        # over: its state must not be reused [MQTT-3.1.2-6] (MQTT 5 section 3.1.2.11.2)
        if session is not None and (packet.clean_start or session.expiry_interval == 0):
            self._discard_session(session)
            session = None
        present = session is not None
        if session is None:
            session = Session(cid, level, self._max_inflight, self.limits.max_queued_messages)
            self.sessions[cid] = session
        self._expiring.pop(cid, None)
        session.protocol_level = level
        session.max_inflight = self._max_inflight
        if v5:
            receive_max = props.get(Property.RECEIVE_MAXIMUM)
            if receive_max:
                session.max_inflight = min(receive_max, self._max_inflight)
            conn.max_packet_out = props.get(Property.MAXIMUM_PACKET_SIZE, conn.max_packet_out)
            conn.problem_info = props.get(Property.REQUEST_PROBLEM_INFORMATION, 1) == 1
        ack_props: dict[int, Any] = {}
        if v5:
            expiry = props.get(Property.SESSION_EXPIRY_INTERVAL, 0)
            if expiry > self.limits.session_expiry_max:
                expiry = self.limits.session_expiry_max
                ack_props[Property.SESSION_EXPIRY_INTERVAL] = expiry
            session.expiry_interval = None if expiry == NEVER else expiry
        elif packet.clean_start:
            session.expiry_interval = 0
        else:
            session.expiry_interval = self.limits.persistent_session_expiry or None

        conn.keepalive = keepalive
        conn.will = packet.will
        conn.username = packet.username
        conn.session = session
        conn.connected = True
        self.clients[cid] = conn
        if v5:
            if assigned:
                ack_props[Property.ASSIGNED_CLIENT_IDENTIFIER] = cid
            if server_keepalive is not None:
                ack_props[Property.SERVER_KEEP_ALIVE] = server_keepalive
            ack_props[Property.RECEIVE_MAXIMUM] = self.limits.receive_maximum
            if self.limits.max_packet_size < 268_435_455:
                ack_props[Property.MAXIMUM_PACKET_SIZE] = self.limits.max_packet_size
            ack_props[Property.TOPIC_ALIAS_MAXIMUM] = 0
            ack_props[Property.SHARED_SUBSCRIPTION_AVAILABLE] = 0
        conn.send(ConnAck(0, present, ack_props))
        self.stats.clients_connected = len(self.clients)
        clients_log.info(
            "client %s connected from %s (MQTT %s, clean=%s, keepalive=%d, session present=%s)",
            cid, conn.remote, {3: "3.1", 4: "3.1.1", 5: "5.0"}[level],
            packet.clean_start, keepalive, present,
        )
        for out in session.resume():
            if out.released:
                conn.send(PubRel(out.packet_id))
            else:
                self._write_publish(conn, out, dup=True)
        self._pump(conn, session)

    def _authenticate(self, conn: Connection, packet: Connect) -> ReasonCode | None:
        """None to accept; a refusal reason code otherwise."""
        if conn.listener.allow_anonymous:
            return None
        if packet.username is None:
            return ReasonCode.NOT_AUTHORIZED
        return ReasonCode.BAD_USERNAME_OR_PASSWORD

    def _refuse(self, conn: Connection, reason: ReasonCode, why: str) -> None:
        log.warning(
            "client %s from %s refused: %s (0x%02X)", conn.name, conn.remote, why, int(reason)
        )
        conn.close_reason = f"refused: {why}"
        if conn.protocol_level == PROTOCOL_5:
            conn.send(ConnAck(reason))
        else:
            conn.send(ConnAck(connack_code_v3(reason)))

    # -- disconnects, wills, expiry ------------------------------------------------------

    def connection_lost(self, conn: Connection) -> None:
        """Called once when a connection ends, however it ends."""
        if not conn.connected:
            return
        cid = conn.client_id
        if self.clients.get(cid) is conn:
            del self.clients[cid]
            self.stats.clients_connected = len(self.clients)
        session = conn.session
        conn.session = None
        if session is not None:
            session.online = False
            if session.expiry_interval == 0:
                self._discard_session(session)
            elif session.expiry_interval is not None:
                session.expires_at = time.monotonic() + session.expiry_interval
                self._expiring[cid] = session
        clients_log.info("client %s disconnected: %s", cid, conn.close_reason or "closed")
        will = conn.will
        conn.will = None
        if will is not None and not conn.clean_disconnect:
            clients_log.info("client %s: publishing its will to %s", cid, will.topic)
            self.route(Message(will.topic, will.payload, will.qos, will.retain,
                               will.properties, origin=cid))

    def _discard_session(self, session: Session) -> None:
        cid = session.client_id
        for topic_filter in session.subscriptions:
            self.trie.remove(cid, topic_filter)
        session.subscriptions.clear()
        session.clear_queue()
        self._expiring.pop(cid, None)
        if self.sessions.get(cid) is session:
            del self.sessions[cid]

    # -- PUBLISH and its acknowledgements ------------------------------------------------

    def _on_publish(self, conn: Connection, packet: Publish) -> None:
        session = conn.session
        assert session is not None
        qos = packet.qos
        v5 = conn.protocol_level == PROTOCOL_5
        if v5 and Property.TOPIC_ALIAS in packet.properties:
            raise RemoteProtocolError(
                ReasonCode.TOPIC_ALIAS_INVALID, "topic alias used but the maximum is 0"
            )
        topic = packet.topic
        self._check_topic(topic, ReasonCode.TOPIC_NAME_INVALID)
        self.stats.messages_received += 1
        if qos == 2:
            if packet.packet_id in session.inbound_qos2:
                conn.send(PubRec(packet.packet_id))  # a resent duplicate: ack, don't route
                return
            if len(session.inbound_qos2) >= self.limits.receive_maximum:
                raise RemoteProtocolError(
                    ReasonCode.RECEIVE_MAXIMUM_EXCEEDED,
                    f"more than {self.limits.receive_maximum} QoS 2 messages unacknowledged",
                )
        code = ReasonCode.SUCCESS
        if topic.startswith("$"):
            log.warning("client %s may not publish to %s; dropped", conn.client_id, topic)
            code = ReasonCode.NOT_AUTHORIZED
        else:
            message = Message(topic, packet.payload, qos, packet.retain, packet.properties,
                              conn.client_id)
            if not self.route(message) and qos and v5:
                code = ReasonCode.NO_MATCHING_SUBSCRIBERS
        if qos == 1:
            conn.send(PubAck(packet.packet_id, code if v5 else 0))
        elif qos == 2:
            if code < 0x80:
                session.inbound_qos2.add(packet.packet_id)
            conn.send(PubRec(packet.packet_id, code if v5 else 0))

    def _check_topic(self, topic: str, reason: ReasonCode) -> None:
        if len(topic) > self.limits.max_topic_length and len(topic.encode()) > \
                self.limits.max_topic_length:
            raise RemoteProtocolError(reason, f"topic longer than {self.limits.max_topic_length}")
        if topic.count("/") >= self.limits.max_topic_levels:
            raise RemoteProtocolError(
                reason, f"topic has more than {self.limits.max_topic_levels} levels"
            )

    def route(self, message: Message) -> int:
        """Retain and deliver a message to every matching subscriber; returns the count."""
        if message.retain:
            if message.payload:
                self.retained.set(message.topic, message)
            else:
                self.retained.discard(message.topic)
        origin = message.origin
        delivered = 0
        for route in self.trie.match(message.topic):
            if route.client_id == origin:
                qos = route.qos_if_own
                if qos < 0:
                    continue
            else:
                qos = route.qos
            if message.qos < qos:
                qos = message.qos
            self.deliver(
                route.client_id, message, qos,
                message.retain and route.retain_as_published, route.subscription_ids,
            )
            delivered += 1
        return delivered

    def deliver(
        self, client_id: str, message: Message, qos: int, retain: bool,
        subscription_ids: tuple[int, ...] = (),
    ) -> None:
        """Send one message to one client now, or queue it in its session."""
        conn = self.clients.get(client_id)
        if not qos:
            if conn is None:
                return
            if conn.backlog >= self.limits.max_queued_messages:
                self.stats.messages_dropped += 1
                return
            frame = message.frame(conn.protocol_level, 0, retain, 0, subscription_ids)
            if len(frame) > conn.max_packet_out:
                self.stats.messages_dropped += 1
                return
            conn.write(frame)
            self.stats.messages_sent += 1
            return
        session = self.sessions.get(client_id)
        if session is None:
            return
        out = Outbound(message, qos, retain, subscription_ids)
        result = session.enqueue(out)
        if result is Enqueued.SEND:
            assert conn is not None
            self._write_publish(conn, out)
        elif result is Enqueued.DROPPED:
            self.stats.messages_dropped += 1
            log.debug("client %s: session queue full; message to %s dropped",
                      client_id, message.topic)

    def _write_publish(self, conn: Connection, out: Outbound, dup: bool = False) -> None:
        frame = out.message.frame(
            conn.protocol_level, out.qos, out.retain, out.packet_id, out.subscription_ids, dup
        )
        if len(frame) > conn.max_packet_out:
            # too big for this client: complete the flow on its behalf
            self.stats.messages_dropped += 1
            session = conn.session
            if session is not None:
                session.drop(out.packet_id)
            return
        conn.write(frame)
        self.stats.messages_sent += 1

    def _pump(self, conn: Connection, session: Session) -> None:
        # a delivery too large for the client is dropped by _write_publish and frees its
        # slot at once; refill until nothing moves, or the queue behind it stalls for good
        while ready := session.sendable():
            for out in ready:
                self._write_publish(conn, out)

    def _on_puback(self, conn: Connection, packet: PubAck) -> None:
        session = conn.session
        assert session is not None
        if session.puback(packet.packet_id) is not None and session.pending:
            self._pump(conn, session)

    def _on_pubrec(self, conn: Connection, packet: PubRec) -> None:
        session = conn.session
        assert session is not None
        if packet.reason_code >= 0x80:
            session.drop(packet.packet_id)
            self._pump(conn, session)
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
            self._pump(conn, session)

    # -- SUBSCRIBE / UNSUBSCRIBE ---------------------------------------------------------

    def _on_subscribe(self, conn: Connection, packet: Subscribe) -> None:
        session = conn.session
        assert session is not None
        v5 = conn.protocol_level == PROTOCOL_5
        sids = packet.properties.get(Property.SUBSCRIPTION_IDENTIFIER)
        sid = sids[0] if sids else 0
        codes: list[int] = []
        granted = []
        for sub in packet.subscriptions:
            topic_filter = sub.topic_filter
            self._check_topic(topic_filter, ReasonCode.TOPIC_FILTER_INVALID)
            if topic_filter.startswith("$share/"):
                log.warning(
                    "client %s: shared subscription %s refused: not supported yet",
                    conn.client_id, topic_filter,
                )
                codes.append(
                    ReasonCode.SHARED_SUBSCRIPTIONS_NOT_SUPPORTED if v5 else SUBACK_FAILURE
                )
                continue
            new = self.trie.add(session.client_id, sub, sid)
            session.subscriptions[topic_filter] = (sub, sid)
            codes.append(sub.qos)
            granted.append((sub, new))
        conn.send(SubAck(packet.packet_id, codes))
        for sub, new in granted:
            if sub.retain_handling == 2 or (sub.retain_handling == 1 and not new):
                continue
            for message in self.retained.match(sub.topic_filter):
                qos = min(message.qos, sub.qos)
                self.deliver(session.client_id, message, qos, True, (sid,) if sid else ())

    def _on_unsubscribe(self, conn: Connection, packet: Unsubscribe) -> None:
        session = conn.session
        assert session is not None
        codes: list[int] = []
        for topic_filter in packet.topic_filters:
            existed = self.trie.remove(session.client_id, topic_filter)
            session.subscriptions.pop(topic_filter, None)
            codes.append(ReasonCode.SUCCESS if existed else ReasonCode.NO_SUBSCRIPTION_EXISTED)
        conn.send(UnsubAck(packet.packet_id, codes if conn.protocol_level == PROTOCOL_5 else []))

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

    def _on_auth(self, conn: Connection, packet: Auth) -> None:
        raise ProtocolViolation("AUTH without an authentication method in CONNECT")
