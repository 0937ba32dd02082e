"""Telemetry storage in PostgreSQL, behind the same interface as the SQLite store.

Selected with ``hub serve --store postgresql://USER@HOST:PORT/DB``. The same exactly-once key
(device, boot, seq); a batch is one INSERT ... ON CONFLICT DO NOTHING over arrays.

Several hubs write one database in cluster mode (competing consumers of the readings; each
keeping every device's state): two transactions that lock the same rows in different orders
deadlock, and PostgreSQL aborts one. So every write takes its rows in one order: readings by
(device, boot, seq) (a reading redelivered to another hub is inserted by both), device states
by device, commands and alarms by id; a removed device's state row goes in a transaction of its
own after the batch's (a DELETE among the upserts would take its row out of order).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

import psycopg

from hub.history import SCHEMA as RECORDS_SCHEMA
from hub.history import Records
from hub.store import BUSY_TIMEOUT_S, RowTuple, SqlHistory, StoreError

SCHEMA = """
CREATE TABLE IF NOT EXISTS readings (
    device TEXT NOT NULL,
    boot TEXT NOT NULL,
    seq BIGINT NOT NULL,
    sensor TEXT NOT NULL,
    value DOUBLE PRECISION NOT NULL,
    received_at DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (device, boot, seq)
);
CREATE INDEX IF NOT EXISTS readings_by_time ON readings (device, sensor, received_at);
"""
CONNECT_TIMEOUT_S = 5
_INSERT = """
INSERT INTO readings (device, boot, seq, sensor, value, received_at)
SELECT * FROM unnest(%s::text[], %s::text[], %s::bigint[], %s::text[], %s::float8[],
                     %s::float8[]) AS r (device, boot, seq, sensor, value, received_at)
ORDER BY device, boot, seq
ON CONFLICT DO NOTHING
"""


class PostgresStore(SqlHistory):
    _MARK = "%s"
    _DB_ERRORS = (psycopg.Error,)
    # One row's own fault (hub/store.py row_error): a constraint, a value out of range, NUL.
    ROW_ERRORS = (psycopg.DataError, psycopg.IntegrityError, OverflowError, ValueError, TypeError)
    _BUCKET = "FLOOR({})"
    _BEGIN = "BEGIN"

    def __init__(self, url: str) -> None:
        self._url = url
        self._db = self._connect()
        self._lock = threading.Lock()

    def _connect(self) -> psycopg.Connection:
        try:
            db = psycopg.connect(self._url, autocommit=True, connect_timeout=CONNECT_TIMEOUT_S)
            db.execute(SCHEMA + RECORDS_SCHEMA)
            # As SQLite's busy timeout: a write another session's lock holds up fails, and
            # ingest stops acknowledging and retries, instead of waiting without bound.
            db.execute(f"SET lock_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
        except psycopg.Error as exc:
            # The message names the server and the problem; never the password in the URL.
            raise StoreError(f"cannot use the PostgreSQL store: {str(exc).strip()}") from exc
        return db

    def probe(self) -> None:
        """Raises unless the server answers (a broken connection is opened again)."""
        with self._lock:
            if self._db.closed or self._db.broken:
                self._db = self._connect()
            self._db.execute("SELECT 1")

    def add(self, rows: Sequence[RowTuple]) -> int:
        """One INSERT, committed when it returns (autocommit). A connection the server or the
        network broke is opened again on the next call, so a restarted server is picked up."""
        if not rows:
            return 0
        # A row is (device, sensor, boot, seq, value, received_at); the arrays follow _INSERT.
        columns = list(zip(*((r[0], r[2], r[3], r[1], r[4], r[5]) for r in rows), strict=True))
        with self._lock:
            if self._db.closed or self._db.broken:
                self._db = self._connect()
            cursor = self._db.execute(_INSERT, [list(c) for c in columns])
            return max(cursor.rowcount, 0)

    def save_records(self, records: Records) -> None:
        """As the SQLite store's, with the rows in one order for every hub (see above)."""
        states = records.states
        kept = {d: states[d] for d in sorted(states) if states[d] is not None}
        ordered = Records(
            states=kept,
            health=records.health,
            events=records.events,
            commands={i: records.commands[i] for i in sorted(records.commands)},
            alarms={i: records.alarms[i] for i in sorted(records.alarms)},
        )
        if ordered:
            super().save_records(ordered)
        gone = sorted(d for d, s in states.items() if s is None)
        if gone:
            super().save_records(Records(states=dict.fromkeys(gone)))
