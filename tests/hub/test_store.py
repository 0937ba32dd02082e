"""Telemetry storage without the hub: exactly-once keys, queries, retention, bad files."""

from collections.abc import Iterator
from pathlib import Path

import pytest

from hub.store import Row, SqliteStore, Store, StoreError, open_store
from tests.support.postgres import fresh_database


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    """Each backend in turn, behind the same interface."""
    if request.param == "sqlite":
        backend = open_store(None, tmp_path)
    else:
        backend = open_store(fresh_database(request.getfixturevalue("postgres_url")), tmp_path)
    yield backend
    backend.close()


def rows(
    device: str, boot: str, seqs: range, sensor: str = "temp", t0: float = 1000.0
) -> list[Row]:
    return [Row(device, sensor, boot, s, 20.0 + s / 10, t0 + s) for s in seqs]


def test_duplicates_are_dropped(store: Store) -> None:
    """The same (device, boot, seq) is stored once, however often it arrives."""
    assert store.add(rows("d1", "aa", range(5))) == 5
    assert store.add(rows("d1", "aa", range(3, 8))) == 3  # 3 and 4 were already there
    assert store.add(rows("d1", "bb", range(2))) == 2  # a new boot starts again at 0
    stored = sorted((r.boot, r.seq) for r in store.query("d1", limit=100))
    assert stored == [("aa", s) for s in range(8)] + [("bb", 0), ("bb", 1)]


def test_a_big_batch_of_plain_tuples_is_stored_whole_with_its_duplicates_counted(
    store: Store,
) -> None:
    """A batch of more rows than one INSERT takes (SQLite: CHUNK), as the plain tuples ingest
    hands over and with duplicates inside and against stored rows, is stored field for field
    and only its new rows are counted."""
    assert store.add([tuple(r) for r in rows("d2", "aa", range(10))]) == 10  # type: ignore[misc]
    more = rows("d2", "aa", range(5, 128)) + rows("d2", "aa", range(120, 125))
    batch = [(r.device, r.sensor, r.boot, r.seq, r.value, r.received_at) for r in more]
    assert store.add(batch) == 128 - 10
    stored = store.query("d2", limit=1000)
    assert [(r.seq, r.value, r.received_at) for r in stored] == [
        (s, 20.0 + s / 10, 1000.0 + s) for s in range(128)
    ]
    assert {(r.device, r.sensor, r.boot) for r in stored} == {("d2", "temp", "aa")}


def test_query_filters_and_limit(store: Store) -> None:
    """Sensor, time window and limit select the newest readings, returned oldest first."""
    store.add(rows("d1", "aa", range(10)) + rows("d1", "aa", range(10, 12), sensor="hum"))
    store.add(rows("d2", "cc", range(3)))
    temp = store.query("d1", sensor="temp", since=1002, until=1008)
    assert [r.seq for r in temp] == [2, 3, 4, 5, 6, 7]
    assert [r.seq for r in store.query("d1", sensor="temp", limit=3)] == [7, 8, 9]
    assert {r.sensor for r in store.query("d1")} == {"temp", "hum"}
    assert store.query("nobody") == []
    with pytest.raises(StoreError, match="limit"):
        store.query("d1", limit=0)


def test_retention_prunes_old_readings(store: Store) -> None:
    """Readings older than the retention period are deleted, newer ones kept."""
    store.add(rows("d1", "aa", range(10)))
    assert store.prune(older_than_s=5, now=1010) == 5
    assert [r.seq for r in store.query("d1")] == [5, 6, 7, 8, 9]


def test_broken_database_file_is_a_clear_error_and_kept(tmp_path: Path) -> None:
    """A telemetry file that is not SQLite stops the store with a message, untouched."""
    (tmp_path / SqliteStore.FILE).write_bytes(b"garbage" * 1000)
    with pytest.raises(StoreError, match="cannot open the telemetry database"):
        SqliteStore(tmp_path)
    assert (tmp_path / SqliteStore.FILE).read_bytes() == b"garbage" * 1000


def test_unknown_store_url_and_unreachable_postgres_are_clear_errors(tmp_path: Path) -> None:
    """A store URL of an unknown kind, or a PostgreSQL server that is not there, is refused
    with a message (never the password)."""
    with pytest.raises(StoreError, match="unknown store 'mysql'"):
        open_store("mysql://x", tmp_path)
    with pytest.raises(StoreError, match="cannot use the PostgreSQL store") as info:
        open_store("postgresql://hub:s3cret@127.0.0.1:1/none", tmp_path)
    assert "s3cret" not in str(info.value)
