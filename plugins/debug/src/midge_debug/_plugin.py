"""The ``debug`` plugin: one log line per packet read from or sent to a client.

The rule: it observes and never changes anything (``on_packet_read`` returns the packet
it was given), does no work when its log level is disabled, and validates its settings
strictly: ``show_payloads``, ``show_pings``, ``redact_credentials`` (booleans) and
``level`` (``"debug"`` or ``"info"``).
"""

from __future__ import annotations

import logging
from typing import Any

from midge import PluginConfigError, hookimpl
from midge.codec import PingReq, PingResp

from ._format import Options, describe

log = logging.getLogger("midge.plugins.debug")

FLAGS = {"show_payloads": False, "show_pings": False, "redact_credentials": True}
LEVELS = {"debug": logging.DEBUG, "info": logging.INFO}


class DebugPlugin:
    """Log every MQTT packet in and out, with the client id."""

    def __init__(self, config: dict[str, Any]) -> None:
        allowed = [*FLAGS, "level"]
        for key, value in config.items():
            if key not in allowed:
                raise PluginConfigError(key, f"unknown key; allowed: {', '.join(allowed)}")
            if key in FLAGS and not isinstance(value, bool):
                raise PluginConfigError(key, f"must be true or false, not {value!r}")
        level = config.get("level", "info")
        if level not in LEVELS:
            raise PluginConfigError("level", f"must be one of {', '.join(LEVELS)}, "
                                    f"not {level!r}")
        settings = {**FLAGS, **{k: v for k, v in config.items() if k in FLAGS}}
        self.level = LEVELS[level]
        self.show_pings: bool = settings["show_pings"]
        self.options = Options(show_payloads=settings["show_payloads"],
                               redact=settings["redact_credentials"])

    def _wanted(self, packet: Any) -> bool:
        if not log.isEnabledFor(self.level):
            return False
        return self.show_pings or not isinstance(packet, PingReq | PingResp)

    @hookimpl
    def on_packet_read(self, client: Any, packet: Any) -> Any:
        if self._wanted(packet):
            log.log(self.level, "%s <- %s", _who(client, packet),
                    describe(packet, self.options, _level(client, packet)))
        return packet

    @hookimpl
    def on_packet_sent(self, client: Any, packet: Any, data: bytes) -> None:
        if self._wanted(packet):
            log.log(self.level, "%s -> %s (%d bytes)", _who(client, packet),
                    describe(packet, self.options, _level(client, packet)), len(data))


def _level(client: Any, packet: Any) -> int:
    """The protocol level the packet travels at (a CONNECT names its own)."""
    level = getattr(packet, "protocol_level", 0) or getattr(client, "protocol_level", 0)
    return int(level)


def _who(client: Any, packet: Any) -> str:
    """The client id; before CONNECT is handled, the id it asks for, or its address."""
    client_id: str = client.client_id or getattr(packet, "client_id", "") or ""
    if not client_id:
        return f"<{client.remote}>"
    # quoted, as in the broker's own lines: an id may be a word like "client"
    return f'"{client_id}"' if client_id.isprintable() and '"' not in client_id \
        else repr(client_id)
