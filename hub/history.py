"""The fleet console's tables beside the readings: each device's last known state, health
history, device events, commands and alarms; and the downsampling queries behind the charts.

One schema and the same SQL for SQLite and PostgreSQL (SQLite takes PostgreSQL's type names
with the right affinity), but for the parameter mark and the bucket expression. Plain blocking
code: the hub calls it from threads, in batches. A subclass (hub/store.py) provides ``_MARK``,
``_BUCKET`` (the expression that floors a non-negative number), the DB-API connection ``_db``
and the ``_lock`` guarding it.
"""

from __future__ import annotations

import contextlib
import json
import math
import threading
from dataclasses import dataclass, field
from typing import Any

SCHEMA = """
CREATE TABLE IF NOT EXISTS device_state (
    device TEXT PRIMARY KEY,
    state TEXT NOT NULL,
    updated_at DOUBLE PRECISION NOT NULL
);
CREATE TABLE IF NOT EXISTS health (
    device TEXT NOT NULL,
    at DOUBLE PRECISION NOT NULL,
    heap DOUBLE PRECISION,
    rssi DOUBLE PRECISION,
    reconnects DOUBLE PRECISION,
    queue DOUBLE PRECISION
);
CREATE INDEX IF NOT EXISTS health_by_time ON health (device, at);
CREATE TABLE IF NOT EXISTS device_events (
    device TEXT NOT NULL,
    at DOUBLE PRECISION NOT NULL,
    event TEXT NOT NULL,
    detail TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS device_events_by_time ON device_events (device, at);
CREATE TABLE IF NOT EXISTS commands (
    id BIGINT PRIMARY KEY,
    device TEXT NOT NULL,
    by_name TEXT NOT NULL,
    op TEXT NOT NULL,
    body TEXT NOT NULL,
    sent_at DOUBLE PRECISION NOT NULL,
    status TEXT NOT NULL,
    reply TEXT,
    replied_at DOUBLE PRECISION,
    expires_at DOUBLE PRECISION NOT NULL
);
CREATE INDEX IF NOT EXISTS commands_by_device ON commands (device, sent_at);
CREATE TABLE IF NOT EXISTS alarm_rules (
    id BIGINT PRIMARY KEY,
    rule TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS alarms (
    id BIGINT PRIMARY KEY,
    rule_id BIGINT NOT NULL,
    device TEXT NOT NULL,
    alarm TEXT NOT NULL,
    cleared_at DOUBLE PRECISION,
    acknowledged_by TEXT,
    acknowledged_at DOUBLE PRECISION
);
"""
HEALTH_FIELDS = ("heap", "rssi", "reconnects", "queue")
MAX_SERIES_POINTS = 10_000


@dataclass
class Records:
    """What the hub writes in one batch besides readings."""

    states: dict[str, dict[str, Any] | None] = field(default_factory=dict)  # None: removed
    health: list[tuple[str, float, Any, Any, Any, Any]] = field(default_factory=list)
    events: list[tuple[str, float, str, str]] = field(default_factory=list)
    commands: dict[int, dict[str, Any]] = field(default_factory=dict)
    alarms: dict[int, dict[str, Any]] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.states or self.health or self.events or self.commands or self.alarms)

    def merge(self, newer: Records) -> None:
        """Folds a newer batch into this one (a batch that failed, kept for a retry)."""
        self.states.update(newer.states)
        self.health.extend(newer.health)
        self.events.extend(newer.events)
        self.commands.update(newer.commands)
        self.alarms.update(newer.alarms)


def bucket_for(since: float, until: float, points: int) -> float:
    """The bucket width that puts a window into at most ``points`` buckets (whole seconds
    once above one, so the buckets line up between requests)."""
    width = (until - since) / points
    return float(math.ceil(width)) if width > 1 else max(width, 1e-3)


