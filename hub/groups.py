"""Groups of devices: a name with one selector, a label the devices carry, the board they report
in their health, or an explicit list of ids. A group carries a desired document that its
devices inherit (hub/desired/); rollouts take their devices from one (``resolve_group``).

Kept in ``<data dir>/desired.sqlite3`` (hub/desired/db.py) with the devices' labels and the
board each device last reported (the hub records it from health). Blocking: the hub calls
it off its event loop. A group resolves to registered devices only, sorted by id.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hub.desired.db import DesiredDbError, open_db
from hub.registry import Registry, RegistryError
from hub.sqlitefile import SqliteFile
from hub.topics import DEVICE_ID_RE

NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,31}\Z")  # group names and labels
BOARD_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}\Z")
KINDS = ("label", "board", "devices")
MAX_GROUPS = 1000
MAX_LABELS = 32  # per device
MAX_LIST = 10_000  # ids in an explicit list
PRIORITY_RANGE = (-1000, 1000)


class GroupError(Exception):
    """A group or label that does not exist or may not be made (the message says why)."""


@dataclass(frozen=True)
class Group:
    name: str
    kind: str  # label, board or devices
    value: str | list[str]  # the label, the board, or the ids
    priority: int
    created_at: float

    def public(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "value": self.value,
            "priority": self.priority,
            "created_at": self.created_at,
        }

    def selector(self) -> str:
        value = ",".join(self.value) if isinstance(self.value, list) else self.value
        return f"{self.kind}={value}"


def check_name(name: str, what: str = "group name") -> str:
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise GroupError(
            f"bad {what} {str(name)[:40]!r}: 1 to 32 of a-z 0-9 - _, the first a letter or digit"
        )
    return name


def check_device(device: str) -> str:
    if not isinstance(device, str) or not DEVICE_ID_RE.match(device):
        raise GroupError(f"bad device id {str(device)[:40]!r}")
    return device


def parse_selector(kind: str, value: str | list[str]) -> str | list[str]:
    """The selector's value checked (ids sorted, without duplicates), or GroupError."""
    if kind == "label":
        return check_name(str(value), "label")
    if kind == "board":
        if not isinstance(value, str) or not BOARD_RE.match(value):
            raise GroupError(f"bad board {str(value)[:40]!r}: 1 to 64 of A-Z a-z 0-9 . - _")
        return value
    if kind == "devices":
        ids = value.split(",") if isinstance(value, str) else value
        if not isinstance(ids, list) or not ids or len(ids) > MAX_LIST:
            raise GroupError(f"a list of devices holds 1 to {MAX_LIST} ids")
        return sorted({check_device(i.strip() if isinstance(i, str) else i) for i in ids})
    raise GroupError(f"a group selects by {', '.join(KINDS)}, not {str(kind)[:20]!r}")


def _row_group(row: Any) -> Group:
    kind = row["kind"]
    value = json.loads(row["value"]) if kind == "devices" else row["value"]
    return Group(row["name"], kind, value, int(row["priority"]), float(row["created_at"]))


