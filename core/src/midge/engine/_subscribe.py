"""The SUBSCRIBE and UNSUBSCRIBE flow: check, ask the ACL, apply, answer, send retained.

The rule: a SUBSCRIBE is answered with one reason code per filter, in order, and the
retained messages it asks for follow its SUBACK; a feature CONNACK said is unavailable is
a protocol error with its own reason code for v5, a SUBACK failure for v3.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import TYPE_CHECKING

from ..codec import (
    SUBACK_FAILURE,
    PingResp,
    Property,
    ProtocolViolation,
    ReasonCode,
    RemoteProtocolError,
    SubAck,
    Subscribe,
    Subscription,
    UnsubAck,
    Unsubscribe,
)
from ..logsafe import safe
from ..topics import has_wildcard, is_shared, parse_share

if TYPE_CHECKING:
    from ..codec import PingReq
    from ..config import BrokerSettings
    from ..hooks import Hooks
    from ..session import Session
    from ._access import Access
    from ._connection import Connection
    from ._router import Router

log = logging.getLogger("midge.broker")


class SubscribeFlow:
    """What a client's SUBSCRIBE, UNSUBSCRIBE and PINGREQ do."""

    def __init__(self, limits: BrokerSettings, hooks: Hooks, access: Access,
                 router: Router) -> None:
        self._limits = limits
        self._hooks = hooks
        self._access = access
        self._router = router

    def subscribe(self, conn: Connection, packet: Subscribe) -> None:
        session = conn.session
        assert session is not None
        v5 = conn.v5
        limits = self._limits
        packet, over = self._within_quota(conn, packet)
        for sub in packet.subscriptions:
            self._access.check_topic(sub.topic_filter, ReasonCode.TOPIC_FILTER_INVALID)
        if v5:
            self._check_available(packet)
        hooks = self._hooks
        if hooks.on_subscribe is not None:
            packet = hooks.on_subscribe(conn, packet)
        sids = packet.properties.get(Property.SUBSCRIPTION_IDENTIFIER)
        sid = sids[0] if sids else 0
        refused = limits.refused_subscription_code if v5 else SUBACK_FAILURE
        codes: list[int] = []
        granted: list[tuple[Subscription, bool]] = []
        subscriptions = self._router.subscriptions
        for sub in packet.subscriptions:
            topic_filter = acl_filter = sub.topic_filter
            try:
                share = parse_share(topic_filter)
            except ValueError as exc:
                conn.warn(log, "client %s: subscription refused: %s", conn.name,
                          safe(exc, 256))
                codes.append(ReasonCode.TOPIC_FILTER_INVALID if v5 else SUBACK_FAILURE)
                continue
            if not v5 and (
                (share is not None and not limits.shared_subscriptions)
                or (not limits.wildcard_subscriptions and has_wildcard(topic_filter))
            ):
                conn.warn(log, "client %s: subscription to %s refused: not available",
                          conn.name, safe(topic_filter))
                codes.append(SUBACK_FAILURE)
                continue
            if share is not None:
                if sub.no_local and v5:
                    raise ProtocolViolation(f"No Local on the shared subscription {topic_filter}")
                # the ACL judges the filter the messages come from
                acl_filter = share[1]
            if not self._access.allowed(conn, acl_filter, False):
                conn.warn(log, "client %s is not authorized to subscribe to %s",
                          conn.name, safe(topic_filter))
                codes.append(refused)
                continue
            if self._session_full(session, topic_filter):
                conn.warn(log, "client %s: subscription to %s refused: "
                          "max_subscriptions_per_client reached", conn.name,
                          safe(topic_filter))
                codes.append(ReasonCode.QUOTA_EXCEEDED if v5 else SUBACK_FAILURE)
                continue
            if sub.qos > limits.maximum_qos:  # granted at most the maximum QoS
                sub = dataclasses.replace(sub, qos=limits.maximum_qos)
            new = subscriptions.add(session, sub, sid)
            codes.append(sub.qos)
            if share is None:  # no retained messages on a shared subscribe (MQTT 5 4.8.2)
                granted.append((sub, new))
        if over:
            codes.extend([ReasonCode.QUOTA_EXCEEDED if v5 else SUBACK_FAILURE] * over)
        conn.durable()
        conn.send(SubAck(packet.packet_id, codes))
        if hooks.on_subscribed is not None:
            hooks.on_subscribed(conn, packet, codes)
        router = self._router
        for sub, new in granted:
            if sub.retain_handling == 2 or (sub.retain_handling == 1 and not new):
                continue
            # the server must send every matching retained message [MQTT-3.3.1-9]
            # ([MQTT-3.3.1-6] in 3.1.1): they are not cut at the session queue's limit
            for message in router.retained_for(sub.topic_filter):
                router.deliver(session.client_id, message, min(message.qos, sub.qos), True,
                               (sid,) if sid else (), bounded=False)
                if hooks.on_retain_published is not None:
                    hooks.on_retain_published(conn, message)

    def _within_quota(self, conn: Connection, packet: Subscribe) -> tuple[Subscribe, int]:
        """The SUBSCRIBE cut to ``max_filters_per_subscribe`` filters, and how many were
        cut: those are answered 0x97 unexamined, so one packet of 60,000 filters costs
        no ACL votes and no trie work."""
        limit = self._limits.max_filters_per_subscribe
        over = len(packet.subscriptions) - limit
        if over <= 0:
            return packet, 0
        conn.warn(log, "client %s: SUBSCRIBE with %d filters; the %d beyond "
                  "max_filters_per_subscribe are refused", conn.name,
                  len(packet.subscriptions), over)
        return dataclasses.replace(packet, subscriptions=packet.subscriptions[:limit]), over

    def _session_full(self, session: Session, topic_filter: str) -> bool:
        """A new subscription would exceed ``max_subscriptions_per_client`` (replacing
        one of the session's own never does)."""
        cap = self._limits.max_subscriptions_per_client
        return bool(cap) and topic_filter not in session.subscriptions \
            and len(session.subscriptions) >= cap

    def _check_available(self, packet: Subscribe) -> None:
        """Features the CONNACK said are unavailable: a Protocol Error with their own
        reason code (MQTT 5 3.2.2.3.13-15, section 4.13)."""
        limits = self._limits
        if (not limits.subscription_identifiers
                and Property.SUBSCRIPTION_IDENTIFIER in packet.properties):
            raise RemoteProtocolError(ReasonCode.SUBSCRIPTION_IDENTIFIERS_NOT_SUPPORTED,
                                      "subscription identifiers are not available")
        for sub in packet.subscriptions:
            topic_filter = sub.topic_filter
            if not limits.shared_subscriptions and is_shared(topic_filter):
                raise RemoteProtocolError(
                    ReasonCode.SHARED_SUBSCRIPTIONS_NOT_SUPPORTED,
                    f"shared subscription {topic_filter} but they are not available",
                )
            if not limits.wildcard_subscriptions and has_wildcard(topic_filter):
                raise RemoteProtocolError(
                    ReasonCode.WILDCARD_SUBSCRIPTIONS_NOT_SUPPORTED,
                    f"wildcard subscription {topic_filter} but they are not available",
                )

    def unsubscribe(self, conn: Connection, packet: Unsubscribe) -> None:
        session = conn.session
        assert session is not None
        hooks = self._hooks
        if hooks.on_unsubscribe is not None:
            packet = hooks.on_unsubscribe(conn, packet)
        codes: list[int] = []
        subscriptions = self._router.subscriptions
        for topic_filter in packet.topic_filters:
            existed = subscriptions.remove(session, topic_filter)
            codes.append(ReasonCode.SUCCESS if existed else ReasonCode.NO_SUBSCRIPTION_EXISTED)
        conn.durable()
        conn.send(UnsubAck(packet.packet_id, codes if conn.v5 else []))
        if hooks.on_unsubscribed is not None:
            hooks.on_unsubscribed(conn, packet)

    def pingreq(self, conn: Connection, packet: PingReq) -> None:
        conn.send(PingResp())
