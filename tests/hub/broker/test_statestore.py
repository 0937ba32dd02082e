"""The broker's state store without a broker: records in, state out, expiry, atomic batches."""

from collections.abc import Iterator
from pathlib import Path

import pytest

from hub.broker.statestore import (
    BrokerStateError,
    SqlBrokerState,
    SqliteBrokerState,
    open_broker_state,
)
from tests.support.postgres import fresh_database


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[SqlBrokerState]:
    """Each backend in turn, behind the same interface."""
    if request.param == "sqlite":
        backend = open_broker_state(None, tmp_path)
    else:
        url = fresh_database(request.getfixturevalue("postgres_url"))
        backend = open_broker_state(url, tmp_path)
    yield backend
    backend.close()


def test_everything_written_is_loaded_back(store: SqlBrokerState) -> None:
    """Retained messages, sessions, subscriptions, deliveries and receipts come back as
    written, deliveries oldest first, acknowledged ones gone."""
    store.write(
        [
            ("retain", "d/1/status", b"online", 1, "device:1", 100.0),
            ("retain", "d/2/status", b"offline", 0, None, 101.0),
            ("session", "sub", "client:sub"),
            ("sub", "sub", "d/+/cmd", 2),
            ("sub", "sub", "x/#", 1),
            ("queue", "sub", 2, "d/1/cmd", b"two", 2, 0),
            ("queue", "sub", 1, "d/1/cmd", b"one", 1, 1),
            ("queue", "sub", 3, "d/1/cmd", b"three", 1, 0),
            ("release", "sub", 2),
            ("done", "sub", 3),
            ("receipt", "sub", 7),
            ("receipt", "sub", 8),
            ("unreceipt", "sub", 8),
            ("unsub", "sub", "x/#"),
        ]
    )
    state = store.load(now=500.0)
    retained = {r.topic: r for r in state.retained}
    assert set(retained) == {"d/1/status", "d/2/status"}
    assert retained["d/1/status"].payload == b"online"
    assert retained["d/1/status"].owner == "device:1"
    assert retained["d/2/status"].owner is None and retained["d/2/status"].qos == 0
    session = state.sessions["sub"]
    assert session.owner == "client:sub"
    assert session.offline_since == 500.0  # it was online when the hub stopped
    assert session.subscriptions == {"d/+/cmd": 2}
    assert [(seq, p, q, bool(r), bool(rel)) for seq, _, p, q, r, rel in session.deliveries] == [
        (1, b"one", 1, True, False),
        (2, b"two", 2, False, True),
    ]
    assert session.receipts == {7}
    assert state.deliveries == 2


def test_retained_clear_and_replace(store: SqlBrokerState) -> None:
    """A newer retained message replaces the older one; a clear removes it."""
    store.write([("retain", "a", b"1", 1, None, 1.0), ("retain", "b", b"1", 1, None, 1.0)])
    store.write([("retain", "a", b"2", 0, "x", 2.0), ("unretain", "b")])
    state = store.load(now=10.0)
    assert [(r.topic, r.payload, r.qos, r.owner) for r in state.retained] == [("a", b"2", 0, "x")]


def test_drop_removes_a_session_and_all_it_holds(store: SqlBrokerState) -> None:
    """Dropping a session deletes its subscriptions, deliveries and receipts, not others'."""
    for cid in ("gone", "kept"):
        store.write(
            [
                ("session", cid, "o"),
                ("sub", cid, "t", 1),
                ("queue", cid, 1, "t", b"m", 1, 0),
                ("receipt", cid, 1),
            ]
        )
    store.write([("drop", "gone")])
    state = store.load(now=1.0)
    assert set(state.sessions) == {"kept"}
    kept = state.sessions["kept"]
    assert kept.subscriptions == {"t": 1} and len(kept.deliveries) == 1 and kept.receipts == {1}


def test_expired_names_old_offline_sessions_and_old_retained(store: SqlBrokerState) -> None:
    """Sessions offline since before the cutoff and retained messages stored before theirs
    are expired; online sessions never are."""
    store.write(
        [
            ("session", "old", "o"),
            ("offline", "old", 100.0),
            ("session", "new", "o"),
            ("offline", "new", 900.0),
            ("session", "online", "o"),
            ("retain", "r/old", b"x", 0, None, 50.0),
            ("retain", "r/new", b"x", 0, None, 950.0),
        ]
    )
    cids, topics = store.expired(500.0, 500.0)
    assert cids == ["old"]
    assert [t for t, _ in topics] == ["r/old"]
    assert store.expired(None, None) == ([], [])
    store.write([("session", "old", "o")])  # back online: offline_since is cleared
    assert store.expired(500.0, None)[0] == []


def test_a_failing_batch_stores_none_of_it(store: SqlBrokerState) -> None:
    """A batch with a bad record is rolled back whole and the store keeps working."""
    store.write([("retain", "kept", b"1", 0, None, 1.0)])
    with pytest.raises(Exception):  # noqa: B017 - each driver raises its own error
        store.write([("retain", "lost", b"1", 0, None, 1.0), ("retain", None, b"x", 0, None, 1.0)])
    store.write([("retain", "after", b"1", 0, None, 1.0)])
    assert {r.topic for r in store.load(now=1.0).retained} == {"kept", "after"}


def test_sqlite_file_is_private_and_a_broken_one_is_a_clear_error(tmp_path: Path) -> None:
    """broker.sqlite3 is its owner's only; a file that is not a database stops the hub with
    a message naming it, and is left as it was."""
    store = SqliteBrokerState(tmp_path)
    store.close()
    assert (tmp_path / "broker.sqlite3").stat().st_mode & 0o077 == 0
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "broker.sqlite3").write_bytes(b"not a database" * 100)
    with pytest.raises(BrokerStateError, match=r"broker\.sqlite3"):
        SqliteBrokerState(broken)
    assert (broken / "broker.sqlite3").read_bytes() == b"not a database" * 100
