"""One SQLite file of the data dir shared by the hub's threads (the registry, the accounts).

One connection in autocommit mode, WAL (readers never wait for a writer), rows by column name,
and one lock held for a single statement only: never while a password hash runs, never while
a write waits for SQLite's own lock (``timeout``). The file is created owner-only before
SQLite opens it, so its -wal and -shm files take its mode.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterable, Sequence
from pathlib import Path

from hub.config import create_private_file

Params = Sequence[object]


class SqliteFile:
    def __init__(self, path: Path, schema: str) -> None:
        """Opens (or creates) the file and applies the schema; sqlite3.DatabaseError or
        OSError for a file that cannot be used (the caller names it)."""
        create_private_file(path)
        self.path = path
        self.conn = sqlite3.connect(
            path, timeout=5.0, isolation_level=None, check_same_thread=False
        )
        try:
            self.conn.row_factory = sqlite3.Row
            self.conn.execute("PRAGMA journal_mode=WAL")
            self.conn.executescript(schema)
        except BaseException:
            self.conn.close()
            raise
        self.lock = threading.Lock()

    def rows(self, sql: str, params: Params = ()) -> list[sqlite3.Row]:
        with self.lock:
            return self.conn.execute(sql, params).fetchall()

    def write(self, sql: str, params: Params = ()) -> int:
        """Runs a statement; returns how many rows it changed."""
        with self.lock:
            return self.conn.execute(sql, params).rowcount

    def write_many(self, sql: str, rows: Iterable[Params]) -> None:
        """Runs one statement for each row, in one transaction."""
        with self.lock:
            self.conn.execute("BEGIN")
            try:
                self.conn.executemany(sql, rows)
            except BaseException:
                self.conn.execute("ROLLBACK")
                raise
            self.conn.execute("COMMIT")

    def close(self) -> None:
        with self.lock:
            self.conn.close()
