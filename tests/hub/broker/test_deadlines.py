"""The keepalive timer wheel without sockets or a clock: moving deadlines, never early, bounded."""

from __future__ import annotations

import random

import pytest

from hub.broker.deadlines import DeadlineWheel


class Item:
    """A connection as the wheel sees it: a deadline that moves when it talks."""

    def __init__(self, name: str, deadline: float | None) -> None:
        self.name = name
        self.deadline = deadline
        self.asked = 0

    def __repr__(self) -> str:
        return self.name


def wheel(tick: float = 0.25) -> DeadlineWheel[Item]:
    def deadline_of(item: Item) -> float | None:
        item.asked += 1
        return item.deadline

    return DeadlineWheel(tick, deadline_of)


def test_an_item_is_due_once_its_deadline_has_passed_and_not_before() -> None:
    """A deadline of 1.6 s is not reported at 1.5 s, and is at the first sweep at or after it."""
    w = wheel()
    a = Item("a", 1.6)
    w.add(a)
    assert w.due(0.0) == [] and w.due(1.5) == []
    assert w.due(1.75) == [a]
    assert a not in w and len(w) == 0
    assert w.due(10.0) == []  # reported once


def test_a_deadline_that_moved_on_is_filed_again_not_reported() -> None:
    """A client that talked since it was filed is looked at when its old slot comes due and
    filed again at its new deadline."""
    w = wheel()
    a = Item("a", 1.5)
    w.add(a)
    a.deadline = 3.0  # a packet arrived: the wheel is not told
    assert w.due(1.5) == []
    assert a in w
    assert w.due(2.75) == []
    assert w.due(3.0) == [a]


def test_a_sweep_looks_only_at_the_items_that_came_due() -> None:
    """Of 10,000 idle connections with deadlines spread over 90 s, a sweep at 1 s asks for
    the deadlines of those filed up to 1 s only: no scan of every connection."""
    w = wheel()
    rng = random.Random(7)
    items = [Item(f"c{i}", 1.0 + rng.random() * 89.0) for i in range(10_000)]
    for item in items:
        w.add(item)
    for item in items:
        item.asked = 0
    early = [i for i in items if i.deadline is not None and i.deadline <= 1.25]
    assert early and set(w.due(1.25)) == set(early)
    assert sum(i.asked for i in items) == len(early)
    assert len(w) == len(items) - len(early)


def test_every_item_is_reported_within_one_tick_of_its_deadline() -> None:
    """Random deadlines swept every tick: each is reported at the first sweep at or after its
    deadline, never earlier, never later."""
    tick = 0.25
    w = wheel(tick)
    rng = random.Random(3)
    items = [Item(f"c{i}", rng.uniform(0.0, 30.0)) for i in range(2_000)]
    for item in items:
        w.add(item)
    reported: dict[str, float] = {}
    now = 0.0
    while now <= 31.0:
        for item in w.due(now):
            reported[item.name] = now
        now += tick
    assert len(reported) == len(items)
    for item in items:
        assert item.deadline is not None
        at = reported[item.name]
        assert item.deadline <= at < item.deadline + tick + 1e-9, (item, at)


def test_discard_and_none_forget_an_item() -> None:
    """A closed connection is discarded at once, one with no keepalive is never filed, and one
    whose deadline becomes None (closed meanwhile) is dropped when its slot comes due: the
    wheel holds only live items."""
    w = wheel()
    a, b, c = Item("a", 1.0), Item("b", None), Item("c", 2.0)
    for item in (a, b, c):
        w.add(item)
    assert len(w) == 2 and b not in w
    w.discard(a)
    w.discard(a)  # twice is harmless
    c.deadline = None
    assert w.due(5.0) == []
    assert len(w) == 0
    assert w._slots == {} and w._slot_of == {}  # nothing left behind


def test_adding_again_moves_an_item_and_a_past_deadline_goes_out_next_sweep() -> None:
    """Filing an item twice keeps one entry; a deadline already past when filed (a stalled
    loop) is reported by the next sweep."""
    w = wheel()
    a = Item("a", 5.0)
    w.add(a)
    a.deadline = 2.0  # an earlier deadline only takes effect when the item is filed again
    w.add(a)
    assert len(w) == 1
    assert w.due(1.0) == []
    w.add(Item("late", 0.5))
    b = Item("b", 0.5)
    w.add(b)
    assert [i.name for i in w.due(2.0)] == ["late", "b", "a"]  # by slot, then as filed


def test_a_long_stall_visits_only_the_filled_slots() -> None:
    """A sweep a day after the last one reports what came due without walking every slot."""
    w = wheel(0.25)
    a, b = Item("a", 10.0), Item("b", 86_000.0)
    w.add(a)
    w.add(b)
    assert w.due(0.0) == []
    assert set(w.due(86_400.0)) == {a, b}


def test_tick_must_be_positive() -> None:
    """A zero or negative tick is a programming error, said at once."""
    with pytest.raises(ValueError, match="tick must be positive"):
        DeadlineWheel(0.0, lambda item: None)


def test_an_early_deadline_filed_after_later_ones_is_not_held_back() -> None:
    """A connection filed after a sweep with a deadline before every filed one is reported at
    its own deadline, not at theirs."""
    w = wheel()
    w.add(Item("later", 60.0))
    assert w.due(1.0) == []
    soon = Item("soon", 2.5)
    w.add(soon)
    assert w.due(2.25) == []
    assert w.due(2.5) == [soon]
