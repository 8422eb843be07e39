"""Topic matching: the subscription trie with a match cache, and the retained index.

The rule: this module knows topic syntax and nothing about sessions or I/O. A lookup by
topic name returns the merged routes (one per client, highest QoS), cached until the
next subscription change, so steady-state routing is one dict lookup.
"""

from __future__ import annotations

from typing import Generic, NamedTuple, TypeVar

from .codec import Subscription

T = TypeVar("T")

#: A cache holding more topics than this is cleared rather than grown.
MATCH_CACHE_LIMIT = 65_536
SHARE_PREFIX = "$share/"


def is_shared(topic_filter: str) -> bool:
    """A ``$share/...`` filter (well formed or not)."""
    return topic_filter.startswith(SHARE_PREFIX)


def has_wildcard(topic_filter: str) -> bool:
    """A filter with ``+`` or ``#`` (in the filter of a shared subscription too)."""
    return "+" in topic_filter or "#" in topic_filter


def limit_error(topic: str, max_length: int, max_levels: int) -> str | None:
    """Why a topic name or filter exceeds the configured length or depth (None: it
    does not)."""
    if len(topic) > max_length and len(topic.encode()) > max_length:
        return f"topic longer than {max_length}"
    if topic.count("/") >= max_levels:
        return f"topic has more than {max_levels} levels"
    return None


def parse_share(topic_filter: str) -> tuple[str, str] | None:
    """``(group, filter)`` of a ``$share/{group}/{filter}`` subscription, None for a plain
    filter. ValueError when the share name or the filter is missing or holds a wildcard."""
    if not topic_filter.startswith(SHARE_PREFIX):
        return None
    group, sep, inner = topic_filter[len(SHARE_PREFIX):].partition("/")
    if not sep or not inner:
        raise ValueError(f"{topic_filter!r} has no topic filter after the share name")
    if not group or "+" in group or "#" in group:
        raise ValueError(f"{topic_filter!r} has an invalid share name {group!r}")
    return group, inner


class Route(NamedTuple):
    """Where one message goes for one client, merged over its matching subscriptions."""

    client_id: str
    #: highest granted QoS over all matching subscriptions
    qos: int
    #: the same over the subscriptions without No Local; -1 when all have No Local
    qos_if_own: int
    #: any matching subscription asked for Retain As Published
    retain_as_published: bool
    #: subscription identifiers of the matching subscriptions, in subscription order
    subscription_ids: tuple[int, ...]


class SharedGroup:
    """The members of one ``$share/{name}/{filter}``; the broker picks one per message."""

    __slots__ = ("_order", "cursor", "members", "name", "topic_filter")

    def __init__(self, name: str, topic_filter: str) -> None:
        self.name = name
        self.topic_filter = topic_filter
        #: client id -> (subscription, subscription identifier or 0), in joining order
        self.members: dict[str, tuple[Subscription, int]] = {}
        #: where the next round-robin choice starts, an index into ``order()``
        self.cursor = 0
        self._order: list[str] | None = None

    def __repr__(self) -> str:
        return f"SharedGroup({self.name!r}, {self.topic_filter!r}, {list(self.members)})"

    def order(self) -> list[str]:
        """The member client ids, in joining order."""
        if self._order is None:
            self._order = list(self.members)
        return self._order

    def route(self, client_id: str) -> Route:
        """The route of one member (No Local does not apply to shared subscriptions)."""
        sub, sid = self.members[client_id]
        return Route(client_id, sub.qos, sub.qos, sub.retain_as_published,
                     (sid,) if sid else ())


class _Node:
    __slots__ = ("children", "shared", "subs")

    def __init__(self) -> None:
        self.children: dict[str, _Node] = {}
        # client id -> (subscription, subscription identifier or 0)
        self.subs: dict[str, tuple[Subscription, int]] = {}
        # share name -> group
        self.shared: dict[str, SharedGroup] = {}


