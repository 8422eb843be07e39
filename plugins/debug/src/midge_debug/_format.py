"""One-line descriptions of MQTT packets for the debug log.

The rule: a description never contains a credential unless asked to (``redact=False``),
never a payload unless asked to (``show_payloads=True``, and then at most
``PAYLOAD_LIMIT`` bytes), and never a raw control character: strings and bytes are shown
with ``repr`` so a client cannot forge log lines.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

from midge.codec import PACKET_TYPES, Connect, Property, Subscription, Will

PAYLOAD_LIMIT = 64
REDACTED = "<redacted>"
_SECRET_PROPERTIES = frozenset({Property.AUTHENTICATION_DATA})


@dataclass(frozen=True, slots=True)
class Options:
    show_payloads: bool = False
    redact: bool = True


def describe(packet: Any, options: Options) -> str:
    """``TYPE field=value ...`` for a packet dataclass from ``midge.codec``."""
    kind = PACKET_TYPES.get(type(packet))
    parts = [kind.name if kind is not None else type(packet).__name__]
    for spec in fields(packet):
        value = getattr(packet, spec.name)
        if spec.name == "properties":
            if value:
                parts.append(f"properties={{{_properties(value, options)}}}")
        elif spec.name == "payload":
            parts.append(f"payload={payload(value, options.show_payloads)}")
        elif spec.name == "password":
            if value is not None:
                parts.append(f"password={REDACTED if options.redact else repr(value)}")
        elif spec.name == "will":
            if value is not None:
                parts.append(f"will=({_will(value, options)})")
        elif spec.name == "protocol_level" and isinstance(packet, Connect):
            parts.append(f"protocol={packet.protocol_name}/{value}")
        elif spec.name == "subscriptions":
            parts.append("subscriptions=[" + ", ".join(_sub(s) for s in value) + "]")
        else:
            parts.append(f"{spec.name}={value!r}")
    return " ".join(parts)


def payload(data: bytes, show: bool) -> str:
    if not show:
        return f"<{len(data)} bytes>"
    if len(data) <= PAYLOAD_LIMIT:
        return repr(bytes(data))
    return f"{bytes(data[:PAYLOAD_LIMIT])!r}... <{len(data)} bytes>"


def _will(will: Will, options: Options) -> str:
    text = (f"topic={will.topic!r} qos={will.qos} retain={will.retain} "
            f"payload={payload(will.payload, options.show_payloads)}")
    if will.properties:
        text += f" properties={{{_properties(will.properties, options)}}}"
    return text


def _sub(sub: Subscription) -> str:
    extra = "".join(f" {flag}" for flag, on in (("no_local", sub.no_local),
                    ("retain_as_published", sub.retain_as_published)) if on)
    if sub.retain_handling:
        extra += f" retain_handling={sub.retain_handling}"
    return f"{sub.topic_filter!r} qos={sub.qos}{extra}"


def _properties(props: dict[int, Any], options: Options) -> str:
    out = []
    for ident, value in props.items():
        try:
            name = Property(ident).name.lower()
        except ValueError:
            name = f"0x{ident:02x}"
        shown = REDACTED if options.redact and ident in _SECRET_PROPERTIES else repr(value)
        out.append(f"{name}={shown}")
    return ", ".join(out)
