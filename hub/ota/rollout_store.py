"""Rollouts and their devices, kept in ``<data dir>/rollouts.sqlite3`` (WAL). The CLI and the
HTTP API create them and ask for pause, resume and cancel; the hub's engine
(``hub/ota/rollout.py``) reads them every second and writes what it decided. Every status
change is a compare-and-set (``UPDATE ... WHERE status = ?``), so the engine and a user acting
at the same moment never overwrite each other. Blocking: the hub calls it off its event loop.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from hub.ota.bundles import BundleError, Bundles
from hub.ota.rollout_core import (
    ACTIVE,
    FINAL,
    PAUSED,
    RUNNING,
    Member,
    Request,
    Rollout,
    RolloutConflict,
    RolloutError,
    RolloutMissing,
    check_request,
    check_target,
    counts,
    stage_name,
    stage_sizes,
)

DB_FILE = "rollouts.sqlite3"
MAX_KEPT = 1000  # rollouts listed (the newest)
MAX_ACTIVE = 100  # running or paused at once (the engine reads each one every second)
_SCHEMA = """
CREATE TABLE IF NOT EXISTS rollouts (
    id INTEGER PRIMARY KEY AUTOINCREMENT, version TEXT NOT NULL, target TEXT NOT NULL,
    canary INTEGER NOT NULL, steps TEXT NOT NULL, max_per_minute INTEGER NOT NULL,
    abort_failed_pct REAL NOT NULL, timeout_s REAL NOT NULL, status TEXT NOT NULL,
    announced TEXT, step INTEGER NOT NULL DEFAULT 0, reason TEXT, by TEXT,
    created_at REAL NOT NULL, updated_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS rollout_devices (
    rollout INTEGER NOT NULL, device TEXT NOT NULL, position INTEGER NOT NULL,
    state TEXT NOT NULL, error TEXT, tag TEXT, assigned_at REAL, updated_at REAL NOT NULL,
    PRIMARY KEY (rollout, device));
CREATE INDEX IF NOT EXISTS rollout_devices_device ON rollout_devices (device);
"""
_ROLLOUT = (
    "id, version, target, canary, steps, max_per_minute, abort_failed_pct, timeout_s, status, "
    "announced, step, reason, by, created_at, updated_at"
)
_MEMBER = "device, position, state, error, tag, assigned_at, updated_at"
# What a user may ask for, from which status.
ACTIONS = {
    "pause": ((RUNNING,), PAUSED),
    "resume": ((PAUSED,), RUNNING),
    "cancel": (ACTIVE, "cancelled"),
}


def _rollout_dict(row: tuple[Any, ...]) -> dict[str, Any]:
    out = dict(zip(_ROLLOUT.split(", "), row, strict=True))
    out["steps"] = json.loads(out["steps"])
    return out


def _member_dict(row: tuple[Any, ...]) -> dict[str, Any]:
    return dict(zip(_MEMBER.split(", "), row, strict=True))


def as_rollout(row: dict[str, Any]) -> Rollout:
    return Rollout(
        row["id"],
        row["version"],
        row["canary"],
        tuple(row["steps"]),
        row["max_per_minute"],
        row["abort_failed_pct"],
        row["timeout_s"],
        row["status"],
        row["step"],
        row["reason"],
        row["created_at"],
    )


def as_member(row: dict[str, Any]) -> Member:
    return Member(
        row["device"], row["position"], row["state"], row["error"], row["tag"], row["assigned_at"]
    )


class RolloutStore:
    def __init__(self, data_dir: Path) -> None:
        self._lock = threading.Lock()
        self._db = sqlite3.connect(data_dir / DB_FILE, check_same_thread=False, timeout=5)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.executescript(_SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def data_version(self) -> int:
        with self._lock:
            return int(self._db.execute("PRAGMA data_version").fetchone()[0])

    # --- creating ---------------------------------------------------------------------------
    def create(self, request: Request, devices: list[str], target: str, by: str) -> int:
        """A new running rollout of devices (in this order); RolloutError naming a device that
        is in another active rollout already (checked and written in one transaction)."""
        now = time.time()
        with self._lock:
            db = self._db
            db.execute("BEGIN IMMEDIATE")
            try:
                busy = db.execute(
                    "SELECT d.device, r.id FROM rollout_devices d JOIN rollouts r "
                    "ON r.id = d.rollout WHERE r.status IN (?, ?)",
                    ACTIVE,
                ).fetchall()
                taken = dict(busy)
                if len(set(taken.values())) >= MAX_ACTIVE:
                    raise RolloutConflict(
                        f"{MAX_ACTIVE} rollouts are active already: let one end or cancel it"
                    )
                if clash := [d for d in devices if d in taken]:
                    more = f" (and {len(clash) - 1} more)" if len(clash) > 1 else ""
                    raise RolloutConflict(
                        f"{clash[0]}{more} is in rollout {taken[clash[0]]} already, which is "
                        "still active: cancel it or wait until it ends"
                    )
                cur = db.execute(
                    f"INSERT INTO rollouts ({_ROLLOUT}) VALUES "
                    "(NULL, ?, ?, ?, ?, ?, ?, ?, ?, NULL, 0, NULL, ?, ?, ?)",
                    (
                        request.version,
                        target,
                        request.canary,
                        json.dumps(list(request.steps)),
                        request.max_per_minute,
                        request.abort_failed_pct,
                        request.timeout_s,
                        RUNNING,
                        by,
                        now,
                        now,
                    ),
                )
                rid = int(cur.lastrowid or 0)
                db.executemany(
                    f"INSERT INTO rollout_devices ({_MEMBER}, rollout) "
                    "VALUES (?, ?, 'pending', NULL, NULL, NULL, ?, ?)",
                    [(d, i, now, rid) for i, d in enumerate(devices)],
                )
                db.commit()
            except BaseException:
                db.rollback()
                raise
        return rid

    # --- reading ----------------------------------------------------------------------------
    def get(self, rid: int) -> dict[str, Any] | None:
        """The rollout with its devices (in rollout order), or None."""
        with self._lock:
            row = self._db.execute(f"SELECT {_ROLLOUT} FROM rollouts WHERE id = ?", (rid,))
            found = row.fetchone()
            if found is None:
                return None
            members = self._db.execute(
                f"SELECT {_MEMBER} FROM rollout_devices WHERE rollout = ? ORDER BY position",
                (rid,),
            ).fetchall()
        out = _rollout_dict(found)
        out["devices"] = [_member_dict(m) for m in members]
        return out

    def listing(self) -> list[dict[str, Any]]:
        """The newest rollouts first, each with how many devices are in each state."""
        with self._lock:
            rows = self._db.execute(
                f"SELECT {_ROLLOUT} FROM rollouts ORDER BY id DESC LIMIT ?", (MAX_KEPT,)
            ).fetchall()
            tallies = self._db.execute(
                "SELECT rollout, state, COUNT(*) FROM rollout_devices GROUP BY rollout, state"
            ).fetchall()
        by_id: dict[int, dict[str, int]] = {}
        for rid, state, n in tallies:
            by_id.setdefault(rid, {})[state] = n
        out = []
        for row in rows:
            item = _rollout_dict(row)
            item["counts"] = by_id.get(item["id"], {})
            item["total"] = sum(item["counts"].values())
            out.append(item)
        return out

    def active(self) -> list[dict[str, Any]]:
        """The running and paused rollouts, and those whose end is not announced yet."""
        with self._lock:
            ids = [
                r[0]
                for r in self._db.execute(
                    "SELECT id FROM rollouts WHERE status IN (?, ?) "
                    "OR announced IS NULL OR announced != status ORDER BY id",
                    ACTIVE,
                ).fetchall()
            ]
        return [r for rid in ids if (r := self.get(rid)) is not None]

    # --- changing ---------------------------------------------------------------------------
    def act(self, rid: int, action: str, by: str) -> dict[str, Any]:
        """pause, resume or cancel, from the status that allows it; RolloutError otherwise."""
        allowed, new = ACTIONS[action]
        with self._lock, self._db:
            cur = self._db.execute(
                f"UPDATE rollouts SET status = ?, reason = NULL, by = ?, updated_at = ? "
                f"WHERE id = ? AND status IN ({', '.join('?' * len(allowed))})",
                (new, by, time.time(), rid, *allowed),
            )
            changed = cur.rowcount
        found = self.get(rid)
        if found is None:
            raise RolloutMissing(f"no rollout {rid}")
        if not changed:
            raise RolloutConflict(f"rollout {rid} is {found['status']}: it cannot be {new}")
        return found

    def status(self, rid: int) -> str | None:
        with self._lock:
            found = self._db.execute("SELECT status FROM rollouts WHERE id = ?", (rid,))
            row = found.fetchone()
        return str(row[0]) if row else None

    def announce(self, rid: int, status: str) -> None:
        """The engine has published the event of this status."""
        with self._lock, self._db:
            self._db.execute("UPDATE rollouts SET announced = ? WHERE id = ?", (status, rid))

    def finish(self, rid: int, status: str, reason: str | None) -> bool:
        """completed or aborted, if still active (a user may have cancelled it meanwhile)."""
        with self._lock, self._db:
            cur = self._db.execute(
                "UPDATE rollouts SET status = ?, announced = ?, reason = ?, updated_at = ? "
                "WHERE id = ? AND status IN (?, ?)",
                (status, status, reason, time.time(), rid, *ACTIVE),
            )
            return cur.rowcount == 1

    def set_step(self, rid: int, step: int) -> None:
        with self._lock, self._db:
            self._db.execute(
                "UPDATE rollouts SET step = ?, updated_at = ? WHERE id = ?",
                (step, time.time(), rid),
            )

    def set_members(self, rid: int, members: Iterable[Member]) -> None:
        now = time.time()
        with self._lock, self._db:
            self._db.executemany(
                "UPDATE rollout_devices SET state = ?, error = ?, tag = ?, assigned_at = ?, "
                "updated_at = ? WHERE rollout = ? AND device = ?",
                [(m.state, m.error, m.tag, m.assigned_at, now, rid, m.device) for m in members],
            )


def resolve_target(data_dir: Path, request: Request) -> tuple[list[str], str]:
    """The request's devices (a group's, resolved now) and how the target is named."""
    if request.group is None:
        return list(request.devices), "devices"
    from hub.groups import GroupError, resolve_group

    try:
        return list(resolve_group(data_dir, request.group)), f"group {request.group}"
    except GroupError as exc:
        raise RolloutError(str(exc)) from None


def create_rollout(data_dir: Path, raw: dict[str, Any], by: str) -> dict[str, Any]:
    """A new rollout from the CLI's options or the API's body, checked the same way for both:
    the fields (``check_request``), the version's bundle, the target, and no device in another
    active rollout. Blocking. Returns the stored rollout; RolloutError says what is wrong."""
    request = check_request(raw)
    try:
        Bundles(data_dir).get(request.version)
    except BundleError as exc:
        raise RolloutError(str(exc)) from None
    devices, target = resolve_target(data_dir, request)
    check_target(request, devices)
    store = RolloutStore(data_dir)
    try:
        rid = store.create(request, devices, target, by)
        found = store.get(rid)
    finally:
        store.close()
    assert found is not None
    return found


def progress(found: dict[str, Any]) -> dict[str, Any]:
    """A stored rollout with its stages (each one's devices, how many are done, the current
    one), each device's stage and the count of devices per state: what status shows."""
    rollout = as_rollout(found)
    members = found["devices"]
    sizes = stage_sizes(len(members), rollout.canary, rollout.steps)
    stages = []
    start = 0
    for i, size in enumerate(sizes):
        names = [m["device"] for m in members[start:size]]
        for m in members[start:size]:
            m["stage"] = stage_name(rollout, i)
        stages.append(
            {
                "step": i,
                "name": stage_name(rollout, i),
                "devices": size,
                "new": len(names),
                "done": sum(1 for m in members[:size] if m["state"] in FINAL),
                "current": i == rollout.step and rollout.status in ACTIVE,
            }
        )
        start = size
    out = dict(found)
    out["stages"] = stages
    out["counts"] = counts([as_member(m) for m in members])
    return out
