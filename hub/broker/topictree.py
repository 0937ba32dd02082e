"""Subscriptions and retained messages as tries of topic levels: matching costs the topic's
depth, not the number of filters or retained messages (amqtt tests every message against every
subscription filter, and every retained message against a new filter).

Every walk is iterative: names and filters are at most codec.MAX_LEVELS deep, but nothing here
recurses on client input.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, Generic, TypeVar


class _Node:
    __slots__ = ("children", "subscribers")

    def __init__(self) -> None:
        self.children: dict[str, _Node] = {}
        self.subscribers: dict[str, int] = {}  # client id -> granted QoS


MATCH_CACHE = 8192  # topics whose subscribers are remembered between subscription changes
CACHED_TOPIC_MAX = 128  # longer topics are matched every time (the cache stays small)


class TopicTree:
    """Matches topics against filters; the answer for a topic is remembered until the
    subscriptions change (a fleet publishes the same topics over and over)."""

    def __init__(self) -> None:
        self._root = _Node()
        self._count = 0
        self._matches: dict[str, dict[str, int]] = {}

    def __len__(self) -> int:
        return self._count

    def add(self, topic_filter: str, client_id: str, qos: int) -> bool:
        """Adds or replaces a subscription; True when it is new."""
        node = self._root
        for level in topic_filter.split("/"):
            child = node.children.get(level)
            if child is None:
                child = node.children[level] = _Node()
            node = child
        is_new = client_id not in node.subscribers
        node.subscribers[client_id] = qos
        self._matches.clear()
        self._count += is_new
        return is_new

    def remove(self, topic_filter: str, client_id: str) -> bool:
        """Removes a subscription, pruning empty branches; True when it existed."""
        path = _path_to(self._root, topic_filter)
        if path is None or _end(path).subscribers.pop(client_id, None) is None:
            return False
        self._matches.clear()
        self._count -= 1
        _prune(path, lambda node: bool(node.subscribers))
        return True

    def match(self, topic: str) -> dict[str, int]:
        """Client id -> highest granted QoS over all filters matching the topic (read only:
        the same dict answers again until the subscriptions change)."""
        cached = self._matches.get(topic)
        if cached is not None:
            return cached
        result: dict[str, int] = {}
        levels = topic.split("/")
        count = len(levels)
        # [MQTT-4.7.2-1] wildcards at the first level do not match topics starting with '$'.
        dollar = levels[0].startswith("$")
        stack = [(self._root, 0)]
        while stack:
            node, depth = stack.pop()
            children = node.children
            wild_ok = not (dollar and depth == 0)
            if wild_ok:
                hash_node = children.get("#")
                if hash_node is not None:  # '#' also matches the parent level itself
                    _merge(result, hash_node.subscribers)
            if depth == count:
                _merge(result, node.subscribers)
                continue
            exact = children.get(levels[depth])
            if exact is not None:
                stack.append((exact, depth + 1))
            if wild_ok:
                plus = children.get("+")
                if plus is not None:
                    stack.append((plus, depth + 1))
        if len(topic) <= CACHED_TOPIC_MAX:
            if len(self._matches) >= MATCH_CACHE:
                self._matches.clear()
            self._matches[topic] = result
        return result

    def filters_of(self, client_id: str) -> Iterator[str]:
        """Every filter a client holds (slow path: used when a session ends)."""
        stack: list[tuple[_Node, list[str]]] = [(self._root, [])]
        while stack:
            node, path = stack.pop()
            if client_id in node.subscribers:
                yield "/".join(path)
            for level, child in node.children.items():
                stack.append((child, [*path, level]))


def _merge(result: dict[str, int], subscribers: dict[str, int]) -> None:
    for client_id, qos in subscribers.items():
        if result.get(client_id, -1) < qos:
            result[client_id] = qos


T = TypeVar("T")


class _Leaf(Generic[T]):
    __slots__ = ("children", "value")

    def __init__(self) -> None:
        self.children: dict[str, _Leaf[T]] = {}
        self.value: T | None = None


# The two tries' nodes, for the walks they share.
_N = TypeVar("_N", _Node, "_Leaf[Any]")


def _path_to(root: _N, topic: str) -> list[tuple[_N, str]] | None:
    """(parent, level) from the root down to the node of a topic or filter; None if the trie
    has no such node."""
    path = []
    node = root
    for level in topic.split("/"):
        child = node.children.get(level)
        if child is None:
            return None
        path.append((node, level))
        node = child
    return path


def _end(path: list[tuple[_N, str]]) -> _N:
    parent, level = path[-1]
    return parent.children[level]


def _prune(path: list[tuple[_N, str]], in_use: Callable[[_N], bool]) -> None:
    """Removes the nodes along the path, deepest first, while they are empty: not in use and
    without children."""
    for parent, level in reversed(path):
        child = parent.children[level]
        if in_use(child) or child.children:
            break
        del parent.children[level]


class RetainedTree(Generic[T]):
    """Retained messages (any value) keyed by topic level; ``matching`` walks a filter's
    wildcards through it lazily, so a subscription to '#' over many messages can be delivered
    in slices."""

    def __init__(self) -> None:
        self._root: _Leaf[T] = _Leaf()
        self._count = 0

    def __len__(self) -> int:
        return self._count

    def get(self, topic: str) -> T | None:
        node = self._root
        for level in topic.split("/"):
            child = node.children.get(level)
            if child is None:
                return None
            node = child
        return node.value

    def set(self, topic: str, value: T) -> T | None:
        """Stores value on the topic; returns the value it replaces."""
        node = self._root
        for level in topic.split("/"):
            child = node.children.get(level)
            if child is None:
                child = node.children[level] = _Leaf()
            node = child
        old, node.value = node.value, value
        self._count += old is None
        return old

    def pop(self, topic: str) -> T | None:
        """Removes the topic's value, pruning empty branches; returns it."""
        path = _path_to(self._root, topic)
        if path is None:
            return None
        node = _end(path)
        old, node.value = node.value, None
        if old is None:
            return None
        self._count -= 1
        _prune(path, lambda leaf: leaf.value is not None)
        return old

    def matching(self, topic_filter: str) -> Iterator[T]:
        """The values of every topic the filter matches ('$' topics only for a filter that
        names its first level). Safe while the tree changes: a branch is listed when the walk
        reaches it, and values removed by then are skipped."""
        levels = topic_filter.split("/")
        count = len(levels)
        stack: list[tuple[_Leaf[T], int]] = [(self._root, 0)]
        while stack:
            node, depth = stack.pop()
            if depth == count:
                if node.value is not None:
                    yield node.value
                continue
            level = levels[depth]
            if level == "#":
                # Everything below, and the parent level itself ('sport/#' matches 'sport').
                if depth and node.value is not None:
                    yield node.value
                below = [c for name, c in node.children.items() if depth or name[:1] != "$"]
                while below:
                    leaf = below.pop()
                    if leaf.value is not None:
                        yield leaf.value
                    below.extend(leaf.children.values())
                continue
            if level == "+":
                for name, child in list(node.children.items()):
                    if depth or name[:1] != "$":
                        stack.append((child, depth + 1))
                continue
            exact = node.children.get(level)
            if exact is not None:
                stack.append((exact, depth + 1))
