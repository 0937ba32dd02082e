"""Each device's app update, kept in ``<data dir>/ota.sqlite3`` (WAL): what the hub serves it and
the state the device last reported. The CLI writes it (``hub app assign``) and a running hub
picks changes up within a second (``PRAGMA data_version``). Blocking: the hub calls it off its
event loop."""

from __future__ import annotations

import secrets
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

DB_FILE = "ota.sqlite3"
TERMINAL = ("updated", "rolled_back", "failed", "cancelled")
STATES = ("offered", "downloading", "verifying", "installing", "trial", *TERMINAL)
COLUMNS = ("device", "version", "tag", "state", "n", "of", "error", "created_at", "updated_at")
_COLS = ", ".join(f'"{c}"' for c in COLUMNS)
_SCHEMA = """
CREATE TABLE IF NOT EXISTS updates (
    device TEXT PRIMARY KEY, version TEXT NOT NULL, tag TEXT NOT NULL, state TEXT NOT NULL,
    n INTEGER NOT NULL DEFAULT 0, "of" INTEGER NOT NULL DEFAULT 0, error TEXT,
    created_at REAL NOT NULL, updated_at REAL NOT NULL)
"""


class OtaStore:
    def __init__(self, data_dir: Path) -> None:
        self._lock = threading.Lock()
        self._db = sqlite3.connect(data_dir / DB_FILE, check_same_thread=False, timeout=5)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(_SCHEMA)
        self._db.commit()

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def data_version(self) -> int:
        with self._lock:
            return int(self._db.execute("PRAGMA data_version").fetchone()[0])

    def assign(self, device: str, version: str) -> dict[str, Any]:
        """A new update of device to version (a fresh tag: a download starts from its start)."""
        now = time.time()
        row = dict(
            zip(
                COLUMNS,
                (device, version, secrets.token_hex(4), "offered", 0, 0, None, now, now),
                strict=True,
            )
        )
        self.save(row)
        return row

    def save(self, row: dict[str, Any]) -> None:
        with self._lock, self._db:
            self._db.execute(
                f"INSERT OR REPLACE INTO updates ({_COLS}) "
                f"VALUES ({', '.join('?' * len(COLUMNS))})",
                [row[c] for c in COLUMNS],
            )

    def get(self, device: str) -> dict[str, Any] | None:
        with self._lock:
            cur = self._db.execute(f"SELECT {_COLS} FROM updates WHERE device = ?", (device,))
            found = cur.fetchone()
        return dict(zip(COLUMNS, found, strict=True)) if found else None

    def all(self) -> list[dict[str, Any]]:
        with self._lock:
            cur = self._db.execute(f"SELECT {_COLS} FROM updates ORDER BY device")
            return [dict(zip(COLUMNS, r, strict=True)) for r in cur.fetchall()]
