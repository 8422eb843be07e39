"""Restore: continue from a storage Snapshot, counting the time the broker was down.

The rule: what expired while the broker was down (by the wall clock) is dropped and its
removal recorded, never resurrected; wills that fell due meanwhile are published once
everything else is back (so restored sessions receive them); everything else comes back
as it was: sessions offline, deliveries with their packet ids and QoS 2 phase in order,
inbound QoS 2 ids, retained messages, counters.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Protocol

from ..codec import Property, Will
from ..config import ListenerSettings
from ..message import Message
from ..session import Outbound, Session
from ._connection import Connection
from ._state import State

if TYPE_CHECKING:
    from collections.abc import Callable

    from ..config import BrokerSettings
    from ..hooks import Hooks
    from ..records import MessageRecord, SessionRecord, Snapshot
    from ..stats import Stats
    from ._connection import Owner
    from ._journal import Journal
    from ._router import Router
    from ._sessions import Registry


class Parts(Protocol):
    """What restoring needs of the engine."""

    limits: BrokerSettings
    hooks: Hooks
    clock: Callable[[], float]
    stats: Stats
    journal: Journal
    registry: Registry
    router: Router
    restore_listener: ListenerSettings


log = logging.getLogger("midge.storage")


class _NoTransport:
    """The driver of a connection that ended before this process started."""

    backlog = 0

    def schedule_flush(self) -> None:
        return None


_NO_TRANSPORT = _NoTransport()


def _message(journal: Any, record: MessageRecord) -> Message:
    return Message(record.topic, record.payload, record.qos, record.retain,
                   dict(record.properties), record.origin, journal.monotonic(record.created))


def _gone_connection(engine: Parts, record: SessionRecord) -> Connection:
    """A stand-in for the connection a stored will belongs to (hooks get it as client)."""
    owner: Owner = engine  # type: ignore[assignment]
    conn = Connection(owner, _NO_TRANSPORT, engine.restore_listener, "", 0,
                      hooks=engine.hooks, clock=engine.clock,
                      max_packet_size=engine.limits.max_packet_size, stats=engine.stats)
    conn.client_id = record.client_id
    conn.username = record.username
    conn.outbox.level = record.protocol_level
    conn.state = State.CLOSED
    return conn


def restore(engine: Parts, snap: Snapshot) -> dict[str, int]:
    """Put ``snap`` into ``engine`` (whose journal is enabled); returns what came back."""
    journal = engine.journal
    registry = engine.registry
    router = engine.router
    now = engine.clock()
    wall_now = journal.wall(now)
    limits = engine.limits
    due_wills: list[tuple[Connection, Will]] = []
    expired = 0
    for record in snap.sessions:
        cid = record.client_id
        gone_at = record.disconnected_at if record.disconnected_at is not None else wall_now
        session = Session(cid, registry.max_inflight, limits.max_queued_messages)
        session.expiry_interval = record.expiry_interval
        session.username = record.username
        session.protocol_level = record.protocol_level
        session.journal = journal
        will = record.will
        if will is not None:
            delay = int(will.properties.get(Property.WILL_DELAY_INTERVAL, 0))
            if record.expiry_interval is not None:
                delay = min(delay, record.expiry_interval)
            due = will.due if will.due is not None else gone_at + delay
            packet = Will(will.topic, will.payload, will.qos, will.retain,
                          dict(will.properties))
            conn = _gone_connection(engine, record)
            if due <= wall_now:
                due_wills.append((conn, packet))
            else:
                registry.pending_wills[cid] = (journal.monotonic(due), conn, packet)
        if record.expiry_interval is not None and gone_at + record.expiry_interval <= wall_now:
            expired += 1
            journal.session_gone(session)
            if engine.hooks.on_client_expired is not None:
                engine.hooks.on_client_expired(cid)
            continue
        session.offline_since = journal.monotonic(gone_at)
        if record.expiry_interval is not None:
            session.expires_at = session.offline_since + record.expiry_interval
            registry.expiring[cid] = session
        registry.sessions[cid] = session
        if will is not None and record.disconnected_at is None:
            # it was online when the broker stopped: now it is offline since the restart
            registry.record_offline(session)
    sessions = registry.sessions
    trie = router.subscriptions.trie
    for sub in snap.subscriptions:
        owner = sessions.get(sub.client_id)
        if owner is not None and owner.journal is journal:
            trie.add(owner.client_id, sub.subscription, sub.identifier)
            owner.subscriptions[sub.subscription.topic_filter] = (sub.subscription,
                                                                  sub.identifier)
    deliveries = dropped = 0
    for delivery in snap.deliveries:
        owner = sessions.get(delivery.client_id)
        if owner is None or owner.journal is not journal:
            continue
        out = Outbound(_message(journal, delivery.message), delivery.qos, delivery.retain,
                       delivery.subscription_ids)
        out.order = delivery.order
        if delivery.order >= journal.order:
            journal.order = delivery.order + 1
        expires = delivery.message.expires
        if delivery.packet_id and not (
            expires is not None and expires <= wall_now and not delivery.released
        ):
            out.packet_id = delivery.packet_id
            out.released = delivery.released
            owner.inflight[delivery.packet_id] = out
        elif expires is not None and expires <= wall_now:
            dropped += 1
            journal.delivery_done(owner, out)
            continue
        else:
            owner.pending.append(out)
        deliveries += 1
    for session in sessions.values():
        if session.inflight:
            session._next_id = max(session.inflight) % 65535 + 1
    for cid, pid in snap.inbound:
        owner = sessions.get(cid)
        if owner is not None and owner.journal is journal:
            owner.inbound_qos2.add(pid)
    retained = 0
    for kept in snap.retained:
        if kept.expires is not None and kept.expires <= wall_now:
            journal.retained(kept.topic, None)
            continue
        message = _message(journal, kept)
        router.keep_retained(message)
        retained += 1
    for key, value in snap.counters.items():
        if key in ("messages_received", "messages_sent", "messages_dropped",
                   "connections_total"):
            setattr(engine.stats, key, int(value))
    for conn, due_will in due_wills:
        registry.publish_will(conn, due_will)
    return {"sessions": len(sessions), "expired_sessions": expired,
            "subscriptions": len(snap.subscriptions), "deliveries": deliveries,
            "expired_deliveries": dropped, "retained": retained,
            "wills_published": len(due_wills)}
