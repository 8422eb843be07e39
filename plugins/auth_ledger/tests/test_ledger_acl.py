"""ACL semantics: the user's acl, then the first rule with a covering filter, then the
default; deny wins inside one filter table."""

from __future__ import annotations

from typing import Any

import pytest
from ledger_fakes import acl, can
from midge_auth_ledger import LedgerPlugin

LEVELS = {"d/#": 0, "r/#": 1, "w/#": 2, "rw/#": 3}


def plugin(**table: Any) -> LedgerPlugin:
    return LedgerPlugin(table)


@pytest.mark.parametrize(("topic", "expected"), [("d/x", "0"), ("r/x", "1"), ("w/x", "2"),
                                                 ("rw/x", "3"), ("other", "0")])
def test_access_levels_in_rules(topic: str, expected: str) -> None:
    p = plugin(acl=[{"filters": LEVELS}])
    assert can(p, topic) == expected


@pytest.mark.parametrize(("topic", "expected"), [("d/x", "0"), ("r/x", "1"), ("w/x", "2"),
                                                 ("rw/x", "3")])
def test_access_levels_in_user_acl(topic: str, expected: str) -> None:
    p = plugin(users={"alice": {"acl": LEVELS}})
    assert can(p, topic, username="alice") == expected
    assert can(p, topic, username="bob") == "0"
    assert can(p, topic) == "0"


def test_access_names_are_accepted() -> None:
    p = plugin(acl=[{"filters": {"d/#": "deny", "r/#": "read", "w/#": "write",
                                 "rw/#": "readwrite"}}])
    assert [can(p, t) for t in ("d/1", "r/1", "w/1", "rw/1")] == ["0", "1", "2", "3"]


def test_user_acl_is_checked_before_the_rules() -> None:
    p = plugin(users={"alice": {"acl": {"a/#": 1}}}, acl=[{"filters": {"a/#": 3, "b/#": 3}}])
    assert can(p, "a/x", username="alice") == "1"     # the user's table decides
    assert can(p, "b/x", username="alice") == "3"     # not covered there: the rules
    assert can(p, "a/x", username="bob") == "3"


def test_user_acl_deny_overrides_rules() -> None:
    p = plugin(users={"alice": {"acl": {"a/private": 0}}}, acl=[{"filters": {"a/#": 3}}])
    assert can(p, "a/private", username="alice") == "0"
    assert can(p, "a/public", username="alice") == "3"


def test_first_rule_with_a_covering_filter_decides() -> None:
    p = plugin(acl=[
        {"username": "alice", "filters": {"x/#": 1}},
        {"username": "alice", "filters": {"y/#": 3}},
        {"filters": {"x/#": 3, "y/#": 1}},
    ])
    assert can(p, "x/1", username="alice") == "1"
    assert can(p, "y/1", username="alice") == "3"
    assert can(p, "x/1", username="bob") == "3"
    assert can(p, "y/1", username="bob") == "1"


def test_a_covering_filter_without_the_access_denies_rather_than_falling_through() -> None:
    p = plugin(acl=[{"filters": {"t/#": 1}}, {"filters": {"t/#": 3}}])
    assert acl(p, "t/1", write=True) is False


def test_deny_wins_inside_a_table_whatever_the_order() -> None:
    for filters in ({"a/#": 3, "a/secret": 0}, {"a/secret": 0, "a/#": 3}):
        p = plugin(acl=[{"filters": filters}])
        assert can(p, "a/secret") == "0"
        assert can(p, "a/open") == "3"


def test_grants_combine_inside_a_table() -> None:
    p = plugin(acl=[{"filters": {"a/#": 1, "a/+/in": 2}}])
    assert can(p, "a/dev/in") == "3"
    assert can(p, "a/dev/out") == "1"


def test_rule_without_filters_allows_everything() -> None:
    p = plugin(acl=[{"remote": "127.0.0.1"}, {"filters": {"x": 1}}])
    assert can(p, "anything/at/all", remote="127.0.0.1:999") == "3"
    assert can(p, "$SYS/broker", remote="127.0.0.1:999") == "3"
    assert can(p, "anything/at/all", remote="10.0.0.1:999") == "0"
    assert can(p, "x", remote="10.0.0.1:999") == "1"


@pytest.mark.parametrize(("default", "expected"), [("deny", "0"), ("allow", "3")])
def test_acl_default(default: str, expected: str) -> None:
    p = plugin(acl=[{"filters": {"known/#": 1}}], acl_default=default)
    assert can(p, "unknown/topic") == expected
    assert can(p, "known/topic") == "1"


def test_acl_default_is_deny() -> None:
    p = plugin(users={"alice": {"password": "pw"}})
    assert can(p, "a", username="alice") == "0"


def test_rule_matching_on_client_username_and_remote() -> None:
    p = plugin(acl=[{"client": "dev-*", "username": "sensor", "remote": "10.*",
                     "filters": {"#": 3}}])
    ok: dict[str, Any] = {"client_id": "dev-1", "username": "sensor", "remote": "10.0.0.1:5"}
    assert can(p, "t", **ok) == "3"
    assert can(p, "t", **{**ok, "client_id": "x"}) == "0"
    assert can(p, "t", **{**ok, "username": None}) == "0"
    assert can(p, "t", **{**ok, "remote": "192.0.2.1:5"}) == "0"


def test_anonymous_rule() -> None:
    p = plugin(acl=[{"username": "", "filters": {"public/#": 1}}])
    assert can(p, "public/news") == "1"
    assert can(p, "public/news", username="bob") == "0"


def test_subscriptions_must_be_covered() -> None:
    p = plugin(acl=[{"filters": {"a/#": 1, "b/+": 1, "c/secret": 0, "c/#": 1}}])
    assert acl(p, "a/#", write=False) is True
    assert acl(p, "a/+/x", write=False) is True
    assert acl(p, "b/+", write=False) is True
    assert acl(p, "b/#", write=False) is False     # would reach b/x/y
    assert acl(p, "#", write=False) is False
    assert acl(p, "c/#", write=False) is True      # allowed; c/secret refused per message
    assert acl(p, "c/secret", write=False) is False


def test_leading_wildcards_do_not_reach_dollar_topics() -> None:
    p = plugin(acl=[{"filters": {"#": 3}}])
    assert can(p, "a/b") == "3"
    assert can(p, "$SYS/broker/uptime") == "0"
    assert acl(p, "$SYS/#", write=False) is False
    q = plugin(acl=[{"filters": {"#": 3, "$SYS/#": 1}}])
    assert can(q, "$SYS/broker/uptime") == "1"
    assert acl(q, "$SYS/#", write=False) is True


def test_parent_topic_is_covered_by_multi_level_wildcard() -> None:
    p = plugin(acl=[{"filters": {"home/#": 3}}])
    assert can(p, "home") == "3"
    assert can(p, "homes") == "0"