class SubscriptionTrie:
    """Topic filters of all sessions, matched against topic names."""

    __slots__ = ("_cache", "_count", "_groups", "_root", "shared_count")

    def __init__(self) -> None:
        self._root = _Node()
        self._cache: dict[str, list[Route]] = {}
        #: topic -> the shared groups it matches, for topics in ``_cache`` that match any
        self._groups: dict[str, list[SharedGroup]] = {}
        self._count = 0
        #: shared subscriptions held (0: routing skips the shared lookup)
        self.shared_count = 0

    def __len__(self) -> int:
        return self._count

    def add(self, client_id: str, sub: Subscription, subscription_id: int = 0) -> bool:
        """Add or replace ``client_id``'s subscription; True when it is new.

        A ``$share/{group}/{filter}`` subscription joins that group (ValueError when the
        share name is invalid, see ``parse_share``).
        """
        share = parse_share(sub.topic_filter)
        node = self._root
        for level in (share[1] if share else sub.topic_filter).split("/"):
            child = node.children.get(level)
            if child is None:
                child = node.children[level] = _Node()
            node = child
        if share is None:
            new = client_id not in node.subs
            node.subs[client_id] = (sub, subscription_id)
        else:
            group = node.shared.get(share[0])
            if group is None:
                group = node.shared[share[0]] = SharedGroup(share[0], share[1])
            new = client_id not in group.members
            group.members[client_id] = (sub, subscription_id)
            group._order = None
            self.shared_count += new
        self._count += new
        self._clear_cache()
        return new

    def remove(self, client_id: str, topic_filter: str) -> bool:
        """Remove a subscription; False when there was none."""
        try:
            share = parse_share(topic_filter)
        except ValueError:
            return False
        if share is not None:
            return self._remove_shared(client_id, share[0], share[1])
        path = [self._root]
        levels = topic_filter.split("/")
        for level in levels:
            child = path[-1].children.get(level)
            if child is None:
                return False
            path.append(child)
        if path[-1].subs.pop(client_id, None) is None:
            return False
        self._count -= 1
        self._clear_cache()
        _prune(path, levels)
        return True

    def _remove_shared(self, client_id: str, name: str, topic_filter: str) -> bool:
        path = [self._root]
        levels = topic_filter.split("/")
        for level in levels:
            child = path[-1].children.get(level)
            if child is None:
                return False
            path.append(child)
        group = path[-1].shared.get(name)
        if group is None or group.members.pop(client_id, None) is None:
            return False
        group._order = None
        if not group.members:
            del path[-1].shared[name]
        self._count -= 1
        self.shared_count -= 1
        self._clear_cache()
        _prune(path, levels)
        return True

    def _clear_cache(self) -> None:
        self._cache.clear()
        self._groups.clear()

    def match(self, topic: str) -> list[Route]:
        """The routes for a topic name, one per client."""
        routes = self._cache.get(topic)
        if routes is not None:
            return routes
        found: list[_Node] = []
        _walk(self._root, topic.split("/"), 0, found, topic.startswith("$"))
        routes = _merge([node.subs for node in found if node.subs])
        if len(self._cache) >= MATCH_CACHE_LIMIT:
            self._clear_cache()
        self._cache[topic] = routes
        if self.shared_count:
            groups = [group for node in found for group in node.shared.values()]
            if groups:
                self._groups[topic] = groups
        return routes

    def match_shared(self, topic: str) -> list[SharedGroup]:
        """The shared subscription groups whose filter matches a topic name."""
        if not self.shared_count:
            return []
        if topic not in self._cache:
            self.match(topic)
        return self._groups.get(topic, [])


def _prune(path: list[_Node], levels: list[str]) -> None:
    """Remove the empty nodes at the end of ``path`` so the trie does not grow with churn."""
    for depth in range(len(levels), 0, -1):
        node = path[depth]
        if node.subs or node.children or node.shared:
            break
        del path[depth - 1].children[levels[depth - 1]]


