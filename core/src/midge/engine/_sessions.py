"""The session registry: who is connected, sessions that outlive connections, wills.

The rule: a session changes hands only here (created, resumed, taken over, expired,
discarded), only to the user that owns it and within the quotas (``admission``), and
time only comes in through ``tick(now)``, so every deadline (session
expiry, will delay) is exact against the clock the engine is given.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from ..codec import (
    PROTOCOL_5,
    Disconnect,
    Property,
    ProtocolViolation,
    Publish,
    ReasonCode,
    Subscription,
    Will,
)
from ..logsafe import quoted, safe
from ..message import Message
from ..session import PACKET_ID_MAX, UNCLAIMED, Outbound, Session

if TYPE_CHECKING:
    from ..config import BrokerSettings
    from ..hooks import Hooks
    from ..stats import Stats
    from ._access import Access
    from ._connection import Connection
    from ._journal import Journal
    from ._router import Router

clients_log = logging.getLogger("midge.clients")

#: a Session Expiry Interval that never ends
EXPIRY_NEVER = 0xFFFF_FFFF


def will_delay(conn: Connection, will: Will) -> int:
    """The Will Delay Interval of a v5 client's will (0 for v3 and without one)."""
    if conn.protocol_level != PROTOCOL_5:
        return 0
    return int(will.properties.get(Property.WILL_DELAY_INTERVAL, 0))


