"""The broker's durable state: retained messages, persistent sessions with their subscriptions,
the QoS 1/2 deliveries they have not acknowledged yet, and their QoS 2 receipts.

Plain blocking code with no sockets: the broker appends records on the event loop
(hub/broker/journal.py) and one thread writes them here in batches (hub/commitlog.py), each
batch in one transaction; ``load`` runs once before the hub accepts connections. SQLite (WAL,
its own file in the data dir) by default; :class:`PostgresBrokerState` keeps the same tables in
a PostgreSQL-backed hub's database. The two differ only in their driver, parameter mark and
column types.

A record is a tuple whose first item names what changed (``OPS``):

    ("retain", topic, payload, qos, owner, stored_at)   ("unretain", topic)
    ("session", client_id, owner)        a persistent session connected (created or resumed)
    ("offline", client_id, since)        it disconnected; session expiry counts from here
    ("drop", client_id)                  it ended: subscriptions, deliveries, receipts too
    ("sub", client_id, filter, qos)      ("unsub", client_id, filter)
    ("queue", client_id, seq, topic, payload, qos, retain)   a delivery to acknowledge
    ("release", client_id, seq)          QoS 2: PUBREC received, PUBREL goes out
    ("done", client_id, seq)             acknowledged (PUBACK or PUBCOMP): forgotten
    ("receipt", client_id, pid)          ("unreceipt", client_id, pid)   incoming QoS 2
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from hub.config import create_private_file
from hub.store import StoreError

Record = tuple[Any, ...]

SCHEMA = """
CREATE TABLE IF NOT EXISTS broker_retained (
    topic TEXT NOT NULL PRIMARY KEY, payload {blob} NOT NULL, qos INTEGER NOT NULL, owner TEXT,
    stored_at {real} NOT NULL
);
CREATE INDEX IF NOT EXISTS broker_retained_by_age ON broker_retained (stored_at);
CREATE TABLE IF NOT EXISTS broker_sessions (
    client_id TEXT NOT NULL PRIMARY KEY, owner TEXT NOT NULL, offline_since {real}
);
CREATE INDEX IF NOT EXISTS broker_sessions_by_age ON broker_sessions (offline_since);
CREATE TABLE IF NOT EXISTS broker_subscriptions (
    client_id TEXT NOT NULL, filter TEXT NOT NULL, qos INTEGER NOT NULL,
    PRIMARY KEY (client_id, filter)
);
CREATE TABLE IF NOT EXISTS broker_deliveries (
    client_id TEXT NOT NULL, seq BIGINT NOT NULL, topic TEXT NOT NULL, payload {blob} NOT NULL,
    qos INTEGER NOT NULL, retain INTEGER NOT NULL, released INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (client_id, seq)
);
CREATE TABLE IF NOT EXISTS broker_receipts (
    client_id TEXT NOT NULL, pid INTEGER NOT NULL, PRIMARY KEY (client_id, pid)
);
"""

_DROP = [
    f"DELETE FROM broker_{table} WHERE client_id = ?"
    for table in ("sessions", "subscriptions", "deliveries", "receipts")
]
# What each record does: its statements, each given the record's items after the first.
OPS: dict[str, list[str]] = {
    "retain": [
        "INSERT INTO broker_retained (topic, payload, qos, owner, stored_at) VALUES "
        "(?, ?, ?, ?, ?) ON CONFLICT (topic) DO UPDATE SET payload = excluded.payload, "
        "qos = excluded.qos, owner = excluded.owner, stored_at = excluded.stored_at"
    ],
    "unretain": ["DELETE FROM broker_retained WHERE topic = ?"],
    "session": [
        "INSERT INTO broker_sessions (client_id, owner, offline_since) VALUES (?, ?, NULL) "
        "ON CONFLICT (client_id) DO UPDATE SET owner = excluded.owner, offline_since = NULL"
    ],
    "offline": ["UPDATE broker_sessions SET offline_since = ? WHERE client_id = ?"],
    "drop": _DROP,
    "sub": [
        "INSERT INTO broker_subscriptions (client_id, filter, qos) VALUES (?, ?, ?) "
        "ON CONFLICT (client_id, filter) DO UPDATE SET qos = excluded.qos"
    ],
    "unsub": ["DELETE FROM broker_subscriptions WHERE client_id = ? AND filter = ?"],
    "queue": [
        "INSERT INTO broker_deliveries (client_id, seq, topic, payload, qos, retain) VALUES "
        "(?, ?, ?, ?, ?, ?) ON CONFLICT (client_id, seq) DO UPDATE SET topic = excluded.topic, "
        "payload = excluded.payload, qos = excluded.qos, retain = excluded.retain, released = 0"
    ],
    "release": ["UPDATE broker_deliveries SET released = 1 WHERE client_id = ? AND seq = ?"],
    "done": ["DELETE FROM broker_deliveries WHERE client_id = ? AND seq = ?"],
    "receipt": [
        "INSERT INTO broker_receipts (client_id, pid) VALUES (?, ?) "
        "ON CONFLICT (client_id, pid) DO NOTHING"
    ],
    "unreceipt": ["DELETE FROM broker_receipts WHERE client_id = ? AND pid = ?"],
}


def _params(record: Record) -> tuple[Any, ...]:
    if record[0] == "offline":  # the statement names the time first
        return (record[2], record[1])
    if record[0] == "drop":
        return (record[1],)
    return record[1:]


class BrokerStateError(StoreError):
    """The broker's state cannot be opened or read (a clear error at `hub serve`)."""


