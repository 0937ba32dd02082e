"""Per-client bookkeeping that outlives a connection, in small bounded tables (no I/O).

- :class:`Throttle`: repeated warnings of one kind about one client go out once per window,
  with how many were held back since (one log line and one hub event per client per kind per
  10 s, however fast the client misbehaves).
- :class:`RateLimit` and :class:`Buckets`: the publish rate limit of an identity, kept across
  its reconnects (reconnecting does not refill the bucket).
- :class:`Failures`: failed logins per address and per identity; after too many, logins are
  refused for a while without checking (or hashing) anything.

Each table holds at most ``capacity`` keys and forgets the oldest first, so a client that
invents new ids or addresses costs a bounded amount of memory.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from typing import Generic, TypeVar

K = TypeVar("K")


class Throttle(Generic[K]):
    """Lets one occurrence per key through each ``window`` seconds and counts the rest."""

    def __init__(self, window: float = 10.0, capacity: int = 4096) -> None:
        self.window = window
        self.capacity = capacity
        self._seen: OrderedDict[K, list[float]] = OrderedDict()  # key -> [last out, held back]

    def allow(self, key: K, now: float | None = None) -> int | None:
        """None: hold this one back (counted). Otherwise it may go out, and the number is
        how many were held back since the last one that did."""
        now = time.monotonic() if now is None else now
        entry = self._seen.get(key)
        if entry is None:
            if len(self._seen) >= self.capacity:
                self._seen.popitem(last=False)
            self._seen[key] = [now, 0.0]
            return 0
        if now - entry[0] < self.window:
            entry[1] += 1
            return None
        held = int(entry[1])
        entry[0], entry[1] = now, 0.0
        self._seen.move_to_end(key)
        return held

    def __len__(self) -> int:
        return len(self._seen)


class RateLimit:
    """A token bucket of ``rate`` messages a second with a burst of twice that; 0 is no limit."""

    __slots__ = ("_last", "_tokens", "rate")

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self._tokens = 2 * rate
        self._last = time.monotonic()

    def allow(self, now: float) -> bool:
        if not self.rate:
            return True
        self._tokens = min(2 * self.rate, self._tokens + (now - self._last) * self.rate)
        self._last = now
        if self._tokens < 1:
            return False
        self._tokens -= 1
        return True


class Buckets:
    """The rate limit of each identity, kept across reconnects (at most ``capacity``; the one
    unused longest is forgotten first)."""

    def __init__(self, rate: float, capacity: int = 20_000) -> None:
        self.rate = rate
        self.capacity = capacity
        self._buckets: OrderedDict[str, RateLimit] = OrderedDict()
        self._unlimited = RateLimit(0.0)

    def get(self, key: str) -> RateLimit:
        if not self.rate:
            return self._unlimited  # shared: it keeps no state
        bucket = self._buckets.get(key)
        if bucket is None:
            if len(self._buckets) >= self.capacity:
                self._buckets.popitem(last=False)
            bucket = self._buckets[key] = RateLimit(self.rate)
        else:
            self._buckets.move_to_end(key)
        return bucket

    def __len__(self) -> int:
        return len(self._buckets)


class Failures:
    """Failed logins per key (an address, an identity): after ``limit`` within ``window``
    seconds the key is blocked until ``window`` seconds after its last failure."""

    def __init__(self, limit: int, window: float = 60.0, capacity: int = 10_000) -> None:
        self.limit = limit
        self.window = window
        self.capacity = capacity
        self._failures: OrderedDict[str, list[float]] = OrderedDict()  # key -> [first, last, n]

    def blocked(self, key: str, now: float | None = None) -> bool:
        if not self.limit:
            return False
        entry = self._failures.get(key)
        if entry is None:
            return False
        now = time.monotonic() if now is None else now
        if now - entry[1] >= self.window:
            del self._failures[key]
            return False
        return entry[2] >= self.limit

    def failed(self, key: str, now: float | None = None) -> None:
        if not self.limit:
            return
        now = time.monotonic() if now is None else now
        entry = self._failures.get(key)
        if entry is None or (now - entry[0] >= self.window and entry[2] < self.limit):
            if entry is None and len(self._failures) >= self.capacity:
                self._failures.popitem(last=False)
            self._failures[key] = [now, now, 1.0]
            return
        entry[1] = now
        entry[2] += 1
        self._failures.move_to_end(key)

    def succeeded(self, key: str) -> None:
        self._failures.pop(key, None)

    def __len__(self) -> int:
        return len(self._failures)