def series_query(
    mark: str,
    floor: str,
    device: str,
    sensors: list[str],
    since: float,
    until: float,
    bucket: float,
) -> tuple[str, list[object]]:
    """Min, max, mean and count per sensor and bucket of [since, until); bucket 0 means the
    raw readings. Buckets without readings are absent."""
    where = f"device = {mark} AND received_at >= {mark} AND received_at < {mark}"
    params: list[object] = [device, since, until]
    if sensors:
        where += f" AND sensor IN ({', '.join([mark] * len(sensors))})"
        params += sensors
    if bucket <= 0:
        sql = (
            "SELECT sensor, received_at, value, value, value, 1 FROM readings"
            f" WHERE {where} ORDER BY sensor, received_at, seq"
        )
        return sql, params
    index = floor.format(f"(received_at - {mark}) / {mark}")
    sql = (
        f"SELECT sensor, {index} AS b, MIN(value), MAX(value), AVG(value), COUNT(*)"
        f" FROM readings WHERE {where} GROUP BY sensor, b ORDER BY sensor, b"
    )
    return sql, [since, bucket, *params]


def health_query(
    mark: str, floor: str, device: str, since: float, until: float, bucket: float
) -> tuple[str, list[object]]:
    """Health history of [since, until): raw rows (bucket 0) or the mean per bucket."""
    where = f"device = {mark} AND at >= {mark} AND at < {mark}"
    params: list[object] = [device, since, until]
    if bucket <= 0:
        return f"SELECT at, heap, rssi, reconnects, queue FROM health WHERE {where} ORDER BY at", (
            params
        )
    index = floor.format(f"(at - {mark}) / {mark}")
    sql = (
        f"SELECT {index} AS b, AVG(heap), AVG(rssi), AVG(reconnects), AVG(queue)"
        f" FROM health WHERE {where} GROUP BY b ORDER BY b"
    )
    return sql, [since, bucket, *params]


