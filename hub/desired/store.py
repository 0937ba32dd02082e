"""Desired documents (per device and per group, each with its own version) and what each
device reported, in ``<data dir>/desired.sqlite3``. Blocking: the hub calls it off its event
loop; the CLI uses it directly (a running hub sees the change within a second).

Every write names the version it was based on (``base``): a document that has moved on since
is refused with DesiredConflict, and nothing is written. A document's version starts at 1 and
grows by one with each write; version 0 means "no document yet".
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hub.desired.db import DesiredDbError, open_db
from hub.desired.document import DocumentError, check_document, check_value, merge
from hub.groups import Group, GroupError, Groups, check_device, check_name

SCOPES = ("device", "group")


class DesiredError(Exception):
    """A write that is refused (the message says why); nothing was written."""


class DesiredConflict(DesiredError):
    """The write was based on a version that is no longer the document's."""


@dataclass(frozen=True)
class Doc:
    scope: str
    name: str
    version: int
    doc: dict[str, Any]
    updated_by: str | None
    updated_at: float | None

    def public(self) -> dict[str, Any]:
        return {
            "scope": self.scope,
            "name": self.name,
            "version": self.version,
            "desired": self.doc,
            "updated_by": self.updated_by,
            "updated_at": self.updated_at,
        }


def empty_reported(device: str) -> dict[str, Any]:
    return {
        "device": device,
        "board": None,
        "fw": None,
        "settings": {},
        "outcome": {},
        "updated_at": None,
    }


@dataclass
class Snapshot:
    """Everything the hub's service needs, read in one go."""

    groups: list[Group]
    labels: dict[str, set[str]]
    docs: dict[tuple[str, str], Doc]
    reported: dict[str, dict[str, Any]]

    def members(self, group: Group) -> set[str]:
        """The devices the group's selector picks (registered or not)."""
        if group.kind == "label":
            return {d for d, labels in self.labels.items() if group.value in labels}
        if group.kind == "board":
            return {d for d, row in self.reported.items() if row["board"] == group.value}
        return set(group.value)

    def groups_of(self, device: str) -> list[Group]:
        """Highest precedence first: highest priority, then name."""
        labels = self.labels.get(device, set())
        board = self.reported.get(device, {}).get("board")
        found = [
            g
            for g in self.groups
            if (g.kind == "label" and g.value in labels)
            or (g.kind == "board" and board is not None and g.value == board)
            or (g.kind == "devices" and device in g.value)
        ]
        return sorted(found, key=lambda g: (-g.priority, g.name))

    def effective(self, device: str) -> tuple[dict[str, Any], dict[str, str]]:
        """The device's desired state and where each key comes from (``device`` or
        ``group:NAME``)."""
        layers: list[tuple[str, dict[str, Any]]] = []
        for group in reversed(self.groups_of(device)):  # lowest precedence first
            doc = self.docs.get(("group", group.name))
            if doc is not None:
                layers.append((f"group:{group.name}", doc.doc))
        own = self.docs.get(("device", device))
        if own is not None:
            layers.append(("device", own.doc))
        desired = merge(layer for _, layer in layers)
        sources: dict[str, str] = {}
        for source, layer in layers:
            for key in layer:
                if key in desired and desired[key] == layer[key]:
                    sources[key] = source
        return desired, {k: sources[k] for k in desired if k in sources}


def _doc(row: Any) -> Doc:
    return Doc(
        row["scope"],
        row["name"],
        int(row["version"]),
        json.loads(row["doc"]),
        row["updated_by"],
        float(row["updated_at"]),
    )


def _reported(row: Any) -> dict[str, Any]:
    out = empty_reported(row["device"])
    out.update(
        board=row["board"],
        fw=row["fw"],
        settings=json.loads(row["settings"]),
        outcome=json.loads(row["outcome"]),
        updated_at=row["updated_at"],
    )
    return out