def _walk(
    node: _Node,
    levels: list[str],
    index: int,
    found: list[_Node],
    dollar: bool,
) -> None:
    children = node.children
    if index == len(levels):
        if node.subs or node.shared:
            found.append(node)
        hash_node = children.get("#")
        if hash_node is not None and (hash_node.subs or hash_node.shared):
            found.append(hash_node)
        return
    # a leading wildcard never matches a $-topic
    if not (dollar and index == 0):
        hash_node = children.get("#")
        if hash_node is not None and (hash_node.subs or hash_node.shared):
            found.append(hash_node)
        plus = children.get("+")
        if plus is not None:
            _walk(plus, levels, index + 1, found, dollar)
    child = children.get(levels[index])
    if child is not None:
        _walk(child, levels, index + 1, found, dollar)


def _merge(found: list[dict[str, tuple[Subscription, int]]]) -> list[Route]:
    if len(found) == 1:
        return [
            Route(cid, sub.qos, -1 if sub.no_local else sub.qos, sub.retain_as_published,
                  (sid,) if sid else ())
            for cid, (sub, sid) in found[0].items()
        ]
    merged: dict[str, list[object]] = {}
    for subs in found:
        for cid, (sub, sid) in subs.items():
            entry = merged.get(cid)
            own = -1 if sub.no_local else sub.qos
            if entry is None:
                merged[cid] = [sub.qos, own, sub.retain_as_published, [sid] if sid else []]
            else:
                entry[0] = max(entry[0], sub.qos)  # type: ignore[call-overload]
                entry[1] = max(entry[1], own)  # type: ignore[call-overload]
                entry[2] = entry[2] or sub.retain_as_published
                if sid:
                    entry[3].append(sid)  # type: ignore[attr-defined]
    return [
        Route(cid, e[0], e[1], e[2], tuple(e[3]))  # type: ignore[arg-type]
        for cid, e in merged.items()
    ]


class _RNode(Generic[T]):
    __slots__ = ("children", "value")

    def __init__(self) -> None:
        self.children: dict[str, _RNode[T]] = {}
        self.value: T | None = None


class RetainedIndex(Generic[T]):
    """Retained values by topic name, searchable by topic filter."""

    __slots__ = ("_by_topic", "_root")

    def __init__(self) -> None:
        self._root: _RNode[T] = _RNode()
        self._by_topic: dict[str, T] = {}

    def __len__(self) -> int:
        return len(self._by_topic)

    def __contains__(self, topic: object) -> bool:
        return topic in self._by_topic

    def get(self, topic: str) -> T | None:
        return self._by_topic.get(topic)

    def set(self, topic: str, value: T) -> None:
        node = self._root
        for level in topic.split("/"):
            child = node.children.get(level)
            if child is None:
                child = node.children[level] = _RNode()
            node = child
        node.value = value
        self._by_topic[topic] = value

    def discard(self, topic: str) -> T | None:
        old = self._by_topic.pop(topic, None)
        if old is None:
            return None
        levels = topic.split("/")
        path = [self._root]
        for level in levels:
            path.append(path[-1].children[level])
        path[-1].value = None
        for depth in range(len(levels), 0, -1):
            node = path[depth]
            if node.value is not None or node.children:
                break
            del path[depth - 1].children[levels[depth - 1]]
        return old

    def match(self, topic_filter: str) -> list[T]:
        """Values whose topic matches ``topic_filter``."""
        out: list[T] = []
        self._walk(self._root, topic_filter.split("/"), 0, out)
        return out

    def _walk(self, node: _RNode[T], levels: list[str], index: int, out: list[T]) -> None:
        if index == len(levels):
            if node.value is not None:
                out.append(node.value)
            return
        level = levels[index]
        if level == "#":
            if node.value is not None and index > 0:
                out.append(node.value)  # 'a/#' matches 'a' itself
            for name, child in node.children.items():
                if not (index == 0 and name.startswith("$")):
                    _collect(child, out)
        elif level == "+":
            for name, child in node.children.items():
                if not (index == 0 and name.startswith("$")):
                    self._walk(child, levels, index + 1, out)
        else:
            exact = node.children.get(level)
            if exact is not None:
                self._walk(exact, levels, index + 1, out)


def _collect(node: _RNode[T], out: list[T]) -> None:
    stack = [node]
    while stack:
        current = stack.pop()
        if current.value is not None:
            out.append(current.value)
        stack.extend(current.children.values())
