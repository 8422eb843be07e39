"""Built-in plugins: per-listener anonymous access and the $SYS publisher.

The rule: core features that fit a hook are plugins on the same hooks and the same
public handle as third-party ones, registered after the configured plugins so that those
decide first.
"""

from __future__ import annotations

import math
import time
from typing import TYPE_CHECKING, Any

from .._version import __version__
from .specs import hookimpl

if TYPE_CHECKING:
    from ..api import BrokerHandle, Client
    from ..codec import Connect


class ListenerAccess:
    """Allows everything on a listener whose ``allow_anonymous`` is set (the no-config
    default, or an embedder's choice); abstains elsewhere, so no decision denies."""

    @hookimpl
    def on_connect_authenticate(self, client: Client, packet: Connect) -> bool | None:
        return True if client.listener.allow_anonymous else None

    @hookimpl
    def on_acl_check(self, client: Client, topic: str, write: bool) -> bool | None:
        return True if client.listener.allow_anonymous else None


#: $SYS topic -> key of the broker's sys info: mochi-mqtt's set under its names, and the
#: older Mosquitto-style names midge published before
SYS_TOPICS = {
    "$SYS/broker/version": "version",
    "$SYS/broker/time": "time",
    "$SYS/broker/uptime": "uptime",
    "$SYS/broker/started": "started",
    "$SYS/broker/load/bytes/received": "bytes_received",
    "$SYS/broker/load/bytes/sent": "bytes_sent",
    "$SYS/broker/clients/connected": "clients_connected",
    "$SYS/broker/clients/disconnected": "clients_disconnected",
    "$SYS/broker/clients/maximum": "clients_maximum",
    "$SYS/broker/clients/total": "clients_total",
    "$SYS/broker/connections/transport errors": "transport_errors",
    "$SYS/broker/packets/received": "packets_received",
    "$SYS/broker/packets/sent": "packets_sent",
    "$SYS/broker/messages/received": "messages_received",
    "$SYS/broker/messages/sent": "messages_sent",
    "$SYS/broker/messages/dropped": "messages_dropped",
    "$SYS/broker/messages/inflight": "inflight",
    "$SYS/broker/retained": "retained",
    "$SYS/broker/subscriptions": "subscriptions",
    "$SYS/broker/system/memory": "memory_alloc",
    "$SYS/broker/system/threads": "threads",
    "$SYS/broker/connections/total": "connections_total",
    "$SYS/broker/subscriptions/count": "subscriptions",
    "$SYS/broker/retained messages/count": "retained",
    "$SYS/broker/connections/refused/flapping": "connections_refused_flapping",
    "$SYS/broker/publishers/held": "publishers_held",
    "$SYS/broker/publishers/rate limited": "publishers_rate_limited",
    "$SYS/broker/subscribers/stuck": "subscribers_stuck",
}

#: Mosquitto's load averages: $SYS/broker/load/NAME/{1min,5min,15min} -> the counter whose
#: rate (per minute) they average
LOAD_COUNTERS = {
    "messages/received": "messages_received",
    "messages/sent": "messages_sent",
    "bytes/received": "bytes_received",
    "bytes/sent": "bytes_sent",
    "publish/dropped": "messages_dropped",
    "connections": "connections_total",
}
LOAD_WINDOWS = {"1min": 60.0, "5min": 300.0, "15min": 900.0}


class LoadAverages:
    """Exponentially weighted per-minute rates of counters, as Mosquitto's ``load/``
    topics: each tick moves an average towards the rate seen since the last one, by a
    weight that depends on the tick's length and the window."""

    def __init__(self) -> None:
        self._last: dict[str, float] = {}
        self._at: float | None = None
        #: "NAME/WINDOW" -> messages (or bytes, connections) per minute
        self.values: dict[str, float] = {}

    def update(self, info: dict[str, Any], now: float) -> dict[str, float]:
        previous, self._at = self._at, now
        if previous is None:
            # the first tick: the counters have run since the broker started
            previous = now - float(info.get("uptime", 0))
        if now > previous:
            elapsed = now - previous
            for name, key in LOAD_COUNTERS.items():
                rate = max(0.0, info.get(key, 0) - self._last.get(key, 0)) * 60.0 / elapsed
                for window, seconds in LOAD_WINDOWS.items():
                    weight = math.exp(-elapsed / seconds)
                    slot = f"{name}/{window}"
                    self.values[slot] = self.values.get(slot, rate) * weight + rate * (1 - weight)
        else:
            for name in LOAD_COUNTERS:
                for window in LOAD_WINDOWS:
                    self.values.setdefault(f"{name}/{window}", 0.0)
        self._last = {key: float(info.get(key, 0)) for key in LOAD_COUNTERS.values()}
        return self.values


class SysPublisher:
    """Publishes the broker's figures as retained ``$SYS/broker/...`` messages, through
    the public handle like any plugin (so the ACL decides who may read them)."""

    def __init__(self) -> None:
        self.load = LoadAverages()

    @hookimpl
    async def on_sys_info_tick(self, broker: BrokerHandle, info: dict[str, Any]) -> None:
        info = {**info, "version": f"midge {__version__}"}
        for topic, key in SYS_TOPICS.items():
            if key in info:
                await broker.publish(topic, str(info[key]), 0, True)
        for slot, value in self.load.update(info, time.monotonic()).items():
            await broker.publish(f"$SYS/broker/load/{slot}", f"{value:.2f}", 0, True)