class Registry:
    """Sessions by client id, the connected clients, and the wills waiting their delay."""

    def __init__(self, limits: BrokerSettings, hooks: Hooks, stats: Stats,
                 clock: Callable[[], float], router: Router, access: Access,
                 sessions: dict[str, Session], clients: dict[str, Connection],
                 journal: Journal | None = None) -> None:
        self._limits = limits
        #: the ACL a will passes again when it is published
        self._access = access
        #: records persistent sessions (None or disabled: no storage)
        self.journal = journal
        self._hooks = hooks
        self._stats = stats
        self._clock = clock
        self.router = router
        #: every session, online or not, by client id (the router reads it)
        self.sessions = sessions
        #: connected clients (CONNACK sent) by client id (the router reads it)
        self.clients = clients
        #: offline sessions with a finite expiry
        self.expiring: dict[str, Session] = {}
        #: v5 wills waiting for their Will Delay Interval: client id -> (deadline, the
        #: closed connection, the will)
        self.pending_wills: dict[str, tuple[float, Connection, Will]] = {}
        self.max_inflight = limits.max_inflight_messages or PACKET_ID_MAX
        #: connected clients per user name and per remote address, for the quotas
        self.per_user: dict[str, int] = {}
        self.per_address: dict[str, int] = {}
        #: sessions per owning user name, for the sessions quota
        self.sessions_per_user: dict[str, int] = {}
        #: told each connection that is sent CONNACK 0 (set by the engine)
        self.admitted: Callable[[Connection], None] | None = None

    # -- admission -------------------------------------------------------------------------

    def admission(self, conn: Connection, client_id: str,
                  clean_start: bool) -> tuple[ReasonCode, str] | None:
        """Why an authenticated ``conn`` may not take ``client_id`` (None: it may): the
        session belongs to another user, or a per-user or per-address quota is full."""
        limits = self._limits
        user = conn.username
        session = self.sessions.get(client_id)
        old = self.clients.get(client_id)
        code = limits.foreign_session_code
        if (code and session is not None and session.owner != user
                and session.owner != UNCLAIMED):
            return (ReasonCode(code),
                    "the client id's session belongs to another user")
        if user is not None:
            cap = limits.max_connections_per_user
            # a takeover by the same user replaces a connection, it adds none
            replacing = old is not None and old.username == user
            if cap and not replacing and self.per_user.get(user, 0) >= cap:
                return (ReasonCode.QUOTA_EXCEEDED,
                        f"user has max_connections_per_user ({cap}) connections")
            cap = limits.max_sessions_per_user
            if (cap and (session is None or clean_start)
                    and self.sessions_per_user.get(user, 0) >= cap + (session is not None)):
                return (ReasonCode.QUOTA_EXCEEDED,
                        f"user has max_sessions_per_user ({cap}) sessions")
        cap = limits.max_connections_per_address
        replacing = old is not None and old.remote_host == conn.remote_host
        if cap and not replacing and self.per_address.get(conn.remote_host, 0) >= cap:
            return (ReasonCode.QUOTA_EXCEEDED,
                    f"address has max_connections_per_address ({cap}) connections")
        return None

    def _count(self, conn: Connection, step: int) -> None:
        """Keep the per-user and per-address connection counts."""
        for table, key in ((self.per_user, conn.username),
                           (self.per_address, conn.remote_host)):
            if key is None:
                continue
            left = table.get(key, 0) + step
            if left > 0:
                table[key] = left
            else:
                table.pop(key, None)

    def _own(self, session: Session, step: int) -> None:
        owner = session.owner
        if owner is None or owner == UNCLAIMED:
            return
        left = self.sessions_per_user.get(owner, 0) + step
        if left > 0:
            self.sessions_per_user[owner] = left
        else:
            self.sessions_per_user.pop(owner, None)

    # -- taking a session ------------------------------------------------------------------

    def take(self, conn: Connection, client_id: str, clean_start: bool) -> tuple[Session, bool]:
        """The session ``conn`` continues (resumed) or starts; True when one was resumed.
        A connection still holding the client id is taken over (DISCONNECT 0x8E)."""
        session = self.sessions.get(client_id)
        # a session with expiry 0 (a clean session) ends with the connection just taken
        # over: its state must not be reused [MQTT-3.1.2-6] (MQTT 5 section 3.1.2.11.2)
        ends = session is None or clean_start or session.expiry_interval == 0
        old = self.clients.get(client_id)
        if old is not None and old is not conn:
            clients_log.info("client %s: session taken over by a new connection from %s",
                             conn.name, conn.remote, extra=conn.log_fields)
            if old.will is not None and not ends and will_delay(old, old.will):
                # the session continues and the will has a delay: it is not sent
                # (MQTT 5 section 3.1.3.2.2)
                old.will = None
            old.session = None
            old.close(ReasonCode.SESSION_TAKEN_OVER, "session taken over")
            self.clients.pop(client_id, None)
        self._cancel_will(client_id, ends)
        if session is not None and ends:
            self.discard(session)
            session = None
        present = session is not None
        if session is None:
            session = Session(client_id, self.max_inflight, self._limits.max_queued_messages,
                              conn.username)
            self.sessions[client_id] = session
            self._own(session, 1)
        self.expiring.pop(client_id, None)
        session.max_inflight = self.max_inflight
        if session.owner == UNCLAIMED:  # restored without an owner: claimed now
            session.owner = conn.username
            self._own(session, 1)
        return session, present

    def connected(self, conn: Connection) -> None:
        """``conn`` was sent CONNACK 0: it holds its client id."""
        self.clients[conn.client_id] = conn
        stats = self._stats
        stats.clients_connected = count = len(self.clients)
        if count > stats.clients_maximum:
            stats.clients_maximum = count
        self._count(conn, 1)
        if self.admitted is not None:
            self.admitted(conn)

    def _cancel_will(self, client_id: str, session_ends: bool) -> None:
        """The client reconnected: drop its delayed will, or send it now when the new
        connection ends the old session (Clean Start 1)."""
        pending = self.pending_wills.pop(client_id, None)
        if pending is None:
            return
        if session_ends:
            self.publish_will(pending[1], pending[2])
        else:
            clients_log.info("client %s reconnected: its delayed will is cancelled",
                             quoted(client_id), extra={"client_id": client_id})

    # -- a connection ends -----------------------------------------------------------------

    def connection_lost(self, conn: Connection) -> None:
        """A connected client's connection ended, however it ended."""
        cid = conn.client_id
        if self.clients.get(cid) is conn:
            del self.clients[cid]
            self._stats.clients_connected = len(self.clients)
        self._count(conn, -1)
        session = conn.session
        conn.session = None
        expire = False
        if session is not None:
            session.online = False
            if session.expiry_interval == 0:
                expire = True
                self.discard(session)
            else:
                session.offline_since = self._clock()
                if session.expiry_interval is not None:
                    session.expires_at = session.offline_since + session.expiry_interval
                    self.expiring[cid] = session
        if clients_log.isEnabledFor(logging.INFO):  # its arguments cost a connect's time
            clients_log.info("client %s disconnected: %s", conn.name,
                             safe(conn.close_reason or "closed", 256), extra=conn.log_fields)
        hooks = self._hooks
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
                clients_log.info("client %s: its will is delayed by %d s", conn.name, delay,
                                 extra=conn.log_fields)
                self.pending_wills[cid] = (self._clock() + delay, conn, will)
            else:
                self.publish_will(conn, will)
        if session is not None and not expire:
            self.record_offline(session)

    def record_offline(self, session: Session) -> None:
        """Record an offline persistent session, with the will still waiting for it."""
        journal = self.journal
        if journal is not None and session.journal is not None:
            pending = self.pending_wills.get(session.client_id)
            journal.put_session(session, session.offline_since,
                                None if pending is None else pending[2],
                                None if pending is None else pending[0])

    def publish_will(self, conn: Connection, will: Will) -> None:
        hooks = self._hooks
        if hooks.on_will is not None:
            will = hooks.on_will(conn, will)
        # the rules may have changed since CONNECT (a reload, a delayed will): the
        # decision is asked afresh
        conn.acl_cache.clear()
        why = self._access.will_refusal(conn, will.topic)
        if why is not None:
            conn.warn(clients_log, "client %s: its will to %s is not published: %s",
                      conn.name, safe(will.topic), why)
            return
        clients_log.info("client %s: publishing its will to %s", conn.name, safe(will.topic),
                         extra=conn.log_fields)
        self.router.route(Message(will.topic, will.payload, will.qos, will.retain,
                                  will.properties, conn.client_id, self._clock()), conn)
        if hooks.on_published is not None:
            hooks.on_published(conn, Publish(will.topic, will.payload, will.qos, will.retain,
                                             properties=dict(will.properties)))
        if hooks.on_will_sent is not None:
            hooks.on_will_sent(conn, will)

    def discard(self, session: Session) -> None:
        """Forget a session: its subscriptions, queue and registration."""
        cid = session.client_id
        if self.journal is not None:
            self.journal.session_gone(session)
        self.router.subscriptions.clear(session)
        session.clear_queue()
        self.expiring.pop(cid, None)
        if self.sessions.get(cid) is session:
            del self.sessions[cid]
            self._own(session, -1)

    # -- time ------------------------------------------------------------------------------

    def tick(self, now: float) -> None:
        """Publish the delayed wills due by ``now``, then expire the sessions due."""
        if self.pending_wills:
            # before session expiry: a will delayed up to the session's end goes first
            for cid, (due, conn, will) in list(self.pending_wills.items()):
                if due <= now:
                    del self.pending_wills[cid]
                    self.publish_will(conn, will)
                    session = self.sessions.get(cid)
                    if session is not None and not session.online:
                        self.record_offline(session)  # without the will
        if self.expiring:
            for cid, session in list(self.expiring.items()):
                if session.expires_at is not None and session.expires_at <= now:
                    clients_log.info("session of client %s expired", quoted(cid),
                                     extra={"client_id": cid})
                    self.discard(session)
                    if self._hooks.on_client_expired is not None:
                        self._hooks.on_client_expired(cid)

    # -- stored state ----------------------------------------------------------------------

    def restore(self, clients: Iterable[dict[str, Any]],
                subscriptions: Iterable[dict[str, Any]],
                inflight: Iterable[dict[str, Any]]) -> None:
        """Continue from what storage plugins kept: sessions (offline, expiring from now),
        their subscriptions, then their queued deliveries in order."""
        now = self._clock()
        for entry in clients:
            session = Session(entry["client_id"], self.max_inflight,
                              self._limits.max_queued_messages,
                              entry.get("owner", UNCLAIMED))
            self._own(session, 1)
            session.expiry_interval = entry.get("expiry_interval")
            if session.expiry_interval is not None:
                session.expires_at = now + session.expiry_interval
                self.expiring[session.client_id] = session
            self.sessions[session.client_id] = session
        for entry in subscriptions:
            owner = self.sessions.get(entry["client_id"])
            if owner is not None:
                sub: Subscription = entry["subscription"]
                self.router.subscriptions.add(owner, sub, int(entry.get("identifier", 0)))
        for entry in inflight:
            queue = self.sessions.get(entry["client_id"])
            if queue is not None:
                queue.enqueue(Outbound(entry["message"], entry["qos"], entry["retain"]))

    def client_disconnect(self, conn: Connection, packet: Disconnect) -> None:
        """The client's DISCONNECT: a last Session Expiry Interval (v5), then close;
        only Normal disconnection (0x00) discards the will."""
        session = conn.session
        if conn.v5 and session is not None:
            expiry = packet.properties.get(Property.SESSION_EXPIRY_INTERVAL)
            if expiry is not None:
                if session.expiry_interval == 0 and expiry:
                    raise ProtocolViolation(
                        "DISCONNECT may not set a session expiry when CONNECT set 0"
                    )
                expiry = min(expiry, self._limits.session_expiry_max)
                session.expiry_interval = None if expiry == EXPIRY_NEVER else expiry
        # 0x04 and every error reason leave the will to be published (MQTT 5 sections
        # 3.1.2.5 and 3.14, [MQTT-3.14.4-3])
        conn.clean_disconnect = packet.reason_code == ReasonCode.NORMAL_DISCONNECTION
        conn.close(None, "client sent DISCONNECT" if conn.clean_disconnect
                   else f"client sent DISCONNECT 0x{packet.reason_code:02X}")
