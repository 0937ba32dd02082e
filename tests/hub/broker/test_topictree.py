"""Subscription matching in the topic trie."""

import pytest

from hub.broker.topictree import TopicTree
from hub.topics import filter_matches

CASES = [
    ("sport/tennis/player1", "sport/tennis/player1", True),
    ("sport/#", "sport", True),
    ("sport/#", "sport/tennis/player1", True),
    ("#", "a/b/c", True),
    ("sport/+", "sport", False),
    ("sport/+", "sport/", True),
    ("+/+", "/finance", True),
    ("+", "/finance", False),
    ("sport/+/player1", "sport/tennis/player1", True),
    ("sport/+/player1", "sport/tennis/player2", False),
    ("#", "$SYS/x", False),
    ("+/x", "$SYS/x", False),
    ("$SYS/#", "$SYS/x", True),
    ("a/b", "a/b/c", False),
]


@pytest.mark.parametrize(("topic_filter", "topic", "expected"), CASES)
def test_trie_matches_like_the_spec(topic_filter: str, topic: str, expected: bool) -> None:
    """The trie agrees with the spec's examples (section 4.7), '$' topics included."""
    tree = TopicTree()
    tree.add(topic_filter, "c", 1)
    assert (tree.match(topic) == {"c": 1}) is expected
    assert filter_matches(topic_filter, topic) is expected


def test_overlapping_subscriptions_deliver_once_at_the_highest_qos() -> None:
    """A client matching through several filters gets one entry with the highest QoS."""
    tree = TopicTree()
    tree.add("d/+/t/temp", "c1", 0)
    tree.add("d/#", "c1", 2)
    tree.add("d/dev/t/temp", "c2", 1)
    assert tree.match("d/dev/t/temp") == {"c1": 2, "c2": 1}


def test_remove_prunes_and_counts() -> None:
    """Removing subscriptions updates the count and leaves no match behind."""
    tree = TopicTree()
    assert tree.add("a/b", "c1", 0) and tree.add("a/+", "c1", 0)
    assert not tree.add("a/b", "c1", 1)  # replaced, not added
    assert len(tree) == 2
    assert tree.remove("a/b", "c1") and not tree.remove("a/b", "c1")
    assert tree.match("a/b") == {"c1": 0}
    assert tree.remove("a/+", "c1")
    assert len(tree) == 0 and tree.match("a/b") == {}


def test_remembered_matches_follow_subscription_changes() -> None:
    """A topic's subscribers are remembered between publishes and forgotten as soon as a
    subscription is added or removed."""
    tree = TopicTree()
    tree.add("d/+/t/+", "browser", 0)
    assert tree.match("d/a/t/temp") == {"browser": 0}
    assert tree.match("d/a/t/temp") is tree.match("d/a/t/temp")  # remembered
    tree.add("d/a/#", "logger", 1)
    assert tree.match("d/a/t/temp") == {"browser": 0, "logger": 1}
    tree.remove("d/+/t/+", "browser")
    assert tree.match("d/a/t/temp") == {"logger": 1}
    tree.add("d/a/#", "logger", 2)  # a new QoS for the same filter
    assert tree.match("d/a/t/temp") == {"logger": 2}
