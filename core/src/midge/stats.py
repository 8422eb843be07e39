"""Broker counters, the raw material of $SYS topics and the HTTP stats endpoint.

The rule: plain integer attributes bumped inline on the hot path; nothing here allocates
or locks per message.
"""

from __future__ import annotations

import time


class Stats:
    """Counters since the broker started."""

    __slots__ = (
        "clients_connected",
        "connections_refused_flapping",
        "connections_total",
        "messages_dropped",
        "messages_received",
        "messages_sent",
        "publishers_held",
        "publishers_rate_limited",
        "started",
        "subscribers_stuck",
    )

    def __init__(self) -> None:
        self.started = time.time()
        self.connections_total = 0
        self.clients_connected = 0
        self.messages_received = 0
        self.messages_sent = 0
        self.messages_dropped = 0
        self.connections_refused_flapping = 0
        #: backpressure: publishers held for a full subscriber queue; subscribers found
        #: stuck; the inbound rate limit: publishers held for exceeding it
        self.publishers_held = 0
        self.subscribers_stuck = 0
        self.publishers_rate_limited = 0

    def as_dict(self) -> dict[str, float]:
        return {name: getattr(self, name) for name in self.__slots__}
