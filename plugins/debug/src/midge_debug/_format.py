"""One-line descriptions of MQTT packets for the debug log.

The rule: a description never contains a credential unless asked to (``redact=False``),
never a payload unless asked to (``show_payloads=True``, and then at most
``PAYLOAD_LIMIT`` bytes), and never a raw control character: strings and bytes are shown
with ``repr`` so a client cannot forge log lines. A packet reads as its client's
protocol level has it: reason codes one way (``0x87``), v3 CONNACK and SUBACK with return
codes, no field a v3 packet cannot carry, no packet id on a QoS 0 PUBLISH.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

from midge.codec import (
    PACKET_TYPES,
    PROTOCOL_5,
    ConnAck,
    Connect,
    Property,
    Publish,
    SubAck,
    Subscription,
    Will,
)

PAYLOAD_LIMIT = 64
REDACTED = "<redacted>"
_SECRET_PROPERTIES = frozenset({Property.AUTHENTICATION_DATA})


@dataclass(frozen=True, slots=True)
class Options:
    show_payloads: bool = False
    redact: bool = True


def describe(packet: Any, options: Options, level: int = PROTOCOL_5) -> str:
    """``TYPE field=value ...`` for a packet dataclass from ``midge.codec``, as protocol
    ``level`` (3, 4 or 5; 0 before CONNECT is read, shown as 5) carries it."""
    kind = PACKET_TYPES.get(type(packet))
    parts = [kind.name if kind is not None else type(packet).__name__]
    v5 = level in (0, PROTOCOL_5)
    for spec in fields(packet):
        value = getattr(packet, spec.name)
        if spec.name == "packet_id" and isinstance(packet, Publish) and not packet.qos:
            continue  # a QoS 0 PUBLISH has no packet id
        if spec.name == "reason_code":
            if v5:
                parts.append(f"reason_code={_code(value)}")
            elif isinstance(packet, ConnAck):
                parts.append(f"return_code={int(value)}")
            # other v3 packets carry no reason code
        elif spec.name == "reason_codes":
            if v5:
                parts.append("reason_codes=[" + ", ".join(_code(c) for c in value) + "]")
            elif isinstance(packet, SubAck):
                parts.append("return_codes=[" + ", ".join(f"0x{int(c):02X}" for c in value)
                             + "]")
        elif spec.name == "properties":
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


def _code(value: int) -> str:
    return f"0x{int(value):02X}"


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
