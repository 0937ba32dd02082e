"""``<data dir>/desired.sqlite3`` (WAL): groups, labels, boards, desired documents and what
each device reported. One file, so removing a group removes its document in the same
transaction. Blocking: the hub calls it off its event loop; the CLI writes it directly and a
running hub sees the change through ``PRAGMA data_version``."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from hub.config import DataDirError, prepare_data_dir
from hub.sqlitefile import SqliteFile

DB_FILE = "desired.sqlite3"

SCHEMA = """
CREATE TABLE IF NOT EXISTS groups (
    name TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    value TEXT NOT NULL,
    priority INTEGER NOT NULL DEFAULT 0,
    created_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS labels (
    device TEXT NOT NULL,
    label TEXT NOT NULL,
    PRIMARY KEY (device, label)
);
CREATE INDEX IF NOT EXISTS labels_by_label ON labels (label, device);
CREATE TABLE IF NOT EXISTS docs (
    scope TEXT NOT NULL,
    name TEXT NOT NULL,
    version INTEGER NOT NULL,
    doc TEXT NOT NULL,
    updated_by TEXT NOT NULL,
    updated_at REAL NOT NULL,
    PRIMARY KEY (scope, name)
);
CREATE TABLE IF NOT EXISTS reported (
    device TEXT PRIMARY KEY,
    board TEXT,
    fw TEXT,
    settings TEXT NOT NULL DEFAULT '{}',
    outcome TEXT NOT NULL DEFAULT '{}',
    updated_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS reported_by_board ON reported (board, device);
"""


class DesiredDbError(Exception):
    """The file cannot be opened or used (its path and the reason in the message)."""


def open_db(data_dir: Path, *, create: bool = True) -> SqliteFile:
    try:
        prepare_data_dir(data_dir, create=create)
    except DataDirError as exc:
        raise DesiredDbError(str(exc)) from None
    path = data_dir / DB_FILE
    try:
        return SqliteFile(path, SCHEMA)
    except (sqlite3.DatabaseError, OSError) as exc:
        raise DesiredDbError(f"cannot open {path}: {exc}") from None