class DesiredStore:
    def __init__(self, data_dir: Path) -> None:
        try:
            self.db = open_db(data_dir)
        except DesiredDbError as exc:
            raise DesiredError(str(exc)) from None
        self.groups = Groups(data_dir, db=self.db)

    def close(self) -> None:
        self.db.close()

    def data_version(self) -> int:
        return int(self.db.rows("PRAGMA data_version")[0][0])

    # --- documents --------------------------------------------------------------------------
    def get(self, scope: str, name: str) -> Doc:
        """The document (version 0 and empty when there is none)."""
        rows = self.db.rows("SELECT * FROM docs WHERE scope = ? AND name = ?", (scope, name))
        return _doc(rows[0]) if rows else Doc(scope, name, 0, {}, None, None)

    def _check_target(self, scope: str, name: str) -> None:
        try:
            if scope == "device":
                check_device(name)
            elif scope == "group":
                check_name(name)
                self.groups.require(name)
            else:
                raise DesiredError(f"a desired document is a device's or a group's, not {scope}")
        except GroupError as exc:
            raise DesiredError(str(exc)) from None

    def write(
        self,
        scope: str,
        name: str,
        by: str,
        *,
        base: int | None,
        replace: Mapping[str, Any] | None = None,
        changes: Mapping[str, Any] | None = None,
        unset: Iterable[str] = (),
    ) -> Doc:
        """A new version of the document: ``replace`` it whole, or apply ``changes`` and
        ``unset`` to it. ``base`` is the version the caller read (None: no check, for the
        CLI without --if-version). DesiredConflict for a stale base; DesiredError (its
        DocumentError cause: DocumentTooLarge over the limit) for a bad document."""
        self._check_target(scope, name)
        with self.db.lock:
            conn = self.db.conn
            conn.execute("BEGIN IMMEDIATE")
            try:
                found = conn.execute(
                    "SELECT * FROM docs WHERE scope = ? AND name = ?", (scope, name)
                ).fetchone()
                old = _doc(found) if found else Doc(scope, name, 0, {}, None, None)
                if base is not None and base != old.version:
                    raise DesiredConflict(
                        f"the desired state of {scope} {name!r} is at version {old.version}, "
                        f"not {base}: read it again and retry"
                    )
                if replace is not None:
                    new = dict(replace)
                else:
                    new = dict(old.doc)
                    for key in unset:
                        if key not in new:
                            raise DocumentError(f"{key[:40]!r} is not set in this document")
                        del new[key]
                    new = merge([new, dict(changes or {})])
                new = check_document(new)
                doc = Doc(scope, name, old.version + 1, new, by[:64], time.time())
                conn.execute(
                    "INSERT OR REPLACE INTO docs (scope, name, version, doc, updated_by, "
                    "updated_at) VALUES (?, ?, ?, ?, ?, ?)",
                    (scope, name, doc.version, json.dumps(new), doc.updated_by, doc.updated_at),
                )
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
        return doc

    def set_device_app(self, device: str, version: str, by: str) -> None:
        """A per-device override of ``app`` (for rollouts), with no version check."""
        try:
            check_value("app", version)
        except DocumentError as exc:
            raise DesiredError(str(exc)) from None
        self.write("device", device, by, base=None, changes={"app": version})

    # --- reported ---------------------------------------------------------------------------
    def reported(self, device: str) -> dict[str, Any]:
        rows = self.db.rows("SELECT * FROM reported WHERE device = ?", (device,))
        return _reported(rows[0]) if rows else empty_reported(device)

    def save_reported(self, rows: Iterable[Mapping[str, Any]]) -> None:
        self.db.write_many(
            "INSERT OR REPLACE INTO reported (device, board, fw, settings, outcome, updated_at) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            [
                (
                    r["device"],
                    r["board"],
                    r["fw"],
                    json.dumps(r["settings"]),
                    json.dumps(r["outcome"]),
                    r["updated_at"] or time.time(),
                )
                for r in rows
            ],
        )

    def snapshot(self) -> Snapshot:
        labels: dict[str, set[str]] = {}
        for row in self.db.rows("SELECT device, label FROM labels"):
            labels.setdefault(row["device"], set()).add(row["label"])
        return Snapshot(
            self.groups.all(),
            labels,
            {(d.scope, d.name): d for d in map(_doc, self.db.rows("SELECT * FROM docs"))},
            {r["device"]: r for r in map(_reported, self.db.rows("SELECT * FROM reported"))},
        )
