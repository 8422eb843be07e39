"""midge: an MQTT 5.0, 3.1.1 and 3.1 broker for Python, built on anyio.

The rule: everything a user or plugin author may rely on is re-exported here and listed
in ``__all__``; anything else is internal and may change. Names are resolved lazily
(PEP 562) so that importing the sans-I/O parts (``midge.codec``, the model, or
``midge.engine``) does not load the network layer.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

from ._version import __version__

_EXPORTS = {
    "Broker": "midge.broker",
    "BrokerHandle": "midge.api",
    "Client": "midge.api",
    "DropPacket": "midge.errors",
    "PeerCertificate": "midge.api",
    "InlineSubscription": "midge.inline",
    "PluginConfigError": "midge.errors",
    "PluginError": "midge.hooks",
    "RejectPublish": "midge.errors",
    "Refuse": "midge.errors",
    "Route": "midge.topics",
    "hookimpl": "midge.hooks",
    "hookspec": "midge.hooks",
    "BrokerSettings": "midge.config",
    "ConfigError": "midge.config",
    "ListenerSettings": "midge.config",
    "Message": "midge.message",
    "ReasonCode": "midge.codec",
    "Settings": "midge.config",
    "Stats": "midge.stats",
}

__all__ = [
    "Broker",
    "BrokerHandle",
    "Client",
    "DropPacket",
    "PeerCertificate",
    "InlineSubscription",
    "PluginConfigError",
    "PluginError",
    "RejectPublish",
    "Refuse",
    "Route",
    "hookimpl",
    "hookspec",
    "BrokerSettings",
    "ConfigError",
    "ListenerSettings",
    "Message",
    "ReasonCode",
    "Settings",
    "Stats",
    "__version__",
    "codec",
]

if TYPE_CHECKING:
    from . import codec
    from .api import BrokerHandle, Client, PeerCertificate
    from .broker import Broker
    from .codec import ReasonCode
    from .config import BrokerSettings, ConfigError, ListenerSettings, Settings
    from .errors import DropPacket, PluginConfigError, Refuse, RejectPublish
    from .hooks import PluginError, hookimpl, hookspec
    from .inline import InlineSubscription
    from .message import Message
    from .stats import Stats
    from .topics import Route


def __getattr__(name: str) -> Any:
    if name == "codec":
        return import_module("midge.codec")
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'midge' has no attribute {name!r}")
    value = getattr(import_module(module), name)
    globals()[name] = value
    return value
