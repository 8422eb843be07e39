"""Broker counters, the raw material of $SYS topics, /stats and /metrics.

The rule: plain integer attributes (and dicts and lists of integers prepared up front)
bumped inline where the engine already does the work; nothing here allocates or locks per
message. Figures that describe the present (connections, sessions, queues, inflight,
subscriptions, retained messages) are not counted at all: they are read from the engine
when someone asks.
"""

from __future__ import annotations

import time

from .codec import (
    Auth,
    ConnAck,
    Connect,
    Disconnect,
    PingReq,
    PingResp,
    PubAck,
    PubComp,
    Publish,
    PubRec,
    PubRel,
    SubAck,
    Subscribe,
    UnsubAck,
    Unsubscribe,
)

#: every control packet class, in packet type order
PACKET_TYPES: tuple[type, ...] = (
    Connect, ConnAck, Publish, PubAck, PubRec, PubRel, PubComp, Subscribe, SubAck,
    Unsubscribe, UnsubAck, PingReq, PingResp, Disconnect, Auth,
)


class Stats:
    """Counters since the broker started."""

    __slots__ = (
        "_received_base",
        "_sent_base",
        "bytes_received",
        "bytes_sent",
        "clients_connected",
        "clients_maximum",
        "connections_by_listener",
        "connections_refused_flapping",
        "connections_total",
        "connects_refused",
        "dropped_by_reason",
        "inflight_dropped",
        "messages_dropped",
        "packets_received",
        "packets_sent",
        "publishers_held",
        "publishers_rate_limited",
        "received_by_qos",
        "received_bytes_by_qos",
        "sent_by_qos",
        "sent_bytes_by_qos",
        "started",
        "subscribers_stuck",
        "transport_errors",
    )

    #: the scalar counters, for ``as_dict`` and stored sys info
    SCALARS = (
        "bytes_received", "bytes_sent", "clients_connected", "clients_maximum",
        "connections_refused_flapping", "connections_total", "inflight_dropped",
        "messages_dropped", "messages_received", "messages_sent", "publishers_held",
        "publishers_rate_limited", "started", "subscribers_stuck",
    )

    def __init__(self) -> None:
        self.started = time.time()
        self.connections_total = 0
        self.clients_connected = 0
        #: the most clients connected at once
        self.clients_maximum = 0
        #: restored counts (stored sys info) below the per-QoS counters
        self._received_base = 0
        self._sent_base = 0
        self.messages_dropped = 0
        #: connections refused because their client id or address flaps
        self.connections_refused_flapping = 0
        #: backpressure: publishers held for a full subscriber queue; subscribers found
        #: stuck; the inbound rate limit: publishers held for exceeding it
        self.publishers_held = 0
        self.subscribers_stuck = 0
        self.publishers_rate_limited = 0
        #: transports closed before MQTT: failed or stalled TLS handshakes, refused
        #: WebSocket upgrades and frames, missing or malformed PROXY headers
        self.transport_errors = 0
        #: QoS 1/2 deliveries abandoned after they were given a packet id
        self.inflight_dropped = 0
        #: bytes read from and written to client transports
        self.bytes_received = 0
        self.bytes_sent = 0
        #: PUBLISH messages received from clients and deliveries sent, indexed by QoS;
        #: ``messages_received`` and ``messages_sent`` are their sums, kept nowhere else,
        #: so the hot path bumps one counter per message each way
        self.received_by_qos = [0, 0, 0]
        self.sent_by_qos = [0, 0, 0]
        #: payload bytes of the PUBLISHes received, and PUBLISH frame bytes sent, by QoS
        self.received_bytes_by_qos = [0, 0, 0]
        self.sent_bytes_by_qos = [0, 0, 0]
        #: packet class -> count, both ways, but PUBLISH (see ``packets_by_type``)
        self.packets_received: dict[type, int] = dict.fromkeys(PACKET_TYPES, 0)
        self.packets_sent: dict[type, int] = dict.fromkeys(PACKET_TYPES, 0)
        #: refusal reason (a reason code's name, or "max_connections") -> count
        self.connects_refused: dict[str, int] = {}
        #: why a delivery was dropped -> count
        self.dropped_by_reason: dict[str, int] = {}
        #: listener label -> connections accepted through it
        self.connections_by_listener: dict[str, int] = {}

    def refused(self, reason: str) -> None:
        """Count a refused connection (not on the message path)."""
        self.connects_refused[reason] = self.connects_refused.get(reason, 0) + 1

    def dropped(self, reason: str) -> None:
        """Count a dropped delivery."""
        self.messages_dropped += 1
        self.dropped_by_reason[reason] = self.dropped_by_reason.get(reason, 0) + 1

    @property
    def messages_received(self) -> int:
        return self._received_base + sum(self.received_by_qos)

    @messages_received.setter
    def messages_received(self, value: int) -> None:
        self._received_base = value - sum(self.received_by_qos)

    @property
    def messages_sent(self) -> int:
        return self._sent_base + sum(self.sent_by_qos)

    @messages_sent.setter
    def messages_sent(self, value: int) -> None:
        self._sent_base = value - sum(self.sent_by_qos)

    def packets_by_type(self, received: bool) -> dict[type, int]:
        """Packets received (or sent) by class since the start. PUBLISH comes from the
        per-QoS counters the hot path keeps anyway (plus, received, the PUBLISHes refused
        as protocol errors, which ``packets_received`` counts)."""
        table = dict(self.packets_received if received else self.packets_sent)
        table[Publish] += sum(self.received_by_qos if received else self.sent_by_qos)
        return table

    @property
    def packets_received_total(self) -> int:
        return sum(self.packets_by_type(True).values())

    @property
    def packets_sent_total(self) -> int:
        return sum(self.packets_by_type(False).values())

    def as_dict(self) -> dict[str, float]:
        return {name: getattr(self, name) for name in self.SCALARS}
