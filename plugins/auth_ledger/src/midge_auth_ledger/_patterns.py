"""Matching for ledger rules: ``*`` wildcard strings and MQTT topic filters.

The rule: both matchers are pure functions of strings. A ``*`` pattern matches the whole
string, ``*`` standing for any run of characters (possibly none) and every other
character for itself. An ACL filter *covers* a topic name, or a subscription filter, when
every topic that the latter can match is matched by the ACL filter; for topic names this
is ordinary MQTT matching (``+`` one level, ``#`` the rest, ``a/#`` matches ``a``, and a
leading wildcard never matches a ``$`` topic).
"""

from __future__ import annotations

import re
from functools import lru_cache


@lru_cache(maxsize=1024)
def _compile(pattern: str) -> re.Pattern[str]:
    return re.compile(".*".join(re.escape(part) for part in pattern.split("*")), re.DOTALL)


def wildcard_match(pattern: str, value: str) -> bool:
    """True when ``value`` matches ``pattern`` in full (``*`` is the only wildcard)."""
    if "*" not in pattern:
        return pattern == value
    return _compile(pattern).fullmatch(value) is not None


def covers(acl_filter: str, topic: str) -> bool:
    """True when ``acl_filter`` matches every topic that ``topic`` (a name or a filter) can."""
    acl = acl_filter.split("/")
    levels = topic.split("/")
    dollar = topic.startswith("$")
    for i, want in enumerate(acl):
        if want == "#":
            return not (i == 0 and dollar)
        if i >= len(levels):
            return False
        have = levels[i]
        if have == "#":
            return False
        if want == "+":
            if i == 0 and dollar:
                return False
            continue
        if want != have:
            return False
    return len(acl) == len(levels)
