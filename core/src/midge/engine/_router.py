"""The router: subscriptions, retained messages, and delivery into outboxes and queues.

The rule: routing never awaits. A message is matched against the trie, retained, and
appended to each subscriber's outbox (QoS 0, or QoS 1/2 with a free inflight slot) or
session queue before the next packet is read; a slow subscriber only fills its own
queue. ``Subscriptions`` is the one owner of who subscribes to what: the trie and each
session's own set change together.
"""

from __future__ import annotations

import heapq
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from ..codec import PubRel, Subscription
from ..logsafe import safe
from ..message import Message
from ..session import DROPPED, NO_PACKET_ID, SEND, Outbound, Session
from ..topics import RetainedIndex, SharedGroup, SubscriptionTrie

if TYPE_CHECKING:
    from ..config import BrokerSettings
    from ..hooks import Hooks
    from ..stats import Stats
    from ._access import Access
    from ._connection import Connection
    from ._journal import Journal
    from ._throttle import Throttle

log = logging.getLogger("midge.broker")

#: an inline subscriber: called with each matching message, never awaited
Sink = Callable[[Message], None]


#: drops that are the protocol working as asked (DEBUG only); every other drop is a loss
#: an operator must see
_EXPECTED_DROPS = frozenset({"message expired", "not authorized"})
#: seconds between two WARNING summaries of dropped messages
DROP_REPORT_INTERVAL = 10.0


def _client(conn: Connection | None) -> str:
    return conn.name if conn is not None else "an offline client"


class DropReport:
    """Dropped messages, visible at the default log level without flooding it.

    The first drop after a quiet period is logged at once (WARNING, with its client and
    reason); later ones are counted per reason and summarised at most once every
    ``DROP_REPORT_INTERVAL`` seconds, naming the count, the clients and one example.
    """

    __slots__ = ("_clients", "_counts", "_next", "_reported")

    def __init__(self) -> None:
        #: reason -> drops not yet reported
        self._counts: dict[str, int] = {}
        #: clients the unreported drops were meant for (a few, for the log line; named
        #: only when it is written, not at every drop)
        self._clients: dict[Connection | None, None] = {}
        #: before this time a drop is only counted
        self._next = float("-inf")
        self._reported = 0

    def add(self, now: float, conn: Connection | None, topic: str, reason: str) -> None:
        if now >= self._next and not self._counts:
            log.warning("message to %s for %s dropped: %s (further drops are summarised "
                        "every %d s)", safe(topic), _client(conn), reason,
                        DROP_REPORT_INTERVAL)
            self._next = now + DROP_REPORT_INTERVAL
            return
        counts = self._counts
        counts[reason] = counts.get(reason, 0) + 1
        if len(self._clients) < 5:
            self._clients[conn] = None
        if now >= self._next:
            self.flush(now)

    def flush(self, now: float) -> None:
        """Log what was counted, when the interval since the last line has passed."""
        if not self._counts or now < self._next:
            return
        total = sum(self._counts.values())
        log.warning(
            "%d messages dropped in the last %d s (%s), for %s",
            total, DROP_REPORT_INTERVAL,
            ", ".join(f"{reason}: {n}" for reason, n in sorted(self._counts.items())),
            ", ".join(dict.fromkeys(map(_client, self._clients)))
            + (" and others" if len(self._clients) >= 5 else ""),
        )
        self._counts = {}
        self._clients = {}
        self._next = now + DROP_REPORT_INTERVAL


class Subscriptions:
    """Every session's subscriptions: the trie and the sessions' sets kept together."""

    __slots__ = ("journal", "trie")

    def __init__(self, journal: Journal | None = None) -> None:
        self.trie = SubscriptionTrie()
        #: records the changes of persistent sessions' subscriptions
        self.journal = journal

    def __len__(self) -> int:
        return len(self.trie)

    def add(self, session: Session, sub: Subscription, subscription_id: int = 0) -> bool:
        """Add or replace a subscription; True when it is new."""
        new = self.trie.add(session.client_id, sub, subscription_id)
        session.subscriptions[sub.topic_filter] = (sub, subscription_id)
        if session.journal is not None and self.journal is not None:
            self.journal.subscribed(session, sub, subscription_id)
        return new

    def remove(self, session: Session, topic_filter: str) -> bool:
        """Remove a subscription; False when there was none."""
        session.subscriptions.pop(topic_filter, None)
        if session.journal is not None and self.journal is not None:
            self.journal.unsubscribed(session, topic_filter)
        return self.trie.remove(session.client_id, topic_filter)

    def clear(self, session: Session) -> None:
        """Remove every subscription of a session (its stored ones go with the session:
        nothing is recorded here)."""
        for topic_filter in session.subscriptions:
            self.trie.remove(session.client_id, topic_filter)
        session.subscriptions.clear()


