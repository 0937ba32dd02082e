"""Per-client tables without sockets: warning throttles, rate buckets, failed logins."""

import time

from hub.broker.throttle import Buckets, Failures, Throttle


def test_throttle_lets_one_through_per_window_and_counts_the_rest() -> None:
    """Within a window only the first occurrence per key goes out; the next one after the
    window says how many were held back."""
    throttle: Throttle[str] = Throttle(window=10.0)
    assert throttle.allow("a", now=0.0) == 0
    assert [throttle.allow("a", now=t) for t in (1.0, 2.0, 9.9)] == [None, None, None]
    assert throttle.allow("b", now=5.0) == 0  # another key is not held back
    assert throttle.allow("a", now=10.0) == 3
    assert throttle.allow("a", now=11.0) is None


def test_tables_forget_the_oldest_keys_first() -> None:
    """A client inventing keys fills no table beyond its capacity."""
    throttle: Throttle[int] = Throttle(capacity=100)
    buckets = Buckets(rate=5.0, capacity=100)
    failures = Failures(limit=3, capacity=100)
    for key in range(1000):
        throttle.allow(key, now=0.0)
        buckets.get(str(key))
        failures.failed(str(key), now=0.0)
    assert len(throttle) == len(buckets) == len(failures) == 100


def test_bucket_is_kept_for_the_same_identity() -> None:
    """The same key gets the same bucket back (reconnecting does not refill it); rate 0 is
    no limit."""
    buckets = Buckets(rate=1.0)
    bucket = buckets.get("device:a")
    now = time.monotonic()
    assert bucket.allow(now) and bucket.allow(now) and not bucket.allow(now)
    assert buckets.get("device:a") is bucket
    unlimited = Buckets(rate=0.0).get("device:a")
    assert all(unlimited.allow(0.0) for _ in range(1000))


def test_failures_block_after_the_limit_until_the_window_passes() -> None:
    """limit failures within the window block the key; a minute after the last failure it is
    free again; success clears it; limit 0 never blocks."""
    failures = Failures(limit=3, window=60.0)
    for t in (0.0, 1.0):
        failures.failed("1.2.3.4", now=t)
    assert not failures.blocked("1.2.3.4", now=2.0)
    failures.failed("1.2.3.4", now=2.0)
    assert failures.blocked("1.2.3.4", now=30.0)
    assert not failures.blocked("1.2.3.4", now=62.5)
    failures.failed("5.6.7.8", now=0.0)
    failures.succeeded("5.6.7.8")
    assert len(failures) == 0
    off = Failures(limit=0)
    off.failed("x")
    assert not off.blocked("x")
