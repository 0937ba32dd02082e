"""A timer wheel of deadlines that move: keepalive without a scan of every connection.

A connection's keepalive deadline moves forward with every packet it sends, thousands of times
a second across a fleet, so the wheel never hears about those moves: each item sits in the slot
of the deadline it had when it was filed, and when that slot comes due the item's *current*
deadline is asked for (``deadline_of``). Past it, the item is due; otherwise it is filed again
in its new slot. A device that talks more often than its keepalive is looked at once per
keepalive period, an idle one once; a sweep costs the items whose slots came due, not every
connection (the scan it replaces looked at all 10,000 of a fleet four times a second).

Slots are ``tick`` seconds wide and a deadline goes in the slot that ends at or after it, so
an item is reported at most one tick late and never early. ``discard`` is O(1) and the wheel
holds one entry per item it was given, so it is bounded by the items alive (the broker
discards a connection when it closes). No sockets, no clock: the caller passes ``now``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

T = TypeVar("T", bound=Hashable)


class DeadlineWheel(Generic[T]):
    """Items with moving deadlines; ``due(now)`` returns those whose deadline has passed."""

    def __init__(self, tick: float, deadline_of: Callable[[T], float | None]) -> None:
        if not tick > 0:
            raise ValueError(f"tick must be positive, not {tick!r}")
        self.tick = tick
        self._deadline_of = deadline_of  # the item's deadline now, or None: forget it
        self._slots: dict[int, dict[T, None]] = {}
        self._slot_of: dict[T, int] = {}
        self._cursor: int | None = None  # the first slot not yet swept

    def __len__(self) -> int:
        return len(self._slot_of)

    def __contains__(self, item: object) -> bool:
        return item in self._slot_of

    def _slot(self, deadline: float) -> int:
        return math.ceil(deadline / self.tick)

    def add(self, item: T, deadline: float | None = None) -> None:
        """Files the item at ``deadline`` (by default its own ``deadline_of``); an item filed
        already moves. None (and no deadline of its own) leaves it out."""
        if deadline is None:
            deadline = self._deadline_of(item)
        self.discard(item)
        if deadline is None:
            return
        slot = self._slot(deadline)
        if self._cursor is not None and slot < self._cursor:
            slot = self._cursor  # already past: the next sweep reports it
        self._slots.setdefault(slot, {})[item] = None
        self._slot_of[item] = slot

    def discard(self, item: T) -> None:
        slot = self._slot_of.pop(item, None)
        if slot is None:
            return
        members = self._slots[slot]
        del members[item]
        if not members:
            del self._slots[slot]

    def due(self, now: float) -> list[T]:
        """Removes and returns the items whose deadline is at or before ``now``; items whose
        deadline moved on are filed again, those whose ``deadline_of`` is None are dropped."""
        last = math.floor(now / self.tick)  # slots ending at or before now
        cursor = self._cursor
        if cursor is None:
            cursor = min(self._slots, default=last + 1)
        out: list[T] = []
        slots = self._slots
        if slots and last - cursor > len(slots):  # a long stall: visit the filled slots only
            todo = sorted(s for s in slots if s <= last)
        else:
            todo = [s for s in range(cursor, last + 1) if s in slots]
        if self._cursor is None or last + 1 > self._cursor:
            self._cursor = last + 1
        for slot in todo:
            members = slots.pop(slot)
            for item in members:
                del self._slot_of[item]
                deadline = self._deadline_of(item)
                if deadline is None:
                    continue
                if deadline <= now:
                    out.append(item)
                else:
                    self.add(item, deadline)
        return out
