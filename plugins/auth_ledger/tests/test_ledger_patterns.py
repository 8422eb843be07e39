"""``*`` patterns and ACL filter coverage of topic names and subscription filters."""

from __future__ import annotations

import pytest
from midge_auth_ledger._patterns import covers, wildcard_match


@pytest.mark.parametrize(("pattern", "value", "expected"), [
    ("alice", "alice", True),
    ("alice", "alice2", False),
    ("alice", "Alice", False),
    ("*", "", True),
    ("*", "anything", True),
    ("sensor-*", "sensor-", True),
    ("sensor-*", "sensor-12", True),
    ("sensor-*", "sensor", False),
    ("*-east", "dc-east", True),
    ("*-east", "dc-west", False),
    ("a*b*c", "abc", True),
    ("a*b*c", "a-x-b-y-c", True),
    ("a*b*c", "a-x-c", False),
    ("10.0.*", "10.0.3.4", True),
    ("10.0.*", "10.1.3.4", False),
    ("a.c", "abc", False),          # only * is special
    ("a?c", "abc", False),
    ("[ab]", "a", False),
    ("", "", True),
    ("", "x", False),
    ("*", "line\nbreak", True),
    ("ab*ba", "aba", False),         # head and tail may not overlap
    ("ab*ba", "abba", True),
    ("*a*a*", "a", False),
    ("*a*a*", "aa", True),
    ("**", "", True),
    ("a**b", "ab", True),
])
def test_wildcard_match(pattern: str, value: str, expected: bool) -> None:
    assert wildcard_match(pattern, value) is expected


@pytest.mark.parametrize(("acl_filter", "topic", "expected"), [
    ("a/b", "a/b", True),
    ("a/b", "a/c", False),
    ("a/b", "a/b/c", False),
    ("a/+", "a/b", True),
    ("a/+", "a", False),
    ("a/+", "a/b/c", False),
    ("a/+", "a/", True),            # an empty level is a level
    ("a/#", "a", True),             # a/# matches its parent
    ("a/#", "a/b/c", True),
    ("a/#", "ab", False),
    ("#", "a/b", True),
    ("+/+", "a/b", True),
    ("+", "/", False),
    ("+/+", "/", True),
    ("#", "$SYS/x", False),         # leading wildcards never match $-topics
    ("+/x", "$SYS/x", False),
    ("$SYS/#", "$SYS/broker/load", True),
    ("$SYS/+", "$SYS/x", True),
    ("a/+/c", "a/b/c", True),
    ("a/+/c", "a/b/d", False),
])
def test_covers_topic_names(acl_filter: str, topic: str, expected: bool) -> None:
    assert covers(acl_filter, topic) is expected


@pytest.mark.parametrize(("acl_filter", "subscription", "expected"), [
    ("a/#", "a/#", True),
    ("a/#", "a/+", True),
    ("a/#", "a/+/b", True),
    ("#", "#", True),
    ("#", "+/b", True),
    ("a/+", "a/+", True),
    ("a/+", "a/#", False),          # a/# reaches a/b/c, which a/+ does not
    ("a/b", "a/+", False),
    ("a/+/#", "a/#", False),        # a/# also matches a
    ("+/b", "#", False),
    ("#", "$SYS/#", False),
    ("$SYS/#", "$SYS/#", True),
    ("a/+/c", "a/+/c", True),
    ("a/+/c", "a/+/+", False),
])
def test_covers_subscription_filters(acl_filter: str, subscription: str,
                                     expected: bool) -> None:
    assert covers(acl_filter, subscription) is expected


def test_wildcard_match_is_fast_on_long_values() -> None:
    value = "a" * 65535
    assert wildcard_match("*a*a*a*a*a*a*b", value) is False
    assert wildcard_match("*a*a*a*a*a*a*", value) is True
