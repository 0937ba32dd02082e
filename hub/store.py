"""Telemetry storage: every accepted reading, exactly once, in SQLite (WAL) in the data dir.

A reading is keyed by (device, boot, seq): a QoS 1 resend or a store-and-forward replay of a
reading already stored is ignored, so storage is exactly-once over at-least-once delivery.
Plain blocking code; the hub calls it from an executor thread, in batches. ``add`` commits
before it returns (or raises, having stored nothing of the batch): ingest acknowledges a
reading only after that.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
import time
from collections.abc import Sequence
from itertools import chain
from pathlib import Path
from typing import Any, NamedTuple, Protocol

from hub.history import SCHEMA as RECORDS_SCHEMA
from hub.history import RecordsSql

SCHEMA = """
CREATE TABLE IF NOT EXISTS readings (
    device TEXT NOT NULL,
    boot TEXT NOT NULL,
    seq INTEGER NOT NULL,
    sensor TEXT NOT NULL,
    value REAL NOT NULL,
    received_at REAL NOT NULL,
    PRIMARY KEY (device, boot, seq)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS readings_by_time ON readings (device, sensor, received_at);
"""
MAX_LIMIT = 10_000
SYNC_MODES = ("full", "normal")
_INSERT = (
    "INSERT OR IGNORE INTO readings (device, sensor, boot, seq, value, received_at)"
    " VALUES (?, ?, ?, ?, ?, ?)"
)
# A batch goes in as INSERTs of CHUNK rows each (then one row at a time): a quarter less CPU per
# row than one row per statement, and one release of the GIL per CHUNK rows instead of per row.
CHUNK = 50
_INSERT_CHUNK = _INSERT + ", (?, ?, ?, ?, ?, ?)" * (CHUNK - 1)
# How long a write waits for another process's lock before it fails. Ingest then stops
# acknowledging readings and retries (hub/ingest.py), rather than holding them unacknowledged.
BUSY_TIMEOUT_S = 2.0


class StoreError(Exception):
    """The telemetry database cannot be opened or a query is malformed."""


class Row(NamedTuple):  # a stored reading, as queries return it
    device: str
    sensor: str
    boot: str
    seq: int
    value: float
    received_at: float


# What ingest hands ``add``: a Row's fields as a plain tuple (made for every reading).
RowTuple = tuple[str, str, str, int, float, float]
# Errors that one row can cause on its own (a constraint, a value the driver cannot bind):
# ingest writes a batch failing with one of these in halves to find the row and drop it.
_ROW_ERRORS: tuple[type[BaseException], ...] = (
    sqlite3.IntegrityError,
    sqlite3.InterfaceError,
    sqlite3.ProgrammingError,
    sqlite3.DataError,
    OverflowError,
    ValueError,
    TypeError,
)


def row_error(store: object, exc: BaseException) -> bool:
    """Whether a failed ``add`` may be one row's fault rather than the store's (an outage)."""
    errors = getattr(store, "ROW_ERRORS", _ROW_ERRORS)
    return isinstance(exc, errors)


def history_query(
    mark: str,
    device: str,
    sensor: str | None,
    since: float | None,
    until: float | None,
    limit: int,
) -> tuple[str, list[object]]:
    """The SQL (with the backend's parameter mark) for the newest `limit` readings of a device
    in [since, until), returned oldest first; the same for every backend."""
    if not 1 <= limit <= MAX_LIMIT:
        raise StoreError(f"limit must be from 1 to {MAX_LIMIT}, not {limit}")
    where = [f"device = {mark}"]
    params: list[object] = [device]
    for clause, value in (
        ("sensor =", sensor),
        ("received_at >=", since),
        ("received_at <", until),
    ):
        if value is not None:
            where.append(f"{clause} {mark}")
            params.append(value)
    newest = (
        "SELECT device, sensor, boot, seq, value, received_at FROM readings"
        f" WHERE {' AND '.join(where)} ORDER BY received_at DESC, seq DESC LIMIT {mark}"
    )
    return f"SELECT * FROM ({newest}) AS newest ORDER BY received_at, seq", [*params, limit]


class Store(Protocol):
    """What ingest and the HTTP API need from a telemetry backend."""

    def add(self, rows: Sequence[RowTuple]) -> int: ...

    def query(
        self,
        device: str,
        sensor: str | None = None,
        since: float | None = None,
        until: float | None = None,
        limit: int = 1000,
    ) -> list[Row]: ...

    def prune(self, older_than_s: float, now: float | None = None) -> int: ...

    def close(self) -> None: ...


def open_store(url: str | None, data_dir: Path, *, sync: str = "full") -> SqlHistory:
    """SQLite in the data dir by default; ``postgresql://...`` selects PostgreSQL. ``sync`` is
    SQLite's: "full" (a commit is on disk) or "normal" (it survives a crash of the hub)."""
    if url is None or url in ("", "sqlite"):
        return SqliteStore(data_dir, sync=sync)
    if url.startswith(("postgresql://", "postgres://")):
        from hub.store_pg import PostgresStore  # psycopg is loaded only when used

        return PostgresStore(url)
    raise StoreError(f"unknown store {url.split(':')[0]!r}: use sqlite or postgresql://...")


class SqlHistory(RecordsSql):
    """Reading, pruning and closing: the same SQL for every backend but for its parameter mark.
    A subclass provides ``_MARK``, a DB-API connection ``_db`` and the ``_lock`` guarding it."""

    _MARK = "?"
    _DB_ERRORS: tuple[type[Exception], ...] = ()  # the driver's errors, reported as StoreError
    _db: Any
    _lock: threading.Lock

    def add(self, rows: Sequence[RowTuple]) -> int:
        raise NotImplementedError

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def probe(self) -> None:
        """Raises unless the database answers now (ingest tells a reading the store rejects
        from a store that fails by it)."""
        with self._lock:
            self._db.execute("SELECT 1")

    def query(
        self,
        device: str,
        sensor: str | None = None,
        since: float | None = None,
        until: float | None = None,
        limit: int = 1000,
    ) -> list[Row]:
        """Readings of one device, oldest first, within [since, until); StoreError when the
        database does not answer (locked, gone)."""
        sql, params = history_query(self._MARK, device, sensor, since, until, limit)
        with self._lock:
            try:
                return [Row(*r) for r in self._db.execute(sql, params).fetchall()]
            except self._DB_ERRORS as exc:
                raise StoreError(f"the telemetry store did not answer: {exc}") from exc

    def prune(self, older_than_s: float, now: float | None = None) -> int:
        """Deletes readings older than the retention period; returns how many."""
        cutoff = (time.time() if now is None else now) - older_than_s
        sql = f"DELETE FROM readings WHERE received_at < {self._MARK}"
        with self._lock:
            pruned = int(self._db.execute(sql, (cutoff,)).rowcount)
        self.prune_records(cutoff)  # health, device events and finished commands too
        return pruned


class SqliteStore(SqlHistory):
    FILE = "telemetry.sqlite3"
    _DB_ERRORS = (sqlite3.Error,)

    def __init__(self, data_dir: Path, *, sync: str = "full") -> None:
        if sync not in SYNC_MODES:
            raise StoreError(f"store sync must be one of {', '.join(SYNC_MODES)}, not {sync!r}")
        data_dir.mkdir(parents=True, exist_ok=True)
        self.path = data_dir / self.FILE
        try:
            self._db = sqlite3.connect(
                self.path, timeout=BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False
            )
            self._db.execute("PRAGMA journal_mode=WAL")
            # FULL (the default): a commit is on disk before ingest acknowledges its readings,
            # power loss included. NORMAL skips the fsync per commit: it survives a crash or
            # kill of the hub, but a power loss can take the last commits.
            self._db.execute(f"PRAGMA synchronous={sync.upper()}")
            self._db.executescript(SCHEMA + RECORDS_SCHEMA)
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"cannot open the telemetry database {self.path}: {exc}") from exc
        self._lock = threading.Lock()

    def probe(self) -> None:
        """Raises unless the database takes a write transaction now; writes nothing."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            self._db.execute("ROLLBACK")

    def add(self, rows: Sequence[RowTuple]) -> int:
        """Stores a batch in one transaction; returns how many were new (not duplicates)."""
        if not rows:
            return 0
        with self._lock:
            before = self._db.total_changes
            self._db.execute("BEGIN IMMEDIATE")
            try:
                # A row is the tuple of _INSERT's columns.
                whole = len(rows) - len(rows) % CHUNK
                if whole:
                    chunks = (
                        tuple(chain.from_iterable(rows[i : i + CHUNK]))
                        for i in range(0, whole, CHUNK)
                    )
                    self._db.executemany(_INSERT_CHUNK, chunks)
                if whole < len(rows):
                    self._db.executemany(_INSERT, rows[whole:])
                self._db.execute("COMMIT")
            except BaseException:
                # SQLite may have rolled back already (a full disk, an I/O error).
                if self._db.in_transaction:
                    with contextlib.suppress(sqlite3.Error):
                        self._db.execute("ROLLBACK")
                raise
            return self._db.total_changes - before
