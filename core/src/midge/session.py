"""Sans-I/O per-client session state: subscriptions, QoS flows, packet ids, queues.

The rule: a Session never touches a socket or a clock it was not given. The broker asks
it what to send (it answers with Outbound entries carrying packet ids) and tells it what
arrived; the same object survives reconnects of a persistent session.
"""

from __future__ import annotations

from collections import deque
from enum import Enum
from typing import Protocol

from .codec import Subscription
from .message import Message

#: packet identifiers run from 1 to this
PACKET_ID_MAX = 65535

#: the owner of a session restored without one: the first user to take it claims it (a
#: user name cannot hold U+0000 [MQTT-1.5.4-2], so no user is called this)
UNCLAIMED = "\x00unclaimed"


class DurableLog(Protocol):
    """Where a persistent session reports the changes of its deliveries (the engine's
    journal); a session without one (a clean session) reports nothing."""

    def delivery(self, session: Session, out: Outbound, new: bool = False) -> None: ...

    def delivery_done(self, session: Session, out: Outbound) -> None: ...

    def inbound(self, session: Session, packet_id: int, present: bool) -> None: ...

    def next_order(self) -> int: ...


class Enqueued(Enum):
    """What ``Session.enqueue`` did with a QoS 1/2 delivery."""

    SEND = "send"  # a packet id was assigned: write it now
    QUEUED = "queued"  # waits for an inflight slot or for the client to reconnect
    DROPPED = "dropped"  # the session queue is full
    NO_PACKET_ID = "no packet id"  # queued: every packet id is inflight


#: the members as plain names for the per-delivery code (on Python 3.11 ``Enqueued.X``
#: goes through ``EnumType.__getattr__``'s hook, about ten times a global's cost)
SEND, QUEUED, DROPPED, NO_PACKET_ID = Enqueued


class Outbound:
    """One QoS 1/2 delivery to this session's client."""

    __slots__ = ("message", "order", "packet_id", "qos", "released", "retain",
                 "subscription_ids")

    def __init__(
        self, message: Message, qos: int, retain: bool, subscription_ids: tuple[int, ...] = ()
    ) -> None:
        self.message = message
        self.qos = qos
        self.retain = retain
        self.subscription_ids = subscription_ids
        self.packet_id = 0
        #: QoS 2: PUBREC received, PUBREL sent, waiting for PUBCOMP
        self.released = False
        #: its place in a persistent session's stored queue (0: not stored)
        self.order = 0


