"""The session registry: who is connected, sessions that outlive connections, wills.

The rule: a session changes hands only here (created, resumed, taken over, expired,
discarded), and time only comes in through ``tick(now)``, so every deadline (session
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
from ..message import Message
from ..session import Outbound, Session

if TYPE_CHECKING:
    from ..config import BrokerSettings
    from ..hooks import Hooks
    from ..stats import Stats
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
                 clock: Callable[[], float], router: Router,
                 sessions: dict[str, Session], clients: dict[str, Connection],
                 journal: Journal | None = None) -> None:
        self._limits = limits
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
        self.max_inflight = limits.max_inflight_messages or 65535

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
                             client_id, conn.remote)
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
            session = Session(client_id, self.max_inflight, self._limits.max_queued_messages)
            self.sessions[client_id] = session
        self.expiring.pop(client_id, None)
        session.max_inflight = self.max_inflight
        return session, present

    def connected(self, conn: Connection) -> None:
        """``conn`` was sent CONNACK 0: it holds its client id."""
        self.clients[conn.client_id] = conn
        self._stats.clients_connected = len(self.clients)

    def _cancel_will(self, client_id: str, session_ends: bool) -> None:
        """The client reconnected: drop its delayed will, or send it now when the new
        connection ends the old session (Clean Start 1)."""
        pending = self.pending_wills.pop(client_id, None)
        if pending is None:
            return
        if session_ends:
            self.publish_will(pending[1], pending[2])
        else:
            clients_log.info("client %s reconnected: its delayed will is cancelled", client_id)

    # -- a connection ends -----------------------------------------------------------------

    def connection_lost(self, conn: Connection) -> None:
        """A connected client's connection ended, however it ended."""
        cid = conn.client_id
        if self.clients.get(cid) is conn:
            del self.clients[cid]
            self._stats.clients_connected = len(self.clients)
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
        clients_log.info("client %s disconnected: %s", cid, conn.close_reason or "closed")
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
                clients_log.info("client %s: its will is delayed by %d s", cid, delay)
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
        clients_log.info("client %s: publishing its will to %s", conn.client_id, will.topic)
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
                    clients_log.info("session %s expired", cid)
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
                              self._limits.max_queued_messages)
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
