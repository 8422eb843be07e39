"""midge: an MQTT 5.0, 3.1.1 and 3.1 broker for Python, built on anyio.

The rule: everything a user or plugin author may rely on is re-exported here and listed
in ``__all__``; anything else is internal and may change.
"""

from __future__ import annotations

__version__ = "0.1.0"

from . import codec
from .broker import Broker
from .codec import ReasonCode
from .config import BrokerSettings, ConfigError, ListenerSettings, Settings
from .message import Message
from .stats import Stats

__all__ = [
    "Broker",
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
