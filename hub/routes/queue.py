"""The routes' durable state: one SQLite file in the data dir (``routes.sqlite3``).

Each route's queue of messages waiting for delivery, its dead letters (messages it gave up on,
with the last status and error) and its counters. A message leaves the queue in the same
transaction that counts it delivered or moves it to the dead letters, so a hub that stops (or
crashes) in the middle of a delivery delivers it again after the restart: at least once.
Every method blocks: the hub calls them off the event loop (one thread per route worker, the
commit log's thread for appends); `hub route` calls them directly.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hub.config import create_private_file

FILE = "routes.sqlite3"
BUSY_TIMEOUT_S = 5.0
SCHEMA = """
CREATE TABLE IF NOT EXISTS queue (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    route TEXT NOT NULL,
    topic TEXT NOT NULL,
    payload BLOB NOT NULL,
    device TEXT,
    sensor TEXT,
    time REAL NOT NULL,
    origin TEXT NOT NULL DEFAULT '',
    retain INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS queue_by_route ON queue (route, id);
CREATE TABLE IF NOT EXISTS dead (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    route TEXT NOT NULL,
    topic TEXT NOT NULL,
    payload BLOB NOT NULL,
    device TEXT,
    sensor TEXT,
    time REAL NOT NULL,
    origin TEXT NOT NULL DEFAULT '',
    retain INTEGER NOT NULL DEFAULT 0,
    attempts INTEGER NOT NULL,
    status TEXT NOT NULL,
    error TEXT NOT NULL,
    failed_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS dead_by_route ON dead (route, id);
CREATE TABLE IF NOT EXISTS counters (
    route TEXT PRIMARY KEY,
    delivered INTEGER NOT NULL DEFAULT 0,
    retries INTEGER NOT NULL DEFAULT 0,
    dead INTEGER NOT NULL DEFAULT 0,
    loops INTEGER NOT NULL DEFAULT 0
);
"""
COUNTERS = ("delivered", "retries", "dead", "loops")
# (route, topic, payload, device, sensor, time, origin, retain): a message to queue.
Row = tuple[str, str, bytes, str | None, str | None, float, str, bool]


@dataclass(frozen=True)
class Queued:
    """A message in a route's queue."""

    id: int
    route: str
    topic: str
    payload: bytes
    device: str | None
    sensor: str | None
    time: float
    origin: str  # the routes that produced it, comma-separated ("" for a client's message)
    retain: bool = False  # it was retained as it passed the broker


@dataclass(frozen=True)
class Failure:
    """Why a message became a dead letter."""

    attempts: int
    status: str  # an HTTP status, "timeout", "refused", "error"...
    error: str


class RouteDb:
    def __init__(self, data_dir: Path, *, create: bool = True) -> None:
        self.path = data_dir / FILE
        if not create and not self.path.exists():
            raise FileNotFoundError(f"no routes state in {data_dir} (no route has run there)")
        create_private_file(self.path)
        self._db = sqlite3.connect(
            self.path, timeout=BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False
        )
        self._lock = threading.Lock()  # one connection, used by several threads in turn
        with self._lock:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.executescript(SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def append(self, rows: list[Row]) -> None:
        """Queues (route, topic, payload, device, sensor, time, origin, retain) rows in one
        commit."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.executemany(
                    "INSERT INTO queue (route, topic, payload, device, sensor, time, origin, "
                    "retain) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    rows,
                )
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    def pending(self, route: str, limit: int) -> list[Queued]:
        """The oldest messages waiting for a route, in the order they arrived."""
        with self._lock:
            rows = self._db.execute(
                "SELECT id, route, topic, payload, device, sensor, time, origin, retain "
                "FROM queue WHERE route = ? ORDER BY id LIMIT ?",
                (route, limit),
            ).fetchall()
        return [
            Queued(r[0], r[1], r[2], bytes(r[3]), r[4], r[5], r[6], r[7], bool(r[8])) for r in rows
        ]

    def depth(self, route: str) -> int:
        with self._lock:
            row = self._db.execute("SELECT COUNT(*) FROM queue WHERE route = ?", (route,))
            return int(row.fetchone()[0])

    def finish(
        self,
        route: str,
        delivered: list[int],
        dead: list[tuple[Queued, Failure]],
        retries: int,
        loops: int = 0,
    ) -> None:
        """Takes delivered and dead messages out of the queue (the dead into the dead
        letters) and counts them, in one transaction."""
        now = time.time()
        with self._lock:
            # Not fsynced on its own: a crash that loses it delivers those messages again (at
            # least once still holds); the next append's commit makes it durable too.
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute("BEGIN IMMEDIATE")
            try:
                done = delivered + [q.id for q, _ in dead]
                self._db.executemany("DELETE FROM queue WHERE id = ?", [(i,) for i in done])
                self._db.executemany(
                    "INSERT INTO dead (route, topic, payload, device, sensor, time, origin, "
                    "retain, attempts, status, error, failed_at) "
                    "VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                    [
                        (
                            q.route,
                            q.topic,
                            q.payload,
                            q.device,
                            q.sensor,
                            q.time,
                            q.origin,
                            q.retain,
                            f.attempts,
                            f.status[:64],
                            f.error[:500],
                            now,
                        )
                        for q, f in dead
                    ],
                )
                self._count(
                    route, delivered=len(delivered), retries=retries, dead=len(dead), loops=loops
                )
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            finally:
                self._db.execute("PRAGMA synchronous=FULL")

    def count(self, route: str, **deltas: int) -> None:
        with self._lock:
            self._count(route, **deltas)

    def _count(self, route: str, **deltas: int) -> None:
        self._db.execute("INSERT OR IGNORE INTO counters (route) VALUES (?)", (route,))
        sets = ", ".join(f"{name} = {name} + ?" for name in deltas if name in COUNTERS)
        if sets:
            values = [v for k, v in deltas.items() if k in COUNTERS]
            self._db.execute(f"UPDATE counters SET {sets} WHERE route = ?", [*values, route])

    def counters(self) -> dict[str, dict[str, int]]:
        """Every route's counters (including routes no longer configured) and queue depth."""
        with self._lock:
            rows = self._db.execute(
                "SELECT route, delivered, retries, dead, loops FROM counters"
            ).fetchall()
            depths = dict(
                self._db.execute("SELECT route, COUNT(*) FROM queue GROUP BY route").fetchall()
            )
        out = {r[0]: dict(zip(COUNTERS, r[1:], strict=True)) for r in rows}
        for route, depth in depths.items():
            out.setdefault(route, dict.fromkeys(COUNTERS, 0))["queued"] = depth
        for counters in out.values():
            counters.setdefault("queued", 0)
        return out

    def dead_letters(self, route: str, limit: int = 1000) -> list[dict[str, Any]]:
        """A route's dead letters, oldest first."""
        with self._lock:
            rows = self._db.execute(
                "SELECT id, topic, payload, device, sensor, time, attempts, status, error, "
                "failed_at FROM dead WHERE route = ? ORDER BY id LIMIT ?",
                (route, limit),
            ).fetchall()
        keys = (
            "id",
            "topic",
            "payload",
            "device",
            "sensor",
            "time",
            "attempts",
            "status",
            "error",
            "failed_at",
        )
        out = []
        for row in rows:
            letter = dict(zip(keys, row, strict=True))
            letter["payload"] = bytes(letter["payload"]).decode("utf-8", "replace")
            out.append(letter)
        return out

    def replay(self, route: str) -> int:
        """Moves a route's dead letters back into its queue (behind what waits there);
        returns how many."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                moved = self._db.execute(
                    "INSERT INTO queue (route, topic, payload, device, sensor, time, origin, "
                    "retain) SELECT route, topic, payload, device, sensor, time, origin, retain "
                    "FROM dead "
                    "WHERE route = ? ORDER BY id",
                    (route,),
                ).rowcount
                self._db.execute("DELETE FROM dead WHERE route = ?", (route,))
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return int(moved)
