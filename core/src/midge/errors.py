"""Exceptions of the public plugin API: how a plugin refuses, rejects or drops.

The rule: a plugin says "no" by raising one of these (or returning a reason code where a
hook's documentation says so), never by returning a magic value.
"""

from __future__ import annotations

from .codec import ReasonCode


class Refuse(Exception):
    """Raised by ``on_connect`` to refuse a connection with a CONNACK reason code."""

    def __init__(self, reason_code: int = ReasonCode.NOT_AUTHORIZED, reason: str = "") -> None:
        super().__init__(reason or ReasonCode(reason_code).name.lower())
        self.reason_code = ReasonCode(reason_code)
        self.reason = reason


class RejectPublish(Exception):
    """Raised by ``on_publish`` to drop a message; the sender still gets its PUBACK/PUBREC
    carrying ``reason_code`` (v5) or a plain acknowledgement (v3)."""

    def __init__(self, reason_code: int = ReasonCode.NOT_AUTHORIZED, reason: str = "") -> None:
        super().__init__(reason or ReasonCode(reason_code).name.lower())
        self.reason_code = ReasonCode(reason_code)
        self.reason = reason


class DropPacket(Exception):
    """Raised by ``on_packet_read`` to ignore a received packet without disconnecting."""


class PluginConfigError(Exception):
    """A plugin's configuration table is invalid; ``key`` names the offending key."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(f"{key}: {message}" if key else message)
        self.key = key
        self.message = message
