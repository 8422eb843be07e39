"""The routed application message and its cached wire forms.

The rule: a Message is immutable once routed; what differs per subscriber (QoS, RETAIN
flag, packet id, protocol level, subscription identifiers) is applied at framing time,
and every framing that can be shared across subscribers is encoded once and cached.
"""

from __future__ import annotations

import math
import time
from typing import Any

from .codec import (
    PROTOCOL_5,
    Properties,
    Property,
    Publish,
    frame_publish,
    publish_header,
    publish_pieces,
)

#: Properties that belong to one hop (or to the will, not its message) and are never
#: forwarded as they arrived.
_HOP_PROPERTIES = (
    Property.TOPIC_ALIAS, Property.SUBSCRIPTION_IDENTIFIER, Property.WILL_DELAY_INTERVAL
)

#: read for every message (``Property.X`` is slow to look up on Python 3.11)
_EXPIRY = int(Property.MESSAGE_EXPIRY_INTERVAL)


class Message:
    """An application message: what was published, by whom, when."""

    __slots__ = (
        "_wire", "created", "expires_at", "node", "origin", "payload", "properties", "qos",
        "retain", "topic",
    )

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
        #: the cluster node it was published on ("": this one), set by ``broker.deliver``
        self.node = ""
        self.created = time.monotonic() if created is None else created
        #: monotonic deadline from the Message Expiry Interval (None: never expires;
        #: an interval of 0 is taken as none, as Mosquitto does)
        interval = self.properties.get(_EXPIRY)
        self.expires_at: float | None = self.created + interval if interval else None
        self._wire: dict[Any, Any] = {}

    def __repr__(self) -> str:
        return (
            f"Message(topic={self.topic!r}, payload={self.payload[:32]!r}, qos={self.qos}, "
            f"retain={self.retain}, origin={self.origin!r})"
        )

    def expired(self, now: float | None = None) -> bool:
        """True once the Message Expiry Interval has passed (never without one)."""
        expires_at = self.expires_at
        if expires_at is None:
            return False
        return expires_at <= (time.monotonic() if now is None else now)

    def remaining(self, now: float | None = None) -> int:
        """The Message Expiry Interval to forward: the published one less the time waited."""
        assert self.expires_at is not None
        left = self.expires_at - (time.monotonic() if now is None else now)
        return max(0, math.ceil(left))

    def publish(
        self,
        level: int,
        qos: int,
        retain: bool,
        packet_id: int = 0,
        subscription_ids: tuple[int, ...] = (),
        dup: bool = False,
        alias: int = 0,
        alias_known: bool = False,
        now: float | None = None,
    ) -> Publish:
        """This message as a PUBLISH packet for one subscriber (the uncached path).

        ``alias`` adds a Topic Alias; with ``alias_known`` the client already has it and
        the topic name is left empty. ``now`` is the time the forwarded Message Expiry
        Interval counts from (default: the monotonic clock).
        """
        props = self.properties
        if level == PROTOCOL_5 and (self.expires_at is not None or subscription_ids or alias):
            props = dict(props)
            if self.expires_at is not None:
                props[Property.MESSAGE_EXPIRY_INTERVAL] = self.remaining(now)
            if subscription_ids:
                props[Property.SUBSCRIPTION_IDENTIFIER] = list(subscription_ids)
            if alias:
                props[Property.TOPIC_ALIAS] = alias
        topic = "" if alias and alias_known else self.topic
        return Publish(topic, self.payload, qos, retain, dup, packet_id, props)

    def frame(
        self,
        level: int,
        qos: int,
        retain: bool,
        packet_id: int = 0,
        subscription_ids: tuple[int, ...] = (),
        dup: bool = False,
        alias: int = 0,
        alias_known: bool = False,
        now: float | None = None,
    ) -> bytes:
        """The PUBLISH bytes of this message for one subscriber."""
        v5 = level == PROTOCOL_5
        if dup or (v5 and (subscription_ids or alias)):
            packet = self.publish(level, qos, retain, packet_id, subscription_ids, dup, alias,
                                  alias_known, now)
            byte0, topic, tail = publish_header(packet, level)
            return frame_publish(byte0, topic, packet_id, tail)
        key: tuple[Any, ...] = (v5, qos, retain)
        if v5 and self.expires_at is not None:
            # the forwarded interval changes as the message waits: one cache entry per
            # value, and only a few kept (a fan-out happens within one second)
            key = (v5, qos, retain, self.remaining(now))
            if key not in self._wire and len(self._wire) >= 8:
                self._wire.clear()
        if not qos:
            frame = self._wire.get(key)
            if frame is None:
                byte0, topic, tail = self._pieces(key, level)
                frame = self._wire[key] = frame_publish(byte0, topic, 0, tail)
            return frame  # type: ignore[no-any-return]
        pieces = self._wire.get(key)
        if pieces is None:
            pieces = self._wire[key] = self._pieces(key, level)
        return frame_publish(pieces[0], pieces[1], packet_id, pieces[2])

    def _pieces(self, key: tuple[Any, ...], level: int) -> tuple[int, bytes, bytes]:
        props = self.properties
        if len(key) > 3:
            props = dict(props)
            props[Property.MESSAGE_EXPIRY_INTERVAL] = key[3]
        return publish_pieces(self.topic, self.payload, key[1], key[2], False, props, level)
