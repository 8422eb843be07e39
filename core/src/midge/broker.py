"""The Broker: listeners, the client registry, sessions, routing, wills and expiry.

The rule: routing never awaits. A PUBLISH is matched against the trie and appended to
each subscriber's connection buffer or session queue before the next packet is read.
Plugins see every event through ``self.hooks``; a hook nobody implements is None and
costs one attribute test.
"""

from __future__ import annotations

import heapq
import logging
import time
from typing import Any

import anyio
from anyio.abc import TaskGroup, TaskStatus

from .access import ListenerAccess, SysPublisher
from .codec import ReasonCode, RemoteProtocolError, Subscription, Will
from .config import Settings
from .connection import Connection
from .handlers import Handlers, PendingConnect, will_delay
from .inline import InlineMixin
from .listeners.tcp import Bound, bind_tcp
from .message import Message
from .plugins import Hooks, activate
from .session import Enqueued, Outbound, Session
from .stats import Stats
from .topics import RetainedIndex, SharedGroup, SubscriptionTrie

log = logging.getLogger("midge.broker")
#: per-client lifecycle lines (connected, disconnected, wills): shown with -v
clients_log = logging.getLogger("midge.clients")

#: seconds between sweeps for CONNECT timeouts, keepalive and session expiry
SWEEP_INTERVAL = 0.5
#: seconds connections get to close when the broker stops
SHUTDOWN_GRACE = 5.0
#: per-client ACL decisions remembered before the cache is cleared
ACL_CACHE_LIMIT = 1024