class RecordsSql:
    """The console's tables on a DB-API connection; mixed into the stores."""

    _MARK = "?"
    _BUCKET = "CAST({} AS INTEGER)"  # SQLite truncates, which floors a non-negative number
    _BEGIN = "BEGIN IMMEDIATE"
    _db: Any
    _lock: threading.Lock

    def _upsert(self, table: str, key: str, columns: list[str]) -> str:
        marks = ", ".join([self._MARK] * (len(columns) + 1))
        updates = ", ".join(f"{c} = excluded.{c}" for c in columns)
        return (
            f"INSERT INTO {table} ({key}, {', '.join(columns)}) VALUES ({marks})"
            f" ON CONFLICT ({key}) DO UPDATE SET {updates}"
        )

    def _transaction(self, statements: list[tuple[str, list[Any]]]) -> None:
        """Runs executemany statements as one transaction (autocommit connections)."""
        self._db.execute(self._BEGIN)
        try:
            for sql, rows in statements:
                if rows:
                    self._db.cursor().executemany(sql, rows)
            self._db.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(Exception):  # it may have rolled back already
                self._db.execute("ROLLBACK")
            raise

    def save_records(self, records: Records) -> None:
        """Writes one batch of console records in one transaction."""
        m = self._MARK
        now_states = [
            (d, json.dumps(s), s.get("last_seen") or 0.0)
            for d, s in records.states.items()
            if s is not None
        ]
        gone = [(d,) for d, s in records.states.items() if s is None]
        commands = [
            (
                c["id"],
                c["device"],
                c["by"],
                c["op"],
                json.dumps(c["body"]),
                c["sent_at"],
                c["status"],
                None if c["reply"] is None else json.dumps(c["reply"]),
                c["replied_at"],
                c["expires_at"],
            )
            for c in records.commands.values()
        ]
        alarms = [
            (a["id"], a["rule"], a["device"], json.dumps(a), a.get("cleared_at"))
            for a in records.alarms.values()
        ]
        with self._lock:
            self._transaction(
                [
                    (self._upsert("device_state", "device", ["state", "updated_at"]), now_states),
                    (f"DELETE FROM device_state WHERE device = {m}", gone),
                    (
                        f"INSERT INTO health (device, at, heap, rssi, reconnects, queue)"
                        f" VALUES ({m}, {m}, {m}, {m}, {m}, {m})",
                        list(records.health),
                    ),
                    (
                        f"INSERT INTO device_events (device, at, event, detail)"
                        f" VALUES ({m}, {m}, {m}, {m})",
                        list(records.events),
                    ),
                    (
                        self._upsert(
                            "commands",
                            "id",
                            [
                                "device",
                                "by_name",
                                "op",
                                "body",
                                "sent_at",
                                "status",
                                "reply",
                                "replied_at",
                                "expires_at",
                            ],
                        ),
                        commands,
                    ),
                    (
                        self._upsert("alarms", "id", ["rule_id", "device", "alarm", "cleared_at"]),
                        alarms,
                    ),
                ]
            )

    def load_states(self) -> dict[str, dict[str, Any]]:
        with self._lock:
            rows = self._db.execute("SELECT device, state FROM device_state").fetchall()
        return {device: json.loads(state) for device, state in rows}

    def series(
        self, device: str, sensors: list[str], since: float, until: float, points: int
    ) -> tuple[float, dict[str, dict[str, list[float]]]]:
        """(bucket_s, {sensor: {t, min, max, mean, n}}): raw when each sensor has at most
        ``points`` readings in the window, else downsampled in SQL."""
        m = self._MARK
        where = f"device = {m} AND received_at >= {m} AND received_at < {m}"
        params: list[object] = [device, since, until]
        if sensors:
            where += f" AND sensor IN ({', '.join([m] * len(sensors))})"
            params += sensors
        count_sql = f"SELECT sensor, COUNT(*) FROM readings WHERE {where} GROUP BY sensor"
        with self._lock:
            counts = dict(self._db.execute(count_sql, params).fetchall())
            bucket = 0.0
            if counts and max(counts.values()) > points:
                bucket = bucket_for(since, until, points)
            sql, args = series_query(m, self._BUCKET, device, sensors, since, until, bucket)
            rows = self._db.execute(sql, args).fetchall()
        out: dict[str, dict[str, list[float]]] = {}
        for sensor, t, low, high, mean, n in rows:
            series = out.setdefault(sensor, {"t": [], "min": [], "max": [], "mean": [], "n": []})
            series["t"].append(float(t) if bucket == 0 else since + int(t) * bucket)
            series["min"].append(low)
            series["max"].append(high)
            series["mean"].append(mean)
            series["n"].append(int(n))
        return bucket, out

    def health_series(
        self, device: str, since: float, until: float, points: int
    ) -> tuple[float, dict[str, list[Any]]]:
        m = self._MARK
        count_sql = f"SELECT COUNT(*) FROM health WHERE device = {m} AND at >= {m} AND at < {m}"
        with self._lock:
            (count,) = self._db.execute(count_sql, [device, since, until]).fetchone()
            bucket = bucket_for(since, until, points) if count > points else 0.0
            sql, args = health_query(m, self._BUCKET, device, since, until, bucket)
            rows = self._db.execute(sql, args).fetchall()
        out: dict[str, list[Any]] = {"t": [], **{f: [] for f in HEALTH_FIELDS}}
        for t, *values in rows:
            out["t"].append(float(t) if bucket == 0 else since + int(t) * bucket)
            for name, value in zip(HEALTH_FIELDS, values, strict=True):
                out[name].append(value)
        return bucket, out

    def device_history(self, device: str, limit: int) -> dict[str, list[dict[str, Any]]]:
        m = self._MARK
        with self._lock:
            commands = self._db.execute(
                "SELECT id, by_name, op, body, sent_at, status, reply, replied_at, expires_at"
                f" FROM commands WHERE device = {m} ORDER BY sent_at DESC, id DESC LIMIT {m}",
                [device, limit],
            ).fetchall()
            events = self._db.execute(
                f"SELECT at, event, detail FROM device_events WHERE device = {m}"
                f" ORDER BY at DESC LIMIT {m}",
                [device, limit],
            ).fetchall()
        return {
            "commands": [command_row(device, r) for r in commands],
            "events": [
                {**json.loads(detail), "time": at, "event": event} for at, event, detail in events
            ],
        }

    def command(self, command_id: int) -> dict[str, Any] | None:
        m = self._MARK
        with self._lock:
            row = self._db.execute(
                "SELECT id, by_name, op, body, sent_at, status, reply, replied_at, expires_at,"
                f" device FROM commands WHERE id = {m}",
                [command_id],
            ).fetchone()
        return None if row is None else command_row(row[-1], row[:-1])

    def pending_commands(self) -> list[dict[str, Any]]:
        with self._lock:
            rows = self._db.execute(
                "SELECT id, by_name, op, body, sent_at, status, reply, replied_at, expires_at,"
                " device FROM commands WHERE status = 'pending'"
            ).fetchall()
        return [command_row(r[-1], r[:-1]) for r in rows]

    def max_command_id(self) -> int:
        with self._lock:
            (top,) = self._db.execute("SELECT MAX(id) FROM commands").fetchone()
        return int(top or 0)

    def prune_records(self, cutoff: float) -> None:
        m = self._MARK
        with self._lock:
            self._transaction(
                [
                    (f"DELETE FROM health WHERE at < {m}", [(cutoff,)]),
                    (f"DELETE FROM device_events WHERE at < {m}", [(cutoff,)]),
                    (
                        f"DELETE FROM commands WHERE sent_at < {m} AND status <> 'pending'",
                        [(cutoff,)],
                    ),
                    (f"DELETE FROM alarms WHERE cleared_at < {m}", [(cutoff,)]),
                ]
            )

    # --- alarm rules and alarms (the CLI writes rules too) -----------------------------------
    def alarm_rules(self) -> list[dict[str, Any]]:
        with self._lock:
            rows = self._db.execute("SELECT rule FROM alarm_rules ORDER BY id").fetchall()
        return [json.loads(r[0]) for r in rows]

    def save_alarm_rule(self, rule: dict[str, Any]) -> dict[str, Any]:
        """Stores a new rule under the next free id and returns it."""
        m = self._MARK
        with self._lock:
            self._db.execute(self._BEGIN)
            try:
                (top,) = self._db.execute("SELECT MAX(id) FROM alarm_rules").fetchone()
                rule = {**rule, "id": int(top or 0) + 1}
                self._db.execute(
                    f"INSERT INTO alarm_rules (id, rule) VALUES ({m}, {m})",
                    [rule["id"], json.dumps(rule)],
                )
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return rule

    def remove_alarm_rule(self, rule_id: int) -> bool:
        with self._lock:
            cursor = self._db.execute(
                f"DELETE FROM alarm_rules WHERE id = {self._MARK}", [rule_id]
            )
            return bool(cursor.rowcount)

    def alarms(self) -> list[dict[str, Any]]:
        """Every stored alarm with its acknowledgement (which the CLI may have written)."""
        with self._lock:
            rows = self._db.execute(
                "SELECT alarm, acknowledged_by, acknowledged_at FROM alarms ORDER BY id"
            ).fetchall()
        out = []
        for alarm, by, at in rows:
            record = json.loads(alarm)
            if by is not None and record.get("acknowledged_by") is None:
                record.update(acknowledged_by=by, acknowledged_at=at)
            out.append(record)
        return out

    def alarm_acks(self, ids: list[int]) -> list[tuple[int, str, float]]:
        """Acknowledgements the CLI wrote for these alarms: (id, by, at)."""
        if not ids:
            return []
        marks = ", ".join([self._MARK] * len(ids))
        with self._lock:
            rows = self._db.execute(
                "SELECT id, acknowledged_by, acknowledged_at FROM alarms"
                f" WHERE acknowledged_by IS NOT NULL AND id IN ({marks})",
                list(ids),
            ).fetchall()
        return [(int(i), str(by), float(at)) for i, by, at in rows]

    def acknowledge_alarm(self, alarm_id: int, by: str, at: float) -> bool:
        """Marks an alarm acknowledged (the CLI's way; the hub picks it up and reports it)."""
        m = self._MARK
        with self._lock:
            cursor = self._db.execute(
                f"UPDATE alarms SET acknowledged_by = {m}, acknowledged_at = {m}"
                f" WHERE id = {m} AND acknowledged_by IS NULL",
                [by, at, alarm_id],
            )
            return bool(cursor.rowcount)


def command_row(device: str, row: Any) -> dict[str, Any]:
    cid, by, op, body, sent_at, status, reply, replied_at, expires_at = row
    return {
        "id": int(cid),
        "device": device,
        "by": by,
        "op": op,
        "body": json.loads(body),
        "sent_at": sent_at,
        "status": status,
        "reply": None if reply is None else json.loads(reply),
        "replied_at": replied_at,
        "expires_at": expires_at,
    }
