"""The subscription trie and the retained index against a reference matcher (hypothesis).

The reference is the specification's matching rule written as plainly as possible, level
by level; the trie must agree with it for every filter, topic, shared group, removal and
re-addition, and prune what it no longer needs.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from midge.codec import Subscription
from midge.topics import RetainedIndex, SubscriptionTrie, parse_share

LEVEL = st.sampled_from(["a", "b", "", "$x", "c"])


def matches(topic_filter: str, topic: str) -> bool:
    """The reference rule: ``+`` one level, ``#`` the rest (and the parent level), and a
    leading wildcard never matches a topic that starts with ``$``."""
    f = topic_filter.split("/")
    t = topic.split("/")
    if topic.startswith("$") and f[0] in ("+", "#"):
        return False
    for index, level in enumerate(f):
        if level == "#":
            return True
        if index >= len(t):
            return False
        if level != "+" and level != t[index]:
            return False
    return len(f) == len(t)


@st.composite
def filters(draw: st.DrawFn) -> str:
    levels = draw(st.lists(st.one_of(LEVEL, st.just("+")), min_size=1, max_size=4))
    if draw(st.booleans()):
        levels.append("#")
    joined = "/".join(levels)
    return joined or "+"  # an empty filter is not a filter


topics = st.lists(LEVEL, min_size=1, max_size=5).map("/".join)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["c1", "c2", "c3"]), filters()), max_size=12),
       st.lists(topics, min_size=1, max_size=8), st.data())
def test_trie_matches_the_reference(subs: list[tuple[str, str]], names: list[str],
                                    data: st.DataObject) -> None:
    trie = SubscriptionTrie()
    held: set[tuple[str, str]] = set()
    for cid, topic_filter in subs:
        trie.add(cid, Subscription(topic_filter, 1))
        held.add((cid, topic_filter))
    # remove some, then check against what is left
    for cid, topic_filter in data.draw(st.lists(st.sampled_from(sorted(held)), max_size=4)
                                       if held else st.just([])):
        if (cid, topic_filter) in held:
            assert trie.remove(cid, topic_filter)
            held.discard((cid, topic_filter))
    assert len(trie) == len(held)
    for topic in names:
        expected = {cid for cid, topic_filter in held if matches(topic_filter, topic)}
        assert {route.client_id for route in trie.match(topic)} == expected, topic
    for cid, topic_filter in list(held):
        assert trie.remove(cid, topic_filter)
    assert trie._root.children == {}  # pruned back to nothing


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["g1", "g2"]), st.sampled_from(["w1", "w2"]),
                          filters()), min_size=1, max_size=8),
       st.lists(topics, min_size=1, max_size=6))
def test_shared_groups_match_the_reference(subs: list[tuple[str, str, str]],
                                           names: list[str]) -> None:
    trie = SubscriptionTrie()
    for group, cid, topic_filter in subs:
        trie.add(cid, Subscription(f"$share/{group}/{topic_filter}", 0))
    assert trie.match("anything/at/all") == []  # shared members are never plain routes
    for topic in names:
        expected = {(group, topic_filter) for group, _cid, topic_filter in subs
                    if matches(topic_filter, topic)}
        got = {(group.name, group.topic_filter) for group in trie.match_shared(topic)}
        assert got == expected, topic


@settings(max_examples=300, deadline=None)
@given(st.lists(topics, min_size=1, max_size=10), filters(), st.data())
def test_retained_index_matches_the_reference(names: list[str], topic_filter: str,
                                              data: st.DataObject) -> None:
    index: RetainedIndex[str] = RetainedIndex()
    for name in names:
        index.set(name, name)
    gone = data.draw(st.lists(st.sampled_from(names), max_size=3))
    for name in gone:
        index.discard(name)
    live = set(names) - set(gone)
    expected = {name for name in live if matches(topic_filter, name)}
    assert set(index.match(topic_filter)) == expected
    for name in live:
        index.discard(name)
    assert index._root.children == {}


def test_the_reference_itself() -> None:
    # the reference must be able to say no, or the property tests prove nothing
    assert matches("a/+", "a/b") and not matches("a/+", "a/b/c")
    assert matches("a/#", "a") and matches("#", "a/b") and not matches("#", "$x/a")
    assert not matches("+/a", "$x/a") and matches("$x/+", "$x/a")
    assert parse_share("$share/g/a/+") == ("g", "a/+")
