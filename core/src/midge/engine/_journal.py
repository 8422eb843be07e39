"""The journal: the durable changes of the engine, gathered into group-commit batches.

The rule: only state that outlives a connection is recorded (persistent sessions, their
subscriptions, queued and inflight deliveries, inbound QoS 2 ids, retained messages), as
typed records with wall-clock times, into the batch that is gathering; the shell commits
one batch while the next gathers and tells ``committed(seq)``. An acknowledgement that
depends on a change is held in its connection's outbox behind the sequence number of the
batch holding that change (``hold``), and everything written to that client after it
waits behind it too, so acknowledgements stay in order. Nothing here awaits or does I/O.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from ..records import (
    DELIVERY_HEAD,
    Batch,
    MessageRecord,
    SessionRecord,
    SubscriptionRecord,
    WillRecord,
    delivery_bytes,
    message_fields,
)

if TYPE_CHECKING:
    from ..codec import Subscription, Will
    from ..message import Message
    from ..session import Outbound, Session
    from ._outbox import Outbox


class Journal:
    """The batch gathering now, the last committed sequence, and the held outboxes."""

    __slots__ = (
        "_clock", "_dirty", "_encoded", "_live", "_new", "_offset", "batch", "changes",
        "committed", "enabled", "hold_acks", "holding", "order", "wake",
    )

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        #: wall clock minus the engine's clock (set by ``enable``)
        self._offset = 0.0
        #: a storage is active: changes are recorded (off: every method is a no-op and
        #: no session carries the journal)
        self.enabled = False
        #: durable acknowledgements: acks wait for the commit of what they depend on
        self.hold_acks = True
        self.batch = Batch(1)
        #: the last batch the storage committed
        self.committed = 0
        #: changes recorded so far (a connection compares it before and after a packet)
        self.changes = 0
        #: the next delivery order number (continues after the restored ones)
        self.order = 1
        #: outboxes holding output behind a commit
        self.holding: set[Outbox] = set()
        #: called when the batch gets its first change (the shell's writer wakes up)
        self.wake: Callable[[], None] | None = None
        #: message -> its stored fields (``message_fields``), so that a message queued
        #: to many sessions, or stored again with a packet id, is encoded once
        self._encoded: dict[Message, bytes] = {}
        #: deliveries changed in this batch, as the live objects (delivery -> its
        #: session): they are encoded when the batch is taken, so a delivery that
        #: changes several times in one batch is encoded once, in its last state
        self._live: dict[Outbound, Session] = {}
        #: of those, the ones first recorded in this batch: finished before the batch is
        #: taken, they are never written at all
        self._new: set[Outbound] = set()
        #: something changed since the last ``take``
        self._dirty = False

    def enable(self, wall_now: float, hold_acks: bool) -> None:
        self.enabled = True
        self.hold_acks = hold_acks
        self._offset = wall_now - self._clock()

    # -- time ------------------------------------------------------------------------------

    def wall(self, monotonic: float) -> float:
        """An engine-clock time as wall-clock seconds."""
        return monotonic + self._offset

    def monotonic(self, wall: float) -> float:
        """A wall-clock time as engine-clock seconds."""
        return wall - self._offset

    # -- the batches -----------------------------------------------------------------------

    def _touch(self, session: Session | None = None) -> Batch:
        batch = self.batch
        self.changes += 1
        if session is not None:
            session.seq = batch.seq
        if not self._dirty:
            self._first_change()
        return batch

    def _first_change(self) -> None:
        self._dirty = True
        if self.wake is not None:
            self.wake()

    def take(self) -> Batch | None:
        """The gathered batch, to commit now (None: nothing changed); the next one starts
        gathering. It may be empty when every change cancelled out: committing it is
        then only releasing what waited for it."""
        if not self._dirty:
            return None
        batch = self.batch
        live = self._live
        if live:
            deliveries = batch.deliveries
            created = batch.created
            new = self._new
            encoded = self._encoded
            if len(encoded) > 4096:
                # kept across batches (a queued delivery is stored again once it gets
                # its packet id), within bounds
                encoded.clear()
            offset = self._offset
            head = DELIVERY_HEAD.pack  # delivery_bytes without subscription ids, inlined
            for out, session in live.items():
                message = out.message
                fields = encoded.get(message)
                if fields is None:
                    expires = message.expires_at
                    fields = encoded[message] = message_fields(
                        message.topic, message.payload, message.qos, message.retain,
                        message.properties, message.origin, message.created + offset,
                        None if expires is None else expires + offset)
                key = (session.client_id, out.order)
                sids = out.subscription_ids
                deliveries[key] = (
                    head(1, out.qos | (out.retain << 2) | (out.released << 3),
                         out.packet_id, 0) + fields if not sids
                    else delivery_bytes(out.qos, out.retain, out.released, out.packet_id,
                                        sids, fields))
                if out in new:
                    created.add(key)
            live.clear()
            new.clear()
        self._dirty = False
        self.batch = Batch(batch.seq + 1)
        return batch

    def committed_upto(self, seq: int) -> None:
        """Batch ``seq`` (and every one before it) is durable: release what waited."""
        self.committed = seq
        if self.holding:
            for outbox in list(self.holding):
                if outbox.release(seq):
                    self.holding.discard(outbox)

    @property
    def pending(self) -> bool:
        """Something is recorded or held that is not committed yet."""
        return self._dirty or bool(self.holding)

    # -- holding acknowledgements ----------------------------------------------------------

    def hold(self, outbox: Outbox, mark: int, session: Session | None) -> None:
        """A connection is about to send an acknowledgement of the packet it read when
        the change count was ``mark``: hold it (and all its output after it) until the
        changes it depends on are committed: this batch's if anything changed since,
        else its session's last one."""
        if not self.hold_acks or not self.enabled:
            return
        need = 0
        if self.changes != mark:
            need = self.batch.seq
        elif session is not None and session.seq > self.committed:
            need = session.seq
        if need > self.committed and outbox.hold(need):
            self.holding.add(outbox)

    # -- sessions --------------------------------------------------------------------------

    def track(self, session: Session, will: Will | None) -> None:
        """A session is established on a connection with ``will``: record it when it
        outlives its connection (then the session reports its own delivery changes)."""
        if not self.enabled:
            return
        if session.expiry_interval == 0:
            # ends with this connection: whatever was stored for it goes now
            self.session_gone(session)
            return
        session.journal = self
        self.put_session(session, None, will)

    def put_session(self, session: Session, disconnected_at: float | None,
                    will: Will | None = None, will_due: float | None = None) -> None:
        """Record a session: online (``disconnected_at`` None; its will then counts as
        falling due at a restart), or offline since ``disconnected_at`` (engine clock)
        with a delayed ``will`` due at ``will_due``."""
        if session.journal is None:
            return
        cid = session.client_id
        record = SessionRecord(
            cid, session.expiry_interval,
            None if disconnected_at is None else self.wall(disconnected_at),
            session.username, session.protocol_level,
            None if will is None else WillRecord(
                will.topic, will.payload, will.qos, will.retain, dict(will.properties),
                None if will_due is None else self.wall(will_due)),
        )
        self._touch(session).sessions[cid] = record

    def session_gone(self, session: Session) -> None:
        """A recorded session ended (expired, discarded, replaced by a clean start)."""
        if session.journal is None:
            return
        session.journal = None
        cid = session.client_id
        batch = self._touch()
        batch.cleared.add(cid)
        batch.sessions.pop(cid, None)
        # what this batch recorded for it would outlive the clear: forget it
        for key in [key for key in batch.subscriptions if key[0] == cid]:
            del batch.subscriptions[key]
        for pair in [pair for pair in batch.deliveries if pair[0] == cid]:
            del batch.deliveries[pair]
        for pair in [pair for pair in batch.inbound if pair[0] == cid]:
            del batch.inbound[pair]
        for out in [out for out, owner in self._live.items() if owner is session]:
            del self._live[out]
            self._new.discard(out)

    def subscribed(self, session: Session, sub: Subscription, identifier: int) -> None:
        if session.journal is not None:
            cid = session.client_id
            self._touch(session).subscriptions[(cid, sub.topic_filter)] = SubscriptionRecord(
                cid, sub, identifier)

    def unsubscribed(self, session: Session, topic_filter: str) -> None:
        if session.journal is not None:
            self._touch(session).subscriptions[(session.client_id, topic_filter)] = None

    # -- deliveries (called by the Session that carries the journal) -----------------------

    def message(self, message: Message) -> MessageRecord:
        """The record of a message (a retained one: deliveries are encoded by ``take``)."""
        expires = message.expires_at
        return MessageRecord(
            message.topic, message.payload, message.qos, message.retain,
            message.properties, message.origin, self.wall(message.created),
            None if expires is None else self.wall(expires),
        )

    def delivery(self, session: Session, out: Outbound, new: bool = False) -> None:
        """A delivery was queued (``new``) or changed (packet id, QoS 2 phase)."""
        # _touch inlined here and below: two or three of these per message
        self.changes += 1
        session.seq = self.batch.seq
        if not self._dirty:
            self._first_change()
        self._live[out] = session
        if new:
            self._new.add(out)

    def delivery_done(self, session: Session, out: Outbound) -> None:
        """A delivery finished or was dropped."""
        batch = self.batch
        self.changes += 1
        session.seq = batch.seq
        if not self._dirty:
            self._first_change()
        new = self._new
        if out in new:
            new.discard(out)  # never written: nothing to delete
            del self._live[out]
        else:
            self._live.pop(out, None)
            batch.deliveries[(session.client_id, out.order)] = None

    def inbound(self, session: Session, packet_id: int, present: bool) -> None:
        self._touch(session).inbound[(session.client_id, packet_id)] = present

    def next_order(self) -> int:
        order = self.order
        self.order = order + 1
        return order

    # -- retained messages and counters ----------------------------------------------------

    def retained(self, topic: str, message: Message | None) -> None:
        if self.enabled:
            self._touch().retained[topic] = None if message is None else self.message(message)

    def counters(self, counters: dict[str, int]) -> None:
        if self.enabled:
            self._touch().counters = counters
