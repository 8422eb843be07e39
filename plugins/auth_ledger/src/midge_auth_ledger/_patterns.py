"""Matching for ledger rules: ``*`` wildcard strings and MQTT topic filters.

The rule: both matchers are pure functions of strings. A ``*`` pattern matches the whole
string, ``*`` standing for any run of characters (possibly none) and every other
character for itself. An ACL filter *covers* a topic name, or a subscription filter, when
every topic that the latter can match is matched by the ACL filter; for topic names this
is ordinary MQTT matching (``+`` one level, ``#`` the rest, ``a/#`` matches ``a``, and a
leading wildcard never matches a ``$`` topic).
"""

from __future__ import annotations


def wildcard_match(pattern: str, value: str) -> bool:
    """True when ``value`` matches ``pattern`` in full (``*`` is the only wildcard).

    Linear scans only (no regular expression), so a long client id cannot make a
    pattern with many ``*`` backtrack: the text between stars is found leftmost-first,
    which is exact for patterns whose only wildcard is ``*``.
    """
    if "*" not in pattern:
        return pattern == value
    head, *middle, tail = pattern.split("*")
    if len(head) + len(tail) > len(value) or not (
            value.startswith(head) and value.endswith(tail)):
        return False
    position, end = len(head), len(value) - len(tail)
    for part in middle:
        found = value.find(part, position, end)
        if found < 0:
            return False
        position = found + len(part)
    return True


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