# A stored delivery: (seq, topic, payload, qos, retain, released); a plain tuple, since a
# restart may load 100,000 of them.
Delivery = tuple[int, str, bytes, int, int, int]


@dataclass
class StoredSession:
    client_id: str
    owner: str
    offline_since: float | None
    subscriptions: dict[str, int] = field(default_factory=dict)
    deliveries: list[Delivery] = field(default_factory=list)  # oldest first
    receipts: set[int] = field(default_factory=set)


@dataclass
class StoredRetained:
    topic: str
    payload: bytes
    qos: int
    owner: str | None
    stored_at: float


@dataclass
class BrokerState:
    retained: list[StoredRetained] = field(default_factory=list)
    sessions: dict[str, StoredSession] = field(default_factory=dict)

    @property
    def deliveries(self) -> int:
        return sum(len(s.deliveries) for s in self.sessions.values())


class SqlBrokerState:
    """The statements shared by every backend; a subclass supplies the connection."""

    _MARK = "?"
    _TYPES: ClassVar[dict[str, str]] = {"blob": "BLOB", "real": "REAL"}
    _DB_ERRORS: tuple[type[Exception], ...] = (sqlite3.Error,)
    _db: Any
    _lock: threading.Lock

    def _sql(self, statement: str) -> str:
        return statement if self._MARK == "?" else statement.replace("?", self._MARK)

    def _schema(self) -> list[str]:
        text = SCHEMA.format(**self._TYPES)
        return [s.strip() for s in text.split(";") if s.strip()]

    def _begin(self) -> None:
        self._db.execute("BEGIN")

    def write(self, records: list[Record]) -> None:
        """Applies a batch in order, in one transaction: all of it or none."""
        if not records:
            return
        with self._lock:
            db = self._db
            self._begin()
            try:
                for statement, rows in self._runs(records):
                    db.executemany(statement, rows)
                db.execute("COMMIT")
            except BaseException:
                with contextlib.suppress(*self._DB_ERRORS):
                    db.execute("ROLLBACK")
                raise

    def _runs(self, records: list[Record]) -> Iterator[tuple[str, list[tuple[Any, ...]]]]:
        """Each run of records of one kind as its statements and their parameters, in order."""
        start = 0
        while start < len(records):
            op = records[start][0]
            end = start + 1
            while end < len(records) and records[end][0] == op:
                end += 1
            rows = [_params(r) for r in records[start:end]]
            for statement in OPS[op]:
                yield self._sql(statement), rows
            start = end

    def load(self, now: float) -> BrokerState:
        """Everything stored; sessions that were online when the hub stopped are offline
        from ``now`` (their expiry counts from the restart)."""
        state = BrokerState()
        mark = self._MARK
        with self._lock:
            try:
                db = self._db
                db.execute(
                    f"UPDATE broker_sessions SET offline_since = {mark} "
                    "WHERE offline_since IS NULL",
                    (now,),
                )
                self._commit_autocommit()
                for topic, payload, qos, owner, stored_at in db.execute(
                    "SELECT topic, payload, qos, owner, stored_at FROM broker_retained"
                ).fetchall():
                    state.retained.append(
                        StoredRetained(topic, bytes(payload), qos, owner, stored_at)
                    )
                sessions = state.sessions
                for cid, owner, since in db.execute(
                    "SELECT client_id, owner, offline_since FROM broker_sessions"
                ).fetchall():
                    sessions[cid] = StoredSession(cid, owner, since)
                for cid, topic_filter, qos in db.execute(
                    "SELECT client_id, filter, qos FROM broker_subscriptions"
                ).fetchall():
                    if cid in sessions:
                        sessions[cid].subscriptions[topic_filter] = qos
                current: StoredSession | None = None
                for row in db.execute(
                    "SELECT client_id, seq, topic, payload, qos, retain, released "
                    "FROM broker_deliveries ORDER BY client_id, seq"
                ).fetchall():
                    if current is None or current.client_id != row[0]:
                        current = sessions.get(row[0])
                        if current is None:
                            continue
                    current.deliveries.append(row[1:])
                for cid, pid in db.execute(
                    "SELECT client_id, pid FROM broker_receipts"
                ).fetchall():
                    if cid in sessions:
                        sessions[cid].receipts.add(pid)
            except self._DB_ERRORS as exc:
                raise BrokerStateError(f"cannot read the broker's state: {exc}") from exc
        return state

    def _commit_autocommit(self) -> None:
        """Both connections run in autocommit mode outside ``write``: nothing to do."""

    def expired(
        self, sessions_before: float | None, retained_before: float | None
    ) -> tuple[list[str], list[tuple[str, float]]]:
        """Sessions offline since before the first time, and retained messages stored
        before the second (None: none of that kind expires)."""
        mark = self._MARK
        with self._lock:
            cids: list[str] = []
            topics: list[tuple[str, float]] = []
            if sessions_before is not None:
                cids = [
                    row[0]
                    for row in self._db.execute(
                        f"SELECT client_id FROM broker_sessions WHERE offline_since < {mark}",
                        (sessions_before,),
                    ).fetchall()
                ]
            if retained_before is not None:
                topics = [
                    (row[0], row[1])
                    for row in self._db.execute(
                        f"SELECT topic, stored_at FROM broker_retained WHERE stored_at < {mark}",
                        (retained_before,),
                    ).fetchall()
                ]
            return cids, topics

    def close(self) -> None:
        with self._lock:
            self._db.close()


