"""Who may do what: the ACL vote per client and topic, cached, and the topic limits.

The rule: every permission question the engine asks goes through ``Access``; a decision
is cached per connection until a reload, so steady-state delivery costs a dict lookup.
(The PUBLISH flow reads a cached write decision itself: a topic has one only after it
passed the topic limits and the ``$`` rule, which are checked before the vote.)
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..codec import ReasonCode, RemoteProtocolError
from ..topics import limit_error

if TYPE_CHECKING:
    from ..config import BrokerSettings
    from ..hooks import Hooks
    from ._connection import Connection

#: per-client ACL decisions remembered before the cache is cleared
ACL_CACHE_LIMIT = 1024


class Access:
    """The ACL vote and the configured topic limits."""

    __slots__ = ("_hooks", "_max_length", "_max_levels")

    def __init__(self, hooks: Hooks, limits: BrokerSettings) -> None:
        self._hooks = hooks
        self._max_length = limits.max_topic_length
        self._max_levels = limits.max_topic_levels

    def allowed(self, conn: Connection, topic: str, write: bool) -> bool:
        """The ACL vote for ``conn`` and ``topic``; no decision denies."""
        acl = self._hooks.on_acl_check
        if acl is None:
            return False
        cache = conn.acl_cache
        key = (topic, write)
        decision = cache.get(key)
        if decision is None:
            decision = acl(conn, topic, write) is True
            if len(cache) >= ACL_CACHE_LIMIT:
                cache.clear()
            cache[key] = decision
        return decision

    def will_refusal(self, conn: Connection, topic: str) -> str | None:
        """Why ``conn`` may not have a will on ``topic`` (None: it may): a will is a
        PUBLISH made later on the client's behalf, so it passes the same checks, the
        ``$`` rule and the ACL write vote, at CONNECT and again when it is published."""
        why = limit_error(topic, self._max_length, self._max_levels)
        if why is not None:
            return f"will topic: {why}"
        if topic.startswith("$"):
            return "a will may not be published to a $ topic"
        if not self.allowed(conn, topic, True):
            return "not authorized to publish its will topic"
        return None

    def check_topic(self, topic: str, reason: ReasonCode) -> None:
        """Refuse a topic name or filter beyond the configured length or depth."""
        why = limit_error(topic, self._max_length, self._max_levels)
        if why is not None:
            raise RemoteProtocolError(reason, why)
