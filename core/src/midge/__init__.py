"""midge: an MQTT 5.0, 3.1.1 and 3.1 broker for Python, built on anyio.

The rule: everything a user or plugin author may rely on is re-exported here and listed
in ``__all__``; anything else is internal and may change. Names are resolved lazily
(PEP 562) so that importing the sans-I/O parts (``midge.codec``, ``midge.topics``,
``midge.session``) does not load the network layer.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS = {
    "Broker": "midge.broker",
    "Client": "midge.connection",
    "DropPacket": "midge.errors",
    "InlineSubscription": "midge.inline",
    "PluginConfigError": "midge.errors",
    "PluginError": "midge.plugins",
    "RejectPublish": "midge.errors",
    "Refuse": "midge.errors",
    "Route": "midge.topics",
    "hookimpl": "midge.hookspecs",
    "hookspec": "midge.hookspecs",
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
    "Client",
    "DropPacket",
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
    from .broker import Broker
    from .codec import ReasonCode
    from .config import BrokerSettings, ConfigError, ListenerSettings, Settings
    from .connection import Connection as Client
    from .errors import DropPacket, PluginConfigError, Refuse, RejectPublish
    from .hookspecs import hookimpl, hookspec
    from .inline import InlineSubscription
    from .message import Message
    from .plugins import PluginError
    from .stats import Stats
    from .topics import Route


def __getattr__(name: str) -> Any:
    if name == "codec":
        return import_module("midge.codec")
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'midge' has no attribute {name!r}")
    value = getattr(import_module(module), "Connection" if name == "Client" else name)
    globals()[name] = value
    return value