class SqliteBrokerState(SqlBrokerState):
    """``broker.sqlite3`` in the data dir, WAL. ``sync``: "full" (a batch is on disk before
    what it holds is acknowledged: power loss included) or "normal" (survives a crash or kill
    of the hub, not a power loss)."""

    FILE = "broker.sqlite3"

    def __init__(self, data_dir: Path, *, sync: str = "full") -> None:
        if sync not in ("full", "normal"):
            raise BrokerStateError(f"sync must be full or normal, not {sync!r}")
        self.path = data_dir / self.FILE
        try:
            create_private_file(self.path)
            self._db = sqlite3.connect(
                self.path, timeout=2.0, isolation_level=None, check_same_thread=False
            )
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute(f"PRAGMA synchronous={sync.upper()}")
            for statement in self._schema():
                self._db.execute(statement)
            create_private_file(self.path)  # the -wal and -shm files SQLite just made
        except (sqlite3.Error, OSError) as exc:
            raise BrokerStateError(f"cannot open the broker's state {self.path}: {exc}") from exc
        self._lock = threading.Lock()

    def _begin(self) -> None:
        self._db.execute("BEGIN IMMEDIATE")


class PostgresBrokerState(SqlBrokerState):
    """The same tables in a PostgreSQL-backed hub's database (``--store postgresql://...``)."""

    _MARK = "%s"
    _TYPES: ClassVar[dict[str, str]] = {"blob": "BYTEA", "real": "DOUBLE PRECISION"}

    def __init__(self, url: str) -> None:
        import psycopg  # loaded only when used

        self._DB_ERRORS = (psycopg.Error,)
        try:
            self._db = psycopg.connect(url, autocommit=True, connect_timeout=5)
            for statement in self._schema():
                self._db.execute(statement)
        except psycopg.Error as exc:  # the message names the server, never the password
            raise BrokerStateError(
                f"cannot use PostgreSQL for the broker's state: {str(exc).strip()}"
            ) from exc
        self._lock = threading.Lock()

    def write(self, records: list[Record]) -> None:
        """As the base, in psycopg's own transaction block."""
        if not records:
            return
        with self._lock, self._db.transaction(), self._db.cursor() as cursor:
            for statement, rows in self._runs(records):
                cursor.executemany(statement, rows)


def open_broker_state(url: str | None, data_dir: Path, *, sync: str = "full") -> SqlBrokerState:
    """Beside the telemetry: SQLite in the data dir, or the PostgreSQL database of
    ``--store``."""
    if url and url.startswith(("postgresql://", "postgres://")):
        return PostgresBrokerState(url)
    return SqliteBrokerState(data_dir, sync=sync)
