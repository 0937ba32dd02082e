"""The chart series and health history on both stores, without the hub: raw readings when
few, min/max/mean/count per bucket in SQL when many, and gaps that stay gaps."""

from __future__ import annotations

import statistics
from collections.abc import Iterator
from pathlib import Path

import pytest

from hub.history import Records, bucket_for, series_query
from hub.store import Row, SqlHistory, open_store
from tests.support.postgres import fresh_database


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[SqlHistory]:
    """Each backend in turn."""
    if request.param == "sqlite":
        backend = open_store(None, tmp_path)
    else:
        backend = open_store(fresh_database(request.getfixturevalue("postgres_url")), tmp_path)
    yield backend
    backend.close()


def test_bucket_width() -> None:
    """A week of 2-second readings fits 2,000 buckets of whole seconds."""
    week = 7 * 86400
    assert bucket_for(0, week, 2000) == 303.0
    assert week / bucket_for(0, week, 2000) <= 2000
    assert bucket_for(0, 10, 100) == 0.1


def test_series_query_groups_in_sql() -> None:
    """The downsampling query groups by sensor and bucket and aggregates in the database."""
    sql, params = series_query("?", "CAST({} AS INTEGER)", "d1", ["temp"], 0.0, 100.0, 10.0)
    assert "GROUP BY sensor, b" in sql and "AVG(value)" in sql and "COUNT(*)" in sql
    assert params == [0.0, 10.0, "d1", 0.0, 100.0, "temp"]


def test_few_readings_come_back_raw(store: SqlHistory) -> None:
    """At most `points` readings per sensor: each reading, min = max = mean, n = 1."""
    store.add([Row("d1", "temp", "aa", s, 20.0 + s, 1000.0 + s) for s in range(5)])
    bucket, series = store.series("d1", [], 1000.0, 1010.0, 5)
    assert bucket == 0
    temp = series["temp"]
    assert temp["t"] == [1000.0, 1001.0, 1002.0, 1003.0, 1004.0]
    assert temp["min"] == temp["max"] == temp["mean"] == [20.0, 21.0, 22.0, 23.0, 24.0]
    assert temp["n"] == [1] * 5


def test_many_readings_are_downsampled_with_gaps_kept(store: SqlHistory) -> None:
    """A week of 2-second readings (with an hour missing) comes back as at most 2,000 points
    per sensor whose min, max, mean and count are those of the readings in each bucket, and
    the missing hour has no points."""
    since, week = 1_000_000.0, 7 * 86400
    gap = (since + 86400, since + 86400 + 3600)
    values: dict[float, float] = {}
    rows = []
    for seq in range(week // 2):
        t = since + seq * 2
        if gap[0] <= t < gap[1]:
            continue
        value = float((seq * 7919) % 1000) / 10
        values[t] = value
        rows.append(Row("d1", "temp", "aa", seq, value, t))
    rows.append(Row("d1", "hum", "aa", 10**7, 55.5, since + 10))
    for start in range(0, len(rows), 20_000):
        store.add(rows[start : start + 20_000])
    bucket, series = store.series("d1", ["temp"], since, since + week, 2000)
    assert bucket == 303.0 and set(series) == {"temp"}
    temp = series["temp"]
    assert 1900 <= len(temp["t"]) <= 2000
    assert sum(temp["n"]) == len(values)
    for i in (0, 1, 500, len(temp["t"]) - 1):
        start = temp["t"][i]
        inside = [v for t, v in values.items() if start <= t < start + bucket]
        assert temp["n"][i] == len(inside)
        assert temp["min"][i] == min(inside) and temp["max"][i] == max(inside)
        assert temp["mean"][i] == pytest.approx(statistics.fmean(inside))
    jumps = [b - a for a, b in zip(temp["t"], temp["t"][1:], strict=False)]
    assert max(jumps) > 3000 and sorted(jumps)[-2] == bucket  # one gap, the hour
    assert not any(gap[0] + bucket <= t < gap[1] - bucket for t in temp["t"])
    _, both = store.series("d1", [], since, since + week, 2000)
    assert both["hum"]["n"] == [1] and both["hum"]["mean"] == [55.5]


def test_health_history_downsampled(store: SqlHistory) -> None:
    """Health rows come back raw when few and as the mean per bucket when many."""
    rows = [("d1", 100.0 + i, 1000 + i, -60, i % 2, 0) for i in range(10)]
    store.save_records(Records(health=list(rows)))
    bucket, raw = store.health_series("d1", 100.0, 200.0, 20)
    assert bucket == 0 and raw["t"] == [100.0 + i for i in range(10)] and raw["heap"][0] == 1000
    bucket, coarse = store.health_series("d1", 100.0, 120.0, 4)
    assert bucket == 5.0 and coarse["t"] == [100.0, 105.0]
    assert coarse["heap"] == [1002.0, 1007.0] and coarse["reconnects"][0] == pytest.approx(0.4)
