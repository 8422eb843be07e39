"""The routed application message and its cached wire forms.

The rule: a Message is immutable once routed; what differs per subscriber (QoS, RETAIN
flag, packet id, protocol level, subscription identifiers) is applied at framing time,
and every framing that can be shared across subscribers is encoded once and cached.
"""

from __future__ import annotations

import time
from typing import Any

from .codec import PROTOCOL_5, Properties, Property, Publish, frame_publish, publish_header

#: Properties that belong to one hop (or to the will, not its message) and are never
#: forwarded as they arrived.
_HOP_PROPERTIES = (
    Property.TOPIC_ALIAS, Property.SUBSCRIPTION_IDENTIFIER, Property.WILL_DELAY_INTERVAL
)


class Message:
    """An application message: what was published, by whom, when."""

    __slots__ = ("_wire", "created", "origin", "payload", "properties", "qos", "retain", "topic")

    def __init__(
        self,
        topic: str,
        payload: bytes,
        qos: int = 0,
        retain: bool = False,
        properties: Properties | None = None,
        origin: str = "",
        created: float | None = None,
    ) -> None:
        self.topic = topic
        self.payload = payload
        self.qos = qos
        self.retain = retain
        if properties:
            properties = {k: v for k, v in properties.items() if k not in _HOP_PROPERTIES}
        self.properties: Properties = properties or {}
        #: client id of the publisher ("" for the broker itself)
        self.origin = origin
        self.created = time.monotonic() if created is None else created
        self._wire: dict[Any, Any] = {}

    def __repr__(self) -> str:
        return (
            f"Message(topic={self.topic!r}, payload={self.payload[:32]!r}, qos={self.qos}, "
            f"retain={self.retain}, origin={self.origin!r})"
        )

    def frame(
        self,
        level: int,
        qos: int,
        retain: bool,
        packet_id: int = 0,
        subscription_ids: tuple[int, ...] = (),
        dup: bool = False,
    ) -> bytes:
        """The PUBLISH bytes of this message for one subscriber."""
        v5 = level == PROTOCOL_5
        if dup or (v5 and subscription_ids):
            props = dict(self.properties)
            if v5 and subscription_ids:
                props[Property.SUBSCRIPTION_IDENTIFIER] = list(subscription_ids)
            packet = Publish(self.topic, self.payload, qos, retain, dup, packet_id, props)
            byte0, topic, tail = publish_header(packet, level)
            return frame_publish(byte0, topic, packet_id, tail)
        key = (v5, qos, retain)
        if not qos:
            frame = self._wire.get(key)
            if frame is None:
                frame = self._wire[key] = self._frame0(key, level)
            return frame  # type: ignore[no-any-return]
        pieces = self._wire.get(key)
        if pieces is None:
            pieces = self._wire[key] = self._pieces(key, level)
        return frame_publish(pieces[0], pieces[1], packet_id, pieces[2])

    def _pieces(self, key: tuple[bool, int, bool], level: int) -> tuple[int, bytes, bytes]:
        _, qos, retain = key
        packet = Publish(self.topic, self.payload, qos, retain, False, 0, self.properties)
        return publish_header(packet, level)

    def _frame0(self, key: tuple[bool, int, bool], level: int) -> bytes:
        byte0, topic, tail = self._pieces(key, level)
        return frame_publish(byte0, topic, 0, tail)
