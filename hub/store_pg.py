"""Telemetry storage in PostgreSQL, behind the same interface as the SQLite store.

Selected with ``hub serve --store postgresql://USER@HOST:PORT/DB``. The same exactly-once key
(device, boot, seq); a batch is one INSERT ... ON CONFLICT DO NOTHING over arrays.
"""

from __future__ import annotations

import threading

import psycopg

from hub.store import Row, SqlHistory, StoreError

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
_INSERT = """
INSERT INTO readings (device, boot, seq, sensor, value, received_at)
SELECT * FROM unnest(%s::text[], %s::text[], %s::bigint[], %s::text[], %s::float8[],
                     %s::float8[])
ON CONFLICT DO NOTHING
"""


class PostgresStore(SqlHistory):
    _MARK = "%s"

    def __init__(self, url: str) -> None:
        try:
            self._db = psycopg.connect(url, autocommit=True, connect_timeout=10)
            self._db.execute(SCHEMA)
        except psycopg.Error as exc:
            # The message names the server and the problem; never the password in the URL.
            raise StoreError(f"cannot use the PostgreSQL store: {str(exc).strip()}") from exc
        self._lock = threading.Lock()

    def add(self, rows: list[Row]) -> int:
        if not rows:
            return 0
        columns = list(zip(*((r.device, r.boot, r.seq, r.sensor, r.value, r.received_at)
                             for r in rows), strict=True))  # fmt: skip
        with self._lock:
            cursor = self._db.execute(_INSERT, [list(c) for c in columns])
            return max(cursor.rowcount, 0)