class Broker(Handlers, InlineMixin):
    """An MQTT broker. ``await broker.run()`` serves until ``shutdown()``; or use
    ``async with Broker(settings) as broker:`` to run it inside another anyio program.

    ``plugins`` adds plugin objects directly, (name, object) pairs called before the
    ones the settings activate through entry points.
    """

    def __init__(
        self, settings: Settings | None = None, plugins: list[tuple[str, Any]] | None = None
    ) -> None:
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
        self.expiring: dict[str, Session] = {}
        #: (deadline, tie-breaker, message) of retained messages that expire
        self._retained_expiry: list[tuple[float, int, Message]] = []
        #: v5 wills waiting for their Will Delay Interval: client id -> (monotonic
        #: deadline, the closed connection, the will); published by ``sweep``
        self.pending_wills: dict[str, tuple[float, Connection, Will]] = {}
        #: connections in the enhanced-authentication exchange of their CONNECT
        self.auth_exchanges: dict[Connection, PendingConnect] = {}
        self._service_scope: anyio.CancelScope | None = None
        #: (host, port) actually bound, per listener, once running
        self.addresses: list[tuple[str, int]] = []
        self.max_inflight = self.limits.max_inflight_messages or 65535
        extra = list(plugins or [])
        self.hooks: Hooks = activate(
            self.settings.plugins, internal=self._internal_plugins(), extra=extra
        )
        self.handlers = self.packet_handlers()
        InlineMixin.__init__(self)

    def _internal_plugins(self) -> list[tuple[str, Any]]:
        internal: list[tuple[str, Any]] = [("midge.access", ListenerAccess())]
        if self.limits.sys_interval:
            internal.append(("midge.sys", SysPublisher()))
        return internal

    # -- running -------------------------------------------------------------------------

    async def __aenter__(self) -> Broker:
        self._outer_tg = anyio.create_task_group()
        await self._outer_tg.__aenter__()
        await self._outer_tg.start(self.run)
        return self

    async def __aexit__(self, *exc_info: Any) -> bool | None:
        self.shutdown()
        return await self._outer_tg.__aexit__(*exc_info)

    async def run(self, *, task_status: TaskStatus[Broker] = anyio.TASK_STATUS_IGNORED) -> None:
        """Bind every listener, serve until ``shutdown()``, then close gracefully."""
        hooks = self.hooks
        if not hooks.auth_configured and not any(
            spec.allow_anonymous for spec in self.settings.listeners
        ):
            log.warning(
                "no authentication plugin is active: every connection will be refused "
                "(activate one, e.g. [plugins.auth_allow] or [plugins.auth_ledger])"
            )
        bound: list[Bound] = []
        try:
            await self._restore()
            async with anyio.create_task_group() as conns:
                async with anyio.create_task_group() as service:
                    self._service_scope = service.cancel_scope
                    await self._bind(conns, bound)
                    service.start_soon(hooks.run_deferred)
                    if hooks.on_started is not None:
                        await hooks.call_awaiting("on_started", self)
                    service.start_soon(self._sweep_loop)
                    if self.limits.sys_interval and hooks.on_sys_info_tick is not None:
                        service.start_soon(self._sys_loop)
                    task_status.started(self)
                log.info("shutting down: closing %d connections", len(self.connections))
                for listener in bound:
                    await listener.aclose()
                for conn in list(self.connections):
                    conn.kill(ReasonCode.SERVER_SHUTTING_DOWN, "server shutting down")
                with anyio.move_on_after(SHUTDOWN_GRACE):
                    while self.connections:
                        await anyio.sleep(0.02)
                conns.cancel_scope.cancel()
        finally:
            with anyio.CancelScope(shield=True), anyio.move_on_after(SHUTDOWN_GRACE):
                for listener in bound:
                    await listener.aclose()
                await hooks.drain()
                if hooks.on_stopped is not None:
                    await hooks.call_awaiting("on_stopped", self)
        log.info("stopped")

    async def _bind(self, conns: TaskGroup, bound: list[Bound]) -> None:
        for spec in self.settings.listeners:
            listener = await bind_tcp(self, spec, conns)
            bound.append(listener)
            for host, port in listener.addresses:
                self.addresses.append((host, port))
                log.info(
                    "listening on %s:%s (tcp%s)", host, port,
                    ", anonymous clients allowed" if spec.allow_anonymous else "",
                )

    def shutdown(self) -> None:
        """Stop accepting, tell v5 clients 0x8B, close every connection, return from run."""
        if self._service_scope is not None:
            self._service_scope.cancel()

    def reload(self) -> None:
        """SIGHUP: let plugins re-read their files; forget cached ACL decisions."""
        log.info("reloading")
        if self.hooks.on_reload is not None:
            self.hooks.on_reload(self)
        for conn in self.connections:
            conn.acl_cache.clear()

    def connection_opened(self, conn: Connection) -> None:
        """A listener accepted ``conn``."""
        self.connections.add(conn)
        self.stats.connections_total += 1

    def connection_closed(self, conn: Connection) -> None:
        """``conn``'s transport is closed."""
        self.connections.discard(conn)

    async def _sweep_loop(self) -> None:
        while True:
            await anyio.sleep(SWEEP_INTERVAL)
            self.sweep(time.monotonic())

    async def _sys_loop(self) -> None:
        while True:
            await anyio.sleep(self.limits.sys_interval)
            if self.hooks.on_sys_info_tick is not None:
                self.hooks.on_sys_info_tick(self, self.sys_info())

    def sys_info(self) -> dict[str, Any]:
        """The counters given to ``on_sys_info_tick``."""
        info: dict[str, Any] = self.stats.as_dict()
        info["uptime"] = int(time.time() - self.stats.started)
        info["sessions"] = len(self.sessions)
        info["subscriptions"] = len(self.trie)
        info["retained_messages"] = len(self.retained)
        return info

    def sweep(self, now: float) -> None:
        """Close connections past their CONNECT timeout or keepalive; expire sessions
        and retained messages."""
        expiry = self._retained_expiry
        while expiry and expiry[0][0] <= now:
            _, _, message = heapq.heappop(expiry)
            if self.retained.get(message.topic) is message:
                self.retained.discard(message.topic)
                log.debug("retained message on %s expired", message.topic)
                if self.hooks.on_retained_expired is not None:
                    self.hooks.on_retained_expired(message.topic)
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
        if self.pending_wills:
            # before session expiry: a will delayed up to the session's end goes first
            for cid, (due, conn, will) in list(self.pending_wills.items()):
                if due <= now:
                    del self.pending_wills[cid]
                    self.publish_will(conn, will)
        if self.expiring:
            for cid, session in list(self.expiring.items()):
                if session.expires_at is not None and session.expires_at <= now:
                    clients_log.info("session %s expired", cid)
                    self.discard_session(session)
                    if self.hooks.on_client_expired is not None:
                        self.hooks.on_client_expired(cid)

    # -- stored state --------------------------------------------------------------------

    async def _restore(self) -> None:
        """Ask storage plugins for the state to continue from, once, in hookspec order."""
        hooks = self.hooks
        if hooks.stored_clients is not None:
            for entry in await hooks.call_awaiting("stored_clients") or ():
                session = Session(entry["client_id"], 4, self.max_inflight,
                                  self.limits.max_queued_messages)
                session.expiry_interval = entry.get("expiry_interval")
                if session.expiry_interval is not None:
                    session.expires_at = time.monotonic() + session.expiry_interval
                    self.expiring[session.client_id] = session
                self.sessions[session.client_id] = session
        if hooks.stored_subscriptions is not None:
            for entry in await hooks.call_awaiting("stored_subscriptions") or ():
                owner = self.sessions.get(entry["client_id"])
                if owner is None:
                    continue
                sub: Subscription = entry["subscription"]
                sid = int(entry.get("identifier", 0))
                self.trie.add(owner.client_id, sub, sid)
                owner.subscriptions[sub.topic_filter] = (sub, sid)
        if hooks.stored_inflight_messages is not None:
            for entry in await hooks.call_awaiting("stored_inflight_messages") or ():
                queue = self.sessions.get(entry["client_id"])
                if queue is not None:
                    queue.enqueue(Outbound(entry["message"], entry["qos"], entry["retain"]))
        if hooks.stored_retained_messages is not None:
            for message in await hooks.call_awaiting("stored_retained_messages") or ():
                self.retained.set(message.topic, message)
        if hooks.stored_sys_info is not None:
            info = await hooks.call_awaiting("stored_sys_info") or {}
            for key in ("messages_received", "messages_sent", "messages_dropped",
                        "connections_total"):
                if key in info:
                    setattr(self.stats, key, int(info[key]))

    # -- disconnects, wills, expiry ------------------------------------------------------

    def connection_lost(self, conn: Connection) -> None:
        """Called once when a connection ends, however it ends."""
        if not conn.connected:
            self.auth_exchanges.pop(conn, None)
            return
        cid = conn.client_id
        if self.clients.get(cid) is conn:
            del self.clients[cid]
            self.stats.clients_connected = len(self.clients)
        session = conn.session
        conn.session = None
        expire = False
        if session is not None:
            session.online = False
            if session.expiry_interval == 0:
                expire = True
                self.discard_session(session)
            elif session.expiry_interval is not None:
                session.expires_at = time.monotonic() + session.expiry_interval
                self.expiring[cid] = session
        clients_log.info("client %s disconnected: %s", cid, conn.close_reason or "closed")
        hooks = self.hooks
        if hooks.on_disconnect is not None:
            hooks.on_disconnect(conn, None if conn.clean_disconnect else conn.close_reason,
                                expire)
        will = conn.will
        conn.will = None
        if will is not None and not conn.clean_disconnect:
            delay = will_delay(conn, will)
            if delay and session is not None and not expire:
                # the session lives on: the will waits for its delay, capped by the
                # session's expiry, unless the client comes back first (MQTT 5 3.1.3.2.2)
                if session.expiry_interval is not None:
                    delay = min(delay, session.expiry_interval)
                clients_log.info("client %s: its will is delayed by %d s", cid, delay)
                self.pending_wills[cid] = (time.monotonic() + delay, conn, will)
            else:
                self.publish_will(conn, will)

    def cancel_will(self, client_id: str, session_ends: bool) -> None:
        """The client reconnected: drop its delayed will, or send it now when the new
        connection ends the old session (Clean Start 1)."""
        pending = self.pending_wills.pop(client_id, None)
        if pending is None:
            return
        if session_ends:
            self.publish_will(pending[1], pending[2])
        else:
            clients_log.info("client %s reconnected: its delayed will is cancelled", client_id)

    def publish_will(self, conn: Connection, will: Will) -> None:
        hooks = self.hooks
        if hooks.on_will is not None:
            will = hooks.on_will(conn, will)
        clients_log.info("client %s: publishing its will to %s", conn.client_id, will.topic)
        self.route(Message(will.topic, will.payload, will.qos, will.retain, will.properties,
                           origin=conn.client_id), conn)
        if hooks.on_will_sent is not None:
            hooks.on_will_sent(conn, will)

    def discard_session(self, session: Session) -> None:
        cid = session.client_id
        for topic_filter in session.subscriptions:
            self.trie.remove(cid, topic_filter)
        session.subscriptions.clear()
        session.clear_queue()
        self.expiring.pop(cid, None)
        if self.sessions.get(cid) is session:
            del self.sessions[cid]

    # -- routing -------------------------------------------------------------------------

    def check_topic(self, topic: str, reason: ReasonCode) -> None:
        """Enforce the configured topic length and depth."""
        limit = self.limits.max_topic_length
        if len(topic) > limit and len(topic.encode()) > limit:
            raise RemoteProtocolError(reason, f"topic longer than {limit}")
        if topic.count("/") >= self.limits.max_topic_levels:
            raise RemoteProtocolError(
                reason, f"topic has more than {self.limits.max_topic_levels} levels"
            )

    def allowed(self, conn: Connection, topic: str, write: bool) -> bool:
        """The ACL vote for ``conn`` and ``topic``, cached per client until a reload."""
        acl = self.hooks.on_acl_check
        if acl is None:
            return False
        cache = conn.acl_cache
        key = (topic, write)
        decision = cache.get(key)
        if decision is None:
            decision = acl(conn, topic, write) is True
            if len(cache) >= ACL_CACHE_LIMIT:
                cache.clear()
            cache[key] = decision
        return decision

    def route(self, message: Message, publisher: Connection | None = None) -> int:
        """Retain and deliver a message to every matching subscriber; returns the count."""
        hooks = self.hooks
        if message.retain:
            if message.payload:
                self.retained.set(message.topic, message)
                if message.expires_at is not None:
                    heapq.heappush(self._retained_expiry,
                                   (message.expires_at, id(message), message))
            else:
                self.retained.discard(message.topic)
            if hooks.on_retain_message is not None:
                hooks.on_retain_message(publisher, message, bool(message.payload))
        origin = message.origin
        routes = self.trie.match(message.topic)
        if self.trie.shared_count:
            groups = self.trie.match_shared(message.topic)
            if groups:
                routes = list(routes)
                for group in groups:
                    chosen = self.choose_member(group)
                    if chosen is not None:
                        routes.append(group.route(chosen))
        if hooks.on_select_subscribers is not None:
            routes = hooks.on_select_subscribers(message, list(routes))
        delivered = 0
        for route in routes:
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
        if self.inline_subscribers:
            delivered += self.deliver_inline(message)
        return delivered

    def choose_member(self, group: SharedGroup) -> str | None:
        """The member of a shared subscription group to get the next message.

        Round-robin over the members, preferring a connected one with a free inflight
        slot, then any connected one, then an offline persistent one (which queues it).
        """
        order = group.order()
        count = len(order)
        if not count:
            return None
        start = group.cursor % count
        connected = offline = -1
        pick = -1
        clients = self.clients
        for step in range(count):
            index = (start + step) % count
            conn = clients.get(order[index])
            if conn is None:
                if offline < 0:
                    offline = index
                continue
            session = conn.session
            if session is None or (not session.pending
                                   and len(session.inflight) < session.max_inflight):
                pick = index
                break
            if connected < 0:
                connected = index
        if pick < 0:
            pick = connected if connected >= 0 else offline
        group.cursor = pick + 1
        return order[pick]

    def deliver(
        self, client_id: str, message: Message, qos: int, retain: bool,
        subscription_ids: tuple[int, ...] = (),
    ) -> None:
        """Send one message to one client now, or queue it in its session."""
        conn = self.clients.get(client_id)
        if message.expires_at is not None and message.expired():
            return self._dropped(conn, message, "message expired")
        if not qos:
            if conn is None:
                return
            if conn.backlog >= self.limits.max_queued_messages:
                return self._dropped(conn, message, "outbound buffer full")
            if not self.allowed(conn, message.topic, False):
                return self._dropped(conn, message, "not authorized")
            if conn.alias_max_out:
                frame, alias, known = self._frame_aliased(conn, message, 0, retain, 0,
                                                          subscription_ids, False)
            else:
                frame = message.frame(conn.protocol_level, 0, retain, 0, subscription_ids)
                alias, known = 0, False
            if len(frame) > conn.max_packet_out:
                return self._dropped(conn, message, "larger than the client's maximum")
            if self.hooks.packet_hooks:
                conn.send_publish(message, 0, retain, 0, subscription_ids, False, alias, known)
            else:
                conn.write(frame)
            self.stats.messages_sent += 1
            return None
        session = self.sessions.get(client_id)
        if session is None:
            return None
        out = Outbound(message, qos, retain, subscription_ids)
        result = session.enqueue(out)
        if result is Enqueued.SEND:
            assert conn is not None
            self.write_publish(conn, out)
        elif result is Enqueued.DROPPED:
            self._dropped(conn, message, "session queue full")
        elif (result is Enqueued.NO_PACKET_ID and conn is not None
              and self.hooks.on_packet_id_exhausted is not None):
            self.hooks.on_packet_id_exhausted(conn, message)
        return None

    def _dropped(self, conn: Connection | None, message: Message, reason: str) -> None:
        self.stats.messages_dropped += 1
        log.debug("message to %s for %s dropped: %s", message.topic,
                  conn.client_id if conn else "an offline client", reason)
        if self.hooks.on_publish_dropped is not None:
            self.hooks.on_publish_dropped(conn, message, reason)

    def write_publish(self, conn: Connection, out: Outbound, dup: bool = False) -> None:
        """Write a QoS 1/2 delivery that holds a packet id (or abandon it)."""
        message = out.message
        reason = None
        if not self.allowed(conn, message.topic, False):
            reason = "not authorized"
        else:
            if conn.alias_max_out:
                frame, alias, known = self._frame_aliased(
                    conn, message, out.qos, out.retain, out.packet_id, out.subscription_ids, dup
                )
            else:
                frame = message.frame(
                    conn.protocol_level, out.qos, out.retain, out.packet_id,
                    out.subscription_ids, dup,
                )
                alias, known = 0, False
            if len(frame) > conn.max_packet_out:
                reason = "larger than the client's maximum"
        if reason is not None:
            # complete the flow on the client's behalf so the queue behind it moves
            session = conn.session
            if session is not None:
                session.drop(out.packet_id)
            if self.hooks.on_qos_dropped is not None:
                self.hooks.on_qos_dropped(conn, out.packet_id, reason)
            return self._dropped(conn, message, reason)
        if self.hooks.packet_hooks:
            conn.send_publish(message, out.qos, out.retain, out.packet_id,
                              out.subscription_ids, dup, alias, known)
        else:
            conn.write(frame)
        self.stats.messages_sent += 1
        if self.hooks.on_qos_publish is not None:
            self.hooks.on_qos_publish(conn, message, out.packet_id, dup)
        return None

    def _frame_aliased(
        self, conn: Connection, message: Message, qos: int, retain: bool, packet_id: int,
        subscription_ids: tuple[int, ...], dup: bool,
    ) -> tuple[bytes, int, bool]:
        """Frame a delivery to a client that accepts topic aliases: (frame, alias, known).

        The first delivery on a topic carries the topic and a new alias, later ones only
        the alias. An alias is taken only when its frame fits the client's maximum, so
        the client has seen every alias it is later sent without a topic.
        """
        level = conn.protocol_level
        aliases = conn.aliases_out
        alias = aliases.get(message.topic)
        if alias is not None:
            frame = message.frame(level, qos, retain, packet_id, subscription_ids, dup,
                                  alias, True)
            return frame, alias, True
        if len(aliases) >= conn.alias_max_out:
            # all taken: topics beyond the client's maximum travel by name
            return message.frame(level, qos, retain, packet_id, subscription_ids, dup), 0, False
        alias = len(aliases) + 1
        frame = message.frame(level, qos, retain, packet_id, subscription_ids, dup, alias)
        if len(frame) <= conn.max_packet_out:
            aliases[message.topic] = alias
        return frame, alias, False

    def pump(self, conn: Connection, session: Session) -> None:
        """Move queued deliveries into free inflight slots and send them."""
        # a delivery abandoned by write_publish frees its slot at once; refill until
        # nothing moves, or the queue behind it stalls for good
        while ready := session.sendable(time.monotonic()):
            for out in ready:
                self.write_publish(conn, out)
        if session.expired:
            expired, session.expired = session.expired, []
            for out in expired:
                self._dropped(conn, out.message, "message expired")

    def retained_for(self, topic_filter: str) -> list[Message]:
        """The retained messages matching a filter; expired ones are removed on the way."""
        messages = self.retained.match(topic_filter)
        now = 0.0
        for message in messages:
            if message.expires_at is not None:
                now = now or time.monotonic()
                if message.expires_at <= now:
                    break
        else:
            return messages
        live: list[Message] = []
        for message in messages:
            if message.expired(now):
                if self.retained.get(message.topic) is message:
                    self.retained.discard(message.topic)
                    log.debug("retained message on %s expired", message.topic)
                    if self.hooks.on_retained_expired is not None:
                        self.hooks.on_retained_expired(message.topic)
            else:
                live.append(message)
        return live
