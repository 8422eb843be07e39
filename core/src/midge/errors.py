"""Exceptions of the public plugin API: how a plugin refuses, rejects or drops.

The rule: a plugin says "no" by raising one of these (or returning a reason code where a
hook's documentation says so), never by returning a magic value. A "no" carries an MQTT 5
error code (0x80 and above) that the packet it ends up in may carry; anything else is
refused when the exception is made (``ValueError`` naming the code), so a rejection can
never turn into an acknowledgement of success.
"""

from __future__ import annotations

from .codec import ReasonCode

#: the error codes a PUBACK or PUBREC may carry (MQTT 5.0, 3.4.2.1 and 3.5.2.1), less
#: 0x91 Packet Identifier in use, which only the broker can know
PUBLISH_REJECTION_CODES = frozenset({
    ReasonCode.UNSPECIFIED_ERROR, ReasonCode.IMPLEMENTATION_SPECIFIC_ERROR,
    ReasonCode.NOT_AUTHORIZED, ReasonCode.TOPIC_NAME_INVALID, ReasonCode.QUOTA_EXCEEDED,
    ReasonCode.PAYLOAD_FORMAT_INVALID,
})


def _error_code(kind: str, reason_code: int) -> ReasonCode:
    """``reason_code`` as a ReasonCode, if it is an MQTT 5 error code (0x80..0xFF)."""
    if isinstance(reason_code, bool) or not isinstance(reason_code, int):
        raise TypeError(f"{kind} takes an integer reason code, not {reason_code!r}")
    if not 0x80 <= reason_code <= 0xFF:
        why = ("codes below 0x80 mean success to the client" if reason_code < 0x80
               else "a reason code is one byte")
        raise ValueError(
            f"{kind}({reason_code} = {reason_code:#04x}): a refusal needs an error code, "
            f"0x80..0xFF ({why})"
        )
    try:
        return ReasonCode(reason_code)
    except ValueError:
        raise ValueError(
            f"{kind}({reason_code:#04x}): not an MQTT 5 reason code"
        ) from None


class Refuse(Exception):
    """Raised by ``on_connect`` or ``on_auth_packet`` to refuse a connection.

    ``reason_code`` goes into CONNACK (or, for a re-authentication, DISCONNECT) for v5
    clients, mapped onto the nearest return code for v3 ones; ``reason`` becomes the v5
    Reason String unless the client asked for no problem information. A code outside
    0x80..0xFF, or one MQTT 5 does not define, raises ``ValueError`` here.
    """

    def __init__(self, reason_code: int = ReasonCode.NOT_AUTHORIZED, reason: str = "") -> None:
        code = _error_code("Refuse", reason_code)
        super().__init__(reason or code.name.lower())
        self.reason_code = code
        self.reason = reason


class RejectPublish(Exception):
    """Raised by ``on_publish`` to drop a message; the sender still gets its PUBACK/PUBREC
    carrying ``reason_code`` and ``reason`` as its Reason String (v5), or a plain
    acknowledgement (v3, which cannot say no).

    ``reason_code`` must be one a PUBACK may carry: 0x80 Unspecified error, 0x83
    Implementation specific error, 0x87 Not authorized (the default), 0x90 Topic Name
    invalid, 0x97 Quota exceeded or 0x99 Payload format invalid; anything else raises
    ``ValueError`` here.
    """

    def __init__(self, reason_code: int = ReasonCode.NOT_AUTHORIZED, reason: str = "") -> None:
        code = _error_code("RejectPublish", reason_code)
        if code not in PUBLISH_REJECTION_CODES:
            allowed = ", ".join(f"{c:#04x}" for c in sorted(PUBLISH_REJECTION_CODES))
            raise ValueError(
                f"RejectPublish({code:#04x}): {code.name} cannot go in a PUBACK/PUBREC; "
                f"allowed: {allowed}"
            )
        super().__init__(reason or code.name.lower())
        self.reason_code = code
        self.reason = reason


class DropPacket(Exception):
    """Raised by ``on_packet_read`` to ignore a received packet without disconnecting."""


class PluginConfigError(Exception):
    """A plugin's configuration table is invalid; ``key`` names the offending key."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(f"{key}: {message}" if key else message)
        self.key = key
        self.message = message