class Groups:
    """Groups and labels in the data dir (blocking)."""

    def __init__(self, data_dir: Path, *, db: SqliteFile | None = None) -> None:
        self._data_dir = data_dir
        self._own = db is None
        try:
            self.db = db if db is not None else open_db(data_dir)
        except DesiredDbError as exc:
            raise GroupError(str(exc)) from None

    def close(self) -> None:
        if self._own:
            self.db.close()

    # --- groups ---------------------------------------------------------------------------
    def add(self, name: str, kind: str, value: str | list[str], priority: int = 0) -> Group:
        check_name(name)
        checked = parse_selector(kind, value)
        low, high = PRIORITY_RANGE
        if isinstance(priority, bool) or not isinstance(priority, int):
            raise GroupError("a group's priority is a whole number")
        if not low <= priority <= high:
            raise GroupError(f"a group's priority is from {low} to {high}")
        stored = json.dumps(checked) if kind == "devices" else str(checked)
        group = Group(name, kind, checked, priority, time.time())
        with self.db.lock:
            conn = self.db.conn
            conn.execute("BEGIN IMMEDIATE")
            try:
                if conn.execute("SELECT 1 FROM groups WHERE name = ?", (name,)).fetchone():
                    raise GroupError(f"group {name!r} exists already (remove it first)")
                count = conn.execute("SELECT COUNT(*) FROM groups").fetchone()[0]
                if count >= MAX_GROUPS:
                    raise GroupError(f"at most {MAX_GROUPS} groups")
                conn.execute(
                    "INSERT INTO groups (name, kind, value, priority, created_at) "
                    "VALUES (?, ?, ?, ?, ?)",
                    (name, kind, stored, priority, group.created_at),
                )
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
        return group

    def get(self, name: str) -> Group | None:
        rows = self.db.rows("SELECT * FROM groups WHERE name = ?", (name,))
        return _row_group(rows[0]) if rows else None

    def require(self, name: str) -> Group:
        group = self.get(name) if isinstance(name, str) else None
        if group is None:
            raise GroupError(f"no group {str(name)[:40]!r} (`hub group list` shows them)")
        return group

    def all(self) -> list[Group]:
        return [_row_group(r) for r in self.db.rows("SELECT * FROM groups ORDER BY name")]

    def remove(self, name: str) -> None:
        """The group and its desired document go, in one transaction."""
        with self.db.lock:
            conn = self.db.conn
            conn.execute("BEGIN IMMEDIATE")
            try:
                gone = conn.execute("DELETE FROM groups WHERE name = ?", (name,)).rowcount
                conn.execute("DELETE FROM docs WHERE scope = 'group' AND name = ?", (name,))
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
        if not gone:
            raise GroupError(f"no group {str(name)[:40]!r} (`hub group list` shows them)")

    def members(self, group: Group) -> list[str]:
        """The devices the selector picks (registered or not), sorted."""
        if group.kind == "devices":
            assert isinstance(group.value, list)
            return list(group.value)
        if group.kind == "label":
            sql = "SELECT device FROM labels WHERE label = ? ORDER BY device"
        else:
            sql = "SELECT device FROM reported WHERE board = ? ORDER BY device"
        return [r["device"] for r in self.db.rows(sql, (group.value,))]

    def groups_of(self, device: str, board: str | None = None) -> list[Group]:
        """The groups a device belongs to, in precedence order: highest priority first, then
        by name. ``board`` is the device's board if the caller knows it (else the stored one)."""
        labels = set(self.labels(device))
        if board is None:
            rows = self.db.rows("SELECT board FROM reported WHERE device = ?", (device,))
            board = rows[0]["board"] if rows else None
        found = []
        for group in self.all():
            if (
                (group.kind == "label" and group.value in labels)
                or (group.kind == "board" and board is not None and group.value == board)
                or (group.kind == "devices" and device in group.value)
            ):
                found.append(group)
        return sorted(found, key=lambda g: (-g.priority, g.name))

    # --- labels ---------------------------------------------------------------------------
    def labels(self, device: str) -> list[str]:
        rows = self.db.rows("SELECT label FROM labels WHERE device = ? ORDER BY label", (device,))
        return [r["label"] for r in rows]

    def add_label(self, device: str, label: str) -> bool:
        """False when the device had the label already."""
        check_device(device)
        check_name(label, "label")
        with self.db.lock:
            conn = self.db.conn
            conn.execute("BEGIN IMMEDIATE")
            try:
                have = conn.execute(
                    "SELECT label FROM labels WHERE device = ?", (device,)
                ).fetchall()
                if label in {r[0] for r in have}:
                    conn.execute("ROLLBACK")
                    return False
                if len(have) >= MAX_LABELS:
                    raise GroupError(f"{device!r} has {MAX_LABELS} labels, the most it may have")
                conn.execute("INSERT INTO labels (device, label) VALUES (?, ?)", (device, label))
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
        return True

    def remove_label(self, device: str, label: str) -> bool:
        """False when the device did not have the label."""
        return bool(
            self.db.write("DELETE FROM labels WHERE device = ? AND label = ?", (device, label))
        )

    def record_boards(self, boards: dict[str, str | None]) -> None:
        """The board each device reported in its health (the hub writes it on a change)."""
        now = time.time()
        self.db.write_many(
            "INSERT INTO reported (device, board, updated_at) VALUES (?, ?, ?) "
            "ON CONFLICT (device) DO UPDATE SET board = excluded.board",
            [(d, b, now) for d, b in boards.items()],
        )

    def forget_device(self, device: str) -> None:
        """A removed device: its labels go (its documents are the desired store's)."""
        self.db.write("DELETE FROM labels WHERE device = ?", (device,))


def registered_ids(data_dir: Path) -> set[str]:
    try:
        registry = Registry(data_dir, create=False)
    except RegistryError:
        return set()
    try:
        return {d.id for d in registry.list()}
    finally:
        registry.close()


def resolve_group(data_dir: Path, name: str) -> list[str]:
    """The registered devices of group ``name``, sorted by id; GroupError for an unknown
    group. Blocking (call it off the event loop)."""
    groups = Groups(data_dir)
    try:
        members = groups.members(groups.require(name))
    finally:
        groups.close()
    known = registered_ids(data_dir)
    return [d for d in members if d in known]
