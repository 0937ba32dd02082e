"""Subscriptions as a trie of topic levels: matching costs the topic's depth, not the number
of filters (amqtt tests every message against every subscription filter)."""

from __future__ import annotations

from collections.abc import Iterator


class _Node:
    __slots__ = ("children", "subscribers")

    def __init__(self) -> None:
        self.children: dict[str, _Node] = {}
        self.subscribers: dict[str, int] = {}  # client id -> granted QoS


MATCH_CACHE = 8192  # topics whose subscribers are remembered between subscription changes


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
        path: list[tuple[_Node, str]] = []
        node = self._root
        for level in topic_filter.split("/"):
            child = node.children.get(level)
            if child is None:
                return False
            path.append((node, level))
            node = child
        if node.subscribers.pop(client_id, None) is None:
            return False
        self._matches.clear()
        self._count -= 1
        for parent, level in reversed(path):
            child = parent.children[level]
            if child.subscribers or child.children:
                break
            del parent.children[level]
        return True

    def match(self, topic: str) -> dict[str, int]:
        """Client id -> highest granted QoS over all filters matching the topic (read only:
        the same dict answers again until the subscriptions change)."""
        result = self._matches.get(topic)
        if result is not None:
            return result
        result = {}
        levels = topic.split("/")
        # [MQTT-4.7.2-1] wildcards at the first level do not match topics starting with '$'.
        self._walk(self._root, levels, 0, result, levels[0].startswith("$"))
        if len(self._matches) >= MATCH_CACHE:
            self._matches.clear()
        self._matches[topic] = result
        return result

    def _walk(
        self, node: _Node, levels: list[str], depth: int, result: dict[str, int], dollar: bool
    ) -> None:
        children = node.children
        wild_ok = not (dollar and depth == 0)
        if wild_ok:
            hash_node = children.get("#")
            if hash_node is not None:  # '#' also matches the parent level itself
                _merge(result, hash_node.subscribers)
        if depth == len(levels):
            _merge(result, node.subscribers)
            return
        exact = children.get(levels[depth])
        if exact is not None:
            self._walk(exact, levels, depth + 1, result, dollar)
        if wild_ok:
            plus = children.get("+")
            if plus is not None:
                self._walk(plus, levels, depth + 1, result, dollar)

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


def filter_matches(topic_filter: str, topic: str) -> bool:
    """One filter against one topic (retained messages against a new subscription)."""
    if topic.startswith("$") and topic_filter[:1] in ("+", "#"):
        return False
    f_levels = topic_filter.split("/")
    t_levels = topic.split("/")
    for i, level in enumerate(f_levels):
        if level == "#":
            return True
        if i >= len(t_levels) or (level != "+" and level != t_levels[i]):
            return False
    return len(f_levels) == len(t_levels)
