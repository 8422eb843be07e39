"""The engine: the broker's state machine, told bytes, time and answers by its shell.

The rule: nothing here awaits, sleeps, reads a clock it was not given, or imports an
event loop. The engine wires the flows (CONNECT/AUTH, PUBLISH and acknowledgements,
SUBSCRIBE), the session registry and the router over one packet table; the shell feeds
connections, calls ``tick(now)`` for deadlines and awaits what an ``Ask`` waits for.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from ..codec import (
    Auth,
    Connect,
    Disconnect,
    Packet,
    PingReq,
    PubAck,
    PubComp,
    Publish,
    PubRec,
    PubRel,
    ReasonCode,
    Subscribe,
    Unsubscribe,
)
from ..config import ListenerSettings
from ..logsafe import Repeats, safe
from ..stats import Stats
from ._access import Access
from ._connect import ConnectFlow
from ._connection import Connection
from ._flapping import Flapping
from ._journal import Journal
from ._publish import PublishFlow
from ._restore import restore as restore_snapshot
from ._router import Router
from ._sessions import Registry
from ._subscribe import SubscribeFlow
from ._throttle import Throttle as InputThrottle

if TYPE_CHECKING:
    from ..api import PeerCertificate
    from ..config import BrokerSettings
    from ..hooks import Hooks
    from ..message import Message
    from ..records import Snapshot
    from ..session import Session
    from ._ask import Ask
    from ._outbox import Driver

log = logging.getLogger("midge.broker")
clients_log = logging.getLogger("midge.clients")

#: how much longer than its keepalive a client may stay silent [MQTT-3.1.2-24]
KEEPALIVE_GRACE = 1.5

Handler = Callable[[Connection, Any], "Ask | None"]


class Engine:
    """Every connection, session, subscription and retained message of one broker."""

    def __init__(self, limits: BrokerSettings, hooks: Hooks, clock: Callable[[], float],
                 stats: Stats | None = None) -> None:
        self.limits = limits
        self.hooks = hooks
        self.clock = clock
        self.stats = stats or Stats()
        sessions: dict[str, Session] = {}
        clients: dict[str, Connection] = {}
        #: the durable changes for a storage (recording only once ``journal.enable``)
        self.journal = Journal(clock)
        self.access = Access(hooks, limits)
        self.router = Router(limits, hooks, self.stats, self.access, clock, clients, sessions,
                             self.journal)
        self.registry = Registry(limits, hooks, self.stats, clock, self.router, self.access,
                                 sessions, clients, self.journal)
        self.flapping = Flapping(limits, self.stats, clock)
        self.throttle = InputThrottle(limits, self.stats, clock)
        self.router.throttle = self.throttle
        self.connect_flow = ConnectFlow(limits, hooks, self.registry, self.router, clock,
                                        self.access, self.stats, flapping=self.flapping)
        publish = PublishFlow(limits, hooks, self.stats, self.access, self.router, clock)
        subscribe = SubscribeFlow(limits, hooks, self.access, self.router)
        #: packet type -> what it does (the state table has already allowed it)
        self.handlers: dict[type[Packet], Handler] = {
            Connect: self.connect_flow.connect,
            Auth: self.connect_flow.auth,
            Publish: publish.publish,
            PubAck: publish.puback,
            PubRec: publish.pubrec,
            PubRel: publish.pubrel,
            PubComp: publish.pubcomp,
            Subscribe: subscribe.subscribe,
            Unsubscribe: subscribe.unsubscribe,
            PingReq: subscribe.pingreq,
            Disconnect: self.registry.client_disconnect,
        }
        #: every open network connection, before and after CONNECT
        self.connections: set[Connection] = set()
        #: open connections per listener (its ``max_connections``)
        self.listener_counts: dict[ListenerSettings, int] = {}
        #: the listener a restored session's stand-in connection is on (for the ACL its
        #: delayed will passes when published): the shell sets one that lets anonymous
        #: clients in when a listener of its does
        self.restore_listener = ListenerSettings(name="restored")
        #: called when the last connection's transport is gone (the shell's shutdown)
        self.idle: Callable[[], None] | None = None
        #: the warnings clients cause, a burst per template then a count
        self.warnings = Repeats(clock)
        #: connections not yet sent CONNACK 0, per remote address (admission limits them)
        self.pending: dict[str, int] = {}
        self.registry.admitted = self._admitted

    @property
    def sessions(self) -> dict[str, Session]:
        return self.registry.sessions

    @property
    def clients(self) -> dict[str, Connection]:
        return self.registry.clients

    # -- connections -----------------------------------------------------------------------

    def open(self, driver: Driver, listener: ListenerSettings, host: str, port: int, *,
             certificate: PeerCertificate | None = None,
             identity: str | None = None) -> Connection:
        """A listener accepted a transport: the Connection its driver feeds."""
        limits = self.limits
        journal = self.journal
        # until CONNACK only a small packet is accepted: a stranger may not make the
        # broker buffer a 16 MiB CONNECT
        conn = Connection(self, driver, listener, host, port, hooks=self.hooks,
                          clock=self.clock,
                          max_packet_size=min(limits.max_packet_size,
                                              limits.max_connect_packet_size),
                          stats=self.stats, certificate=certificate, identity=identity,
                          journal=journal if journal.enabled else None,
                          quantum=limits.packets_per_turn)
        self.connections.add(conn)
        self.pending[host] = self.pending.get(host, 0) + 1
        self.listener_counts[listener] = self.listener_counts.get(listener, 0) + 1
        stats = self.stats
        stats.connections_total += 1
        label = listener.label
        stats.connections_by_listener[label] = stats.connections_by_listener.get(label, 0) + 1
        return conn

    def _admitted(self, conn: Connection) -> None:
        """``conn`` was sent CONNACK 0: the full packet size, and it is no longer
        pending."""
        conn.decoder.max_packet_size = self.limits.max_packet_size
        self._unpend(conn.remote_host)

    def _unpend(self, host: str) -> None:
        left = self.pending.get(host, 0) - 1
        if left > 0:
            self.pending[host] = left
        else:
            self.pending.pop(host, None)

    def pending_from(self, host: str) -> int:
        """Connections from ``host`` that have not been sent CONNACK 0."""
        return self.pending.get(host, 0)

    def contended(self) -> bool:
        router = self.router
        waited, router.waited = router.waited, 0
        return waited > 0

    def hold(self, conn: Connection) -> float:
        return self.throttle.hold(conn)

    def ended(self, conn: Connection, connected: bool) -> None:
        if connected:
            self.registry.connection_lost(conn)
            self.flapping.ended(conn)
        else:
            self._unpend(conn.remote_host)
            self.connect_flow.forget(conn)
        # last: publishing the will above routes through the throttle too
        if len(self.throttle):
            self.throttle.forget(conn)

    def released(self, conn: Connection) -> None:
        if conn in self.connections:
            self.connections.discard(conn)
            self.listener_counts[conn.listener] -= 1
        if not self.connections and self.idle is not None:
            self.idle()

    def inject(self, conn: Connection, packet: Packet) -> Ask | None:
        """Handle ``packet`` as if the connected ``conn`` had sent it."""
        if not conn.connected:
            raise LookupError(f"client {conn.client_id!r} is not connected")
        if isinstance(packet, Connect):
            raise ValueError("a CONNECT cannot be injected into a connected client")
        handler = self.handlers.get(type(packet))
        if handler is None:
            raise ValueError(f"a client does not send {type(packet).__name__}")
        return handler(conn, packet)

    def disconnect(self, client_id: str, reason_code: int = ReasonCode.ADMINISTRATIVE_ACTION,
                   *, reason: str | None = None, server_reference: str | None = None) -> bool:
        """Disconnect a connected client: a v5 client is told DISCONNECT ``reason_code``
        (0x00 or 0x80 and above) with ``reason`` as Reason String and
        ``server_reference`` as Server Reference (0x9C, 0x9D); a v3 client is closed.
        Its will follows the usual rules. False when ``client_id`` is not connected."""
        conn = self.registry.clients.get(client_id)
        if conn is None or conn.closing:
            return False
        code = ReasonCode(reason_code)
        clients_log.info("client %s: disconnected by the server (0x%02X%s)", conn.name,
                         int(code), f": {safe(reason, 256)}" if reason else "",
                         extra=conn.log_fields)
        conn.close(code, reason or f"disconnected by the server (0x{int(code):02X})",
                   reason=reason or "", server_reference=server_reference)
        return True

    def close_all(self, reason_code: int, why: str) -> None:
        """Close every connection (at shutdown: DISCONNECT 0x8B to v5 clients)."""
        for conn in list(self.connections):
            conn.close(reason_code, why)
        self.warnings.flush()  # the counts of a window not yet over are said now

    def forget_acl_decisions(self) -> None:
        """A reload: ACL decisions are asked afresh."""
        for conn in self.connections:
            conn.acl_cache.clear()

    # -- time ------------------------------------------------------------------------------

    def tick(self, now: float) -> None:
        """Enforce every deadline due by ``now``: CONNECT timeouts, keepalives, retained
        message expiry, delayed wills, session expiry."""
        self.router.tick(now)
        connect_timeout = self.limits.connect_timeout
        for conn in list(self.connections):
            if conn.closing:
                continue
            if not conn.connected:
                if now - conn.opened > connect_timeout:
                    conn.warn(log, "client %s sent no CONNECT within %d s; closing",
                              conn.name, connect_timeout)
                    conn.close(None, "CONNECT timeout")
            elif conn.keepalive and now - conn.last_seen > conn.keepalive * KEEPALIVE_GRACE:
                clients_log.info("client %s: keepalive of %d s expired; closing",
                                 conn.name, conn.keepalive, extra=conn.log_fields)
                conn.close(ReasonCode.KEEP_ALIVE_TIMEOUT, "keepalive timeout")
        self.registry.tick(now)
        self.warnings.tick()

    # -- messages from outside the clients -------------------------------------------------

    def route(self, message: Message) -> int:
        """Retain and deliver a message that no client published (inline, external)."""
        return self.router.route(message, None)

    # -- stored state ----------------------------------------------------------------------

    def restore(self, clients: Iterable[dict[str, Any]], subscriptions: Iterable[dict[str, Any]],
                inflight: Iterable[dict[str, Any]], retained: Iterable[Message],
                sys_info: dict[str, Any]) -> None:
        """Continue from what storage plugins kept (the ``stored_*`` hooks' answers)."""
        self.registry.restore(clients, subscriptions, inflight)
        for message in retained:
            self.router.keep_retained(message)
        for key in ("messages_received", "messages_sent", "messages_dropped",
                    "connections_total"):
            if key in sys_info:
                setattr(self.stats, key, int(sys_info[key]))

    def restore_records(self, snapshot: Snapshot) -> dict[str, int]:
        """Continue from a storage's Snapshot (the journal must be enabled); returns how
        many of each kind came back."""
        return restore_snapshot(self, snapshot)

    def save_counters(self) -> None:
        """Record the counters that ``sys_info`` continues from after a restart."""
        stats = self.stats
        self.journal.counters({
            "messages_received": stats.messages_received,
            "messages_sent": stats.messages_sent,
            "messages_dropped": stats.messages_dropped,
            "connections_total": stats.connections_total,
        })

    def counts(self) -> dict[str, int]:
        """Sessions, subscriptions and retained messages, for ``sys_info``."""
        return {
            "sessions": len(self.registry.sessions),
            "subscriptions": len(self.router.subscriptions),
            "retained_messages": len(self.router.retained),
        }
