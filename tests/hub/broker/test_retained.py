"""Retained messages without sockets: the topic tree's wildcard walk and the quotas."""

import gc

import pytest

from hub.broker.retained import (
    FREEZE_STEP,
    QUOTA_BYTES,
    QUOTA_HUB_BYTES,
    QUOTA_MESSAGES,
    RetainedStore,
)
from hub.broker.session import Message
from hub.broker.topictree import RetainedTree
from hub.topics import filter_matches

TOPICS = [
    "sport",
    "sport/tennis",
    "sport/tennis/p1",
    "sport/golf/p1",
    "/finance",
    "$SYS/x",
    "a/b/c",
    "a//c",
    "sport/",
]
FILTERS = [
    "#",
    "sport/#",
    "sport/+",
    "sport/+/p1",
    "+/+",
    "+",
    "$SYS/#",
    "+/x",
    "a/+/c",
    "sport/tennis/p1",
    "nothing/#",
    "+/+/+/+",
]


@pytest.mark.parametrize("topic_filter", FILTERS)
def test_tree_walk_agrees_with_filter_matches(topic_filter: str) -> None:
    """The tree's wildcard walk finds exactly the topics the one-filter match accepts."""
    tree: RetainedTree[str] = RetainedTree()
    for topic in TOPICS:
        tree.set(topic, topic)
    expected = sorted(t for t in TOPICS if filter_matches(topic_filter, t))
    assert sorted(tree.matching(topic_filter)) == expected


def test_tree_pop_prunes_and_survives_changes_during_a_walk() -> None:
    """Values removed while a walk is under way are skipped; added ones never break it."""
    tree: RetainedTree[str] = RetainedTree()
    for i in range(100):
        tree.set(f"r/{i % 10}/{i}", str(i))
    walk = tree.matching("r/#")
    first = next(walk)
    for i in range(100):
        if str(i) != first:
            tree.pop(f"r/{i % 10}/{i}")
        tree.set(f"n/{i}", "new")
    assert list(walk) == []
    assert len(tree) == 101 and tree.get(f"r/{int(first) % 10}/{first}") == first
    assert tree.pop("r/0/nothing") is None


def test_deep_topics_walk_without_recursion() -> None:
    """A 200-level topic is stored, found through '#' and '+' filters and removed."""
    tree: RetainedTree[str] = RetainedTree()
    deep = "/".join(["l"] * 200)
    tree.set(deep, "deep")
    assert list(tree.matching("#")) == ["deep"]
    assert list(tree.matching("/".join(["+"] * 200))) == ["deep"]
    assert tree.pop(deep) == "deep" and len(tree) == 0


def m(topic: str, size: int) -> Message:
    return Message(topic, b"x" * size, 1, True)


def test_store_charges_each_client_and_the_hub() -> None:
    """A client's retained count and bytes, and the hub's total, refuse what exceeds them;
    replacing one's own message is not counted twice; an empty payload frees it."""
    store = RetainedStore(per_client=2, per_client_bytes=100, total_bytes=150)
    assert store.store(m("a/1", 40), "a") is None
    assert store.store(m("a/1", 50), "a") is None  # replaced: still one message
    assert store.usage("a") == (1, 53)
    assert store.store(m("a/2", 10), "a") is None
    assert store.store(m("a/3", 1), "a") == QUOTA_MESSAGES
    assert store.store(m("b/1", 98), "b") == QUOTA_BYTES
    assert store.store(m("b/1", 85), "b") == QUOTA_HUB_BYTES  # 66 + 88 bytes: over 150
    assert store.store(m("b/1", 80), "b") is None  # 66 + 83: fits
    assert store.get("a/1") is not None and store.get("a/3") is None


def test_empty_payload_clears_and_the_hub_is_never_refused() -> None:
    """An empty payload removes the message and its charge; the hub's own messages count
    towards the total but are never refused."""
    store = RetainedStore(per_client=5, per_client_bytes=100, total_bytes=100)
    assert store.store(m("a/1", 50), "a") is None
    assert store.store(m("hub/x", 200), None) is None
    assert store.bytes == 53 + 205
    assert store.store(m("a/2", 10), "a") == QUOTA_HUB_BYTES
    assert store.store(Message("a/1", b"", 0, True), "b") is None
    assert store.usage("a") == (0, 0) and store.get("a/1") is None
    assert sorted(store.topics()) == ["hub/x"]
    assert list(store.matching("a/1")) == [] and list(store.matching("hub/+"))


def test_growth_freezes_retained_messages_out_of_the_collector() -> None:
    """Growing by FREEZE_STEP messages moves the objects alive to the collector's permanent
    generation (full passes no longer walk them); replacing messages does not, and the frozen
    messages they replace are still freed."""
    gc.unfreeze()
    store = RetainedStore(per_client=10**6, per_client_bytes=10**9, total_bytes=10**9)
    try:
        for i in range(FREEZE_STEP - 1):
            store.store(m(f"g/{i}", 1), "a")
        assert gc.get_freeze_count() == 0
        store.store(m("g/last", 1), "a")
        frozen = gc.get_freeze_count()
        assert frozen > FREEZE_STEP
        for i in range(FREEZE_STEP):
            store.store(m(f"g/{i}", 2), "a")  # churn: replaced, not grown
        assert gc.get_freeze_count() < frozen  # no new freeze; the replaced ones were freed
    finally:
        gc.unfreeze()