class Router:
    """Retains and delivers messages: to connected clients, session queues and sinks."""

    def __init__(
        self, limits: BrokerSettings, hooks: Hooks, stats: Stats, access: Access,
        clock: Callable[[], float], clients: dict[str, Connection],
        sessions: dict[str, Session], journal: Journal | None = None,
    ) -> None:
        self._hooks = hooks
        self._journal = journal
        self._stats = stats
        self._access = access
        self._clock = clock
        self._max_queued = limits.max_queued_messages
        self._max_queued_bytes = limits.max_queued_bytes
        self._max_retained = limits.max_retained_messages
        self._max_retained_bytes = limits.max_retained_bytes
        #: payload bytes of every retained message, for ``max_retained_bytes``
        self.retained_bytes = 0
        #: connected clients (CONNACK sent) by client id, shared with the registry
        self._clients = clients
        #: every session by client id, shared with the registry
        self._sessions = sessions
        self.subscriptions = Subscriptions(journal)
        self.retained: RetainedIndex[Message] = RetainedIndex()
        #: (deadline, tie-breaker, message) of retained messages that expire
        self._retained_expiry: list[tuple[float, int, Message]] = []
        #: inline subscribers: key -> callback, matched through their own trie
        self._sinks: dict[str, Sink] = {}
        self._sink_trie = SubscriptionTrie()
        self.drops = DropReport()
        #: QoS 1/2 deliveries to a connected client that could not be written at once (its
        #: inflight window full) since the engine last asked: the quantum's signal to
        #: yield, so its acknowledgements are read sooner (a QoS 0 drop at a full socket
        #: is not: yielding would not make that socket read faster)
        self.waited = 0
        #: backpressure and the inbound rate (set by the engine)
        self.throttle: Throttle | None = None
        #: the connection whose message is being routed (None: a will, the broker)
        self._publisher: Connection | None = None

    # -- inline subscribers ----------------------------------------------------------------

    def add_sink(self, key: str, topic_filter: str, sink: Sink) -> None:
        self._sinks[key] = sink
        self._sink_trie.add(key, Subscription(topic_filter))

    def remove_sink(self, key: str, topic_filter: str) -> None:
        if self._sinks.pop(key, None) is not None:
            self._sink_trie.remove(key, topic_filter)

    # -- routing ---------------------------------------------------------------------------

    def route(self, message: Message, publisher: Connection | None = None) -> int:
        """Retain and deliver a message to every matching subscriber; returns the count."""
        hooks = self._hooks
        throttle = self.throttle
        if (throttle is not None and publisher is not None and throttle.rate_limited
                and not publisher.closing):  # a will is not the client's own publish
            throttle.published(publisher)
        if message.retain:
            self._retain(message, publisher)
        origin = message.origin
        trie = self.subscriptions.trie
        routes = trie.match(message.topic)
        if trie.shared_count:
            groups = trie.match_shared(message.topic)
            if groups:
                routes = list(routes)
                for group in groups:
                    chosen = self.choose_member(group, message.topic)
                    if chosen is not None:
                        routes.append(group.route(chosen))
        if hooks.on_select_subscribers is not None:
            routes = hooks.on_select_subscribers(message, list(routes))
        delivered = 0
        self._publisher = publisher
        try:
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
        finally:
            self._publisher = None
        if self._sinks:
            for sink_route in self._sink_trie.match(message.topic):
                self._sinks[sink_route.client_id](message)
                delivered += 1
        return delivered

    def retain_refusal(self, topic: str, size: int) -> str | None:
        """Why a retained message of ``size`` payload bytes on ``topic`` would exceed the
        retained quotas (None: it fits); replacing a message frees what it held."""
        old = self.retained.get(topic)
        count = len(self.retained) + (old is None)
        if self._max_retained and count > self._max_retained:
            return f"max_retained_messages ({self._max_retained}) reached"
        total = self.retained_bytes + size - (len(old.payload) if old is not None else 0)
        if self._max_retained_bytes and total > self._max_retained_bytes:
            return f"max_retained_bytes ({self._max_retained_bytes}) reached"
        return None

    def keep_retained(self, message: Message) -> None:
        """Store a retained message (replacing the topic's), counting its bytes."""
        old = self.retained.get(message.topic)
        if old is not None:
            self.retained_bytes -= len(old.payload)
        self.retained.set(message.topic, message)
        self.retained_bytes += len(message.payload)
        if message.expires_at is not None:
            heapq.heappush(self._retained_expiry, (message.expires_at, id(message), message))

    def _forget_retained(self, topic: str) -> None:
        old = self.retained.get(topic)
        if old is not None:
            self.retained_bytes -= len(old.payload)
            self.retained.discard(topic)

    def _retain(self, message: Message, publisher: Connection | None) -> None:
        if message.payload:
            why = self.retain_refusal(message.topic, len(message.payload))
            if why is not None:
                # publishers that can be told were told before routing; this is the
                # guard for every other source
                log.warning("retained message on %s not kept: %s", safe(message.topic), why)
                return
            self.keep_retained(message)
        else:
            self._forget_retained(message.topic)
        journal = self._journal
        if journal is not None and journal.enabled and not message.topic.startswith("$SYS/"):
            # $SYS messages are the broker's own, republished every interval
            journal.retained(message.topic, message if message.payload else None)
        if self._hooks.on_retain_message is not None:
            self._hooks.on_retain_message(publisher, message, bool(message.payload))

    def choose_member(self, group: SharedGroup, topic: str | None = None) -> str | None:
        """The member of a shared subscription group to get the next message.

        Round-robin over the members, preferring a connected one with a free inflight
        slot, then any connected one, then an offline persistent one (which queues it).
        With ``topic``, a connected member the ACL does not let read it is passed over,
        so a message is never given to a member that must drop it while another could
        take it (an offline member's ACL is asked when it is delivered).
        """
        order = group.order()
        count = len(order)
        if not count:
            return None
        start = group.cursor % count
        connected = offline = -1
        pick = -1
        clients = self._clients
        for step in range(count):
            index = (start + step) % count
            conn = clients.get(order[index])
            if conn is None:
                if offline < 0:
                    offline = index
                continue
            if topic is not None and not self._access.allowed(conn, topic, False):
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
        if pick < 0:
            return None  # no member may read it
        group.cursor = pick + 1
        return order[pick]

    def deliver(
        self, client_id: str, message: Message, qos: int, retain: bool,
        subscription_ids: tuple[int, ...] = (), bounded: bool = True,
    ) -> None:
        """Send one message to one client now, or queue it in its session (beyond its
        queue limit when not ``bounded``: the retained messages a SUBSCRIBE asked for)."""
        conn = self._clients.get(client_id)
        now = None
        if message.expires_at is not None:
            now = self._clock()
            if message.expires_at <= now:
                return self.dropped(conn, message, "message expired")
        if not qos:
            if conn is None:
                return None
            outbox = conn.outbox
            if outbox.stuck >= self._max_queued or outbox.waiting >= self._max_queued_bytes:
                return self.dropped(conn, message, "outbound buffer full")
            if not self._access.allowed(conn, message.topic, False):
                return self.dropped(conn, message, "not authorized")
            why = outbox.publish(message, 0, retain, 0, subscription_ids, False, now)
            if why is not None:
                return self.dropped(conn, message, why)
            self._stats.sent_by_qos[0] += 1  # messages_sent is the sum
            return None
        session = self._sessions.get(client_id)
        if session is None:
            return None
        out = Outbound(message, qos, retain, subscription_ids)
        if conn is None and session.online:
            # between two connections of one session (a takeover publishing the old
            # connection's will to it): the queue waits for the new one's resume
            if len(session.pending) >= session.max_queued:
                return self.dropped(conn, message, "session queue full")
            session.pending.append(out)
            return None
        result = session.enqueue(out, bounded)
        if result is not SEND and conn is not None:
            self.waited += 1
        if result is SEND:
            assert conn is not None
            self.write_publish(conn, out)
        elif result is DROPPED:
            throttle = self.throttle
            if (throttle is not None and throttle.backpressure and conn is not None
                    and throttle.full(conn, session, self._publisher)):
                # backpressure: queued beyond the cap, and its publisher is held
                session.pending.append(out)
            else:
                self.dropped(conn, message, "session queue full")
        elif (result is NO_PACKET_ID and conn is not None
              and self._hooks.on_packet_id_exhausted is not None):
            self._hooks.on_packet_id_exhausted(conn, message)
        return None

    def dropped(self, conn: Connection | None, message: Message, reason: str) -> None:
        self._stats.dropped(reason)
        if reason in _EXPECTED_DROPS:
            if log.isEnabledFor(logging.DEBUG):  # a drop per message: no names unless shown
                log.debug("message to %s for %s dropped: %s", safe(message.topic),
                          _client(conn), reason)
        else:
            self.drops.add(self._clock(), conn, message.topic, reason)
        if self._hooks.on_publish_dropped is not None:
            self._hooks.on_publish_dropped(conn, message, reason)

    def write_publish(self, conn: Connection, out: Outbound, dup: bool = False) -> None:
        """Write a QoS 1/2 delivery that holds a packet id (or abandon it)."""
        message = out.message
        hooks = self._hooks
        if not self._access.allowed(conn, message.topic, False):
            why: str | None = "not authorized"
        else:
            now = None if message.expires_at is None else self._clock()
            why = conn.outbox.publish(message, out.qos, out.retain, out.packet_id,
                                      out.subscription_ids, dup, now)
        if why is not None:
            # complete the flow on the client's behalf so the queue behind it moves
            session = conn.session
            if session is not None:
                session.drop(out.packet_id)
            self._stats.inflight_dropped += 1
            if hooks.on_qos_dropped is not None:
                hooks.on_qos_dropped(conn, out.packet_id, why)
            return self.dropped(conn, message, why)
        self._stats.sent_by_qos[out.qos] += 1  # messages_sent is the sum
        if hooks.on_qos_publish is not None:
            hooks.on_qos_publish(conn, message, out.packet_id, dup)
        return None

    def pump(self, conn: Connection, session: Session) -> None:
        """Move queued deliveries into free inflight slots and send them."""
        throttle = self.throttle
        if throttle is not None and throttle.backpressure and session.pending:
            throttle.progress(conn, session)
        # a delivery abandoned by write_publish frees its slot at once; refill until
        # nothing moves, or the queue behind it stalls for good
        while ready := session.sendable(self._clock()):
            for out in ready:
                self.write_publish(conn, out)
        if session.expired:
            expired, session.expired = session.expired, []
            for out in expired:
                self.dropped(conn, out.message, "message expired")

    def resume(self, conn: Connection, session: Session) -> None:
        """A session is live again on ``conn``: resend what is unfinished, with DUP (or
        PUBREL for a QoS 2 delivery past PUBREC), then what waits in the queue."""
        for out in session.resume():
            if out.released:
                conn.send(PubRel(out.packet_id))
            else:
                self.write_publish(conn, out, dup=True)
        self.pump(conn, session)

    # -- retained messages -----------------------------------------------------------------

    def retained_for(self, topic_filter: str) -> list[Message]:
        """The retained messages matching a filter; expired ones are removed on the way."""
        messages = self.retained.match(topic_filter)
        now = 0.0
        for message in messages:
            if message.expires_at is not None:
                now = now or self._clock()
                if message.expires_at <= now:
                    break
        else:
            return messages
        live: list[Message] = []
        for message in messages:
            if message.expired(now):
                self._expire_retained(message)
            else:
                live.append(message)
        return live

    def tick(self, now: float) -> None:
        """Remove the retained messages that expired by ``now``; report drops."""
        self.drops.flush(now)
        expiry = self._retained_expiry
        while expiry and expiry[0][0] <= now:
            _, _, message = heapq.heappop(expiry)
            self._expire_retained(message)

    def _expire_retained(self, message: Message) -> None:
        if self.retained.get(message.topic) is message:
            self._forget_retained(message.topic)
            if self._journal is not None:
                self._journal.retained(message.topic, None)
            log.debug("retained message on %s expired", safe(message.topic))
            if self._hooks.on_retained_expired is not None:
                self._hooks.on_retained_expired(message.topic)
