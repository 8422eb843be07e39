"""Built-in plugins: per-listener anonymous access and the $SYS publisher.

The rule: core features that fit a hook are plugins on the same hooks and the same
public handle as third-party ones, registered after the configured plugins so that those
decide first.
"""

from __future__ import annotations

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


#: $SYS topic -> key of the broker's sys info
SYS_TOPICS = {
    "$SYS/broker/version": "version",
    "$SYS/broker/uptime": "uptime",
    "$SYS/broker/clients/connected": "clients_connected",
    "$SYS/broker/clients/total": "sessions",
    "$SYS/broker/connections/total": "connections_total",
    "$SYS/broker/messages/received": "messages_received",
    "$SYS/broker/messages/sent": "messages_sent",
    "$SYS/broker/messages/dropped": "messages_dropped",
    "$SYS/broker/subscriptions/count": "subscriptions",
    "$SYS/broker/retained messages/count": "retained_messages",
    "$SYS/broker/connections/refused/flapping": "connections_refused_flapping",
    "$SYS/broker/publishers/held": "publishers_held",
    "$SYS/broker/publishers/rate limited": "publishers_rate_limited",
    "$SYS/broker/subscribers/stuck": "subscribers_stuck",
}


class SysPublisher:
    """Publishes the broker's counters as retained ``$SYS/broker/...`` messages."""

    @hookimpl
    async def on_sys_info_tick(self, broker: BrokerHandle, info: dict[str, Any]) -> None:
        info = {**info, "version": f"midge {__version__}"}
        for topic, key in SYS_TOPICS.items():
            if key in info:
                await broker.publish(topic, str(info[key]), 0, True)