class Session:
    """State of one client id that outlives its connections."""

    __slots__ = (
        "_next_id",
        "client_id",
        "expired",
        "expires_at",
        "expiry_interval",
        "inbound_qos2",
        "inflight",
        "journal",
        "max_inflight",
        "max_queued",
        "offline_since",
        "online",
        "owner",
        "pending",
        "protocol_level",
        "seq",
        "subscriptions",
        "username",
    )

    def __init__(
        self,
        client_id: str,
        max_inflight: int = 20,
        max_queued: int = 1000,
        owner: str | None = None,
    ) -> None:
        self.client_id = client_id
        #: the user name that created the session; only that user may take it over or
        #: resume it (None: a client without a user name)
        self.owner = owner
        #: topic filter -> (subscription, subscription identifier or 0)
        self.subscriptions: dict[str, tuple[Subscription, int]] = {}
        #: packet id -> delivery sent and not yet completed, in send order
        self.inflight: dict[int, Outbound] = {}
        #: deliveries waiting for an inflight slot (or for the client to come back)
        self.pending: deque[Outbound] = deque()
        #: packet ids of QoS 2 PUBLISHes received and not yet released by PUBREL
        self.inbound_qos2: set[int] = set()
        self.max_inflight = max_inflight
        self.max_queued = max_queued
        #: seconds the session survives its connection (None: forever)
        self.expiry_interval: int | None = 0
        #: monotonic deadline while offline (None: online or never expires)
        self.expires_at: float | None = None
        self.online = False
        #: queued deliveries whose message expired before they could be sent, for the
        #: broker to collect (``sendable`` puts them here)
        self.expired: list[Outbound] = []
        self._next_id = 1
        #: where changes are recorded while the session outlives its connection
        self.journal: DurableLog | None = None
        #: the journal batch of its last recorded change
        self.seq = 0
        #: of the connection that owns it (kept in storage)
        self.username: str | None = None
        self.protocol_level = 4
        #: engine-clock time its last connection ended (None: online or never connected)
        self.offline_since: float | None = None

    def enqueue(self, out: Outbound, bounded: bool = True) -> Enqueued:
        """Take a QoS 1/2 delivery; SEND means ``out.packet_id`` is set and it must go now.
        ``bounded=False`` queues it beyond ``max_queued`` (the retained messages a
        subscription asks for, which the client must be sent in full)."""
        # with the window as large as the id space, a full window means no id is left
        exhausted = self.online and len(self.inflight) >= PACKET_ID_MAX
        journal = self.journal
        if self.online and not self.pending and len(self.inflight) < self.max_inflight:
            pid = self._allocate()
            if pid:
                out.packet_id = pid
                self.inflight[pid] = out
                if journal is not None:
                    out.order = journal.next_order()
                    journal.delivery(self, out, True)
                return SEND
            exhausted = True
        if bounded and len(self.pending) >= self.max_queued:
            return DROPPED
        self.pending.append(out)
        if journal is not None:
            out.order = journal.next_order()
            journal.delivery(self, out, True)
        return NO_PACKET_ID if exhausted else QUEUED

    def sendable(self, now: float | None = None) -> list[Outbound]:
        """Move queued deliveries into free inflight slots; returns what to send now.

        With ``now``, deliveries whose message expired by then are not sent: they move to
        ``expired`` instead (an expired message is dropped, never started).
        """
        ready: list[Outbound] = []
        pending = self.pending
        while pending and len(self.inflight) < self.max_inflight:
            if now is not None:
                expires_at = pending[0].message.expires_at
                if expires_at is not None and expires_at <= now:
                    out = pending.popleft()
                    self.expired.append(out)
                    if self.journal is not None:
                        self.journal.delivery_done(self, out)
                    continue
            pid = self._allocate()
            if not pid:
                break
            out = pending.popleft()
            out.packet_id = pid
            self.inflight[pid] = out
            ready.append(out)
            if self.journal is not None:
                self.journal.delivery(self, out)
        return ready

    def puback(self, packet_id: int) -> Outbound | None:
        """A PUBACK arrived: the QoS 1 delivery is complete."""
        out = self.inflight.get(packet_id)
        if out is None or out.qos != 1:
            return None
        del self.inflight[packet_id]
        if self.journal is not None:
            self.journal.delivery_done(self, out)
        return out

    def pubrec(self, packet_id: int) -> Outbound | None:
        """A PUBREC arrived: the QoS 2 delivery moves to its release phase."""
        out = self.inflight.get(packet_id)
        if out is None or out.qos != 2:
            return None
        if not out.released:
            out.released = True
            if self.journal is not None:
                self.journal.delivery(self, out)
        return out

    def pubcomp(self, packet_id: int) -> Outbound | None:
        """A PUBCOMP arrived: the QoS 2 delivery is complete."""
        out = self.inflight.get(packet_id)
        if out is None or out.qos != 2 or not out.released:
            return None
        del self.inflight[packet_id]
        if self.journal is not None:
            self.journal.delivery_done(self, out)
        return out

    def drop(self, packet_id: int) -> Outbound | None:
        """Abandon an inflight delivery (for example a PUBREC with an error reason code)."""
        out = self.inflight.pop(packet_id, None)
        if out is not None and self.journal is not None:
            self.journal.delivery_done(self, out)
        return out

    def receive_qos2(self, packet_id: int) -> None:
        """A QoS 2 PUBLISH was accepted: its id awaits the client's PUBREL."""
        self.inbound_qos2.add(packet_id)
        if self.journal is not None:
            self.journal.inbound(self, packet_id, True)

    def release_qos2(self, packet_id: int) -> bool:
        """PUBREL (or a reuse answered 0x91): the id is free again; False if unknown."""
        if packet_id not in self.inbound_qos2:
            return False
        self.inbound_qos2.discard(packet_id)
        if self.journal is not None:
            self.journal.inbound(self, packet_id, False)
        return True

    def resume(self) -> list[Outbound]:
        """The client is back: every unfinished delivery, in order, to send again."""
        self.online = True
        self.expires_at = None
        return list(self.inflight.values())

    def clear_queue(self) -> int:
        """Forget every queued and inflight delivery; returns how many there were."""
        count = len(self.pending) + len(self.inflight)
        self.pending.clear()
        self.inflight.clear()
        self.expired.clear()
        return count

    def _allocate(self) -> int:
        """A free packet id, or 0 when all of them are inflight."""
        inflight = self.inflight
        pid = self._next_id
        for _ in range(PACKET_ID_MAX):
            if pid not in inflight:
                self._next_id = pid % PACKET_ID_MAX + 1
                return pid
            pid = pid % PACKET_ID_MAX + 1
        return 0
