"""Groups by label, board and list, labels, and `hub group` / `hub device label`, without a
running hub."""

import json
import sqlite3
from pathlib import Path

import pytest

from hub.groups import MAX_LABELS, GroupError, Groups, resolve_group
from hub.registry import Registry
from tests.support.hubproc import hub_cli


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    data = tmp_path / "data"
    registry = Registry(data)
    for device in ("dev-a", "dev-b", "dev-c"):
        registry.add(device)
    registry.close()
    return data


def test_label_board_and_list_groups_resolve_to_sorted_registered_ids(data_dir: Path) -> None:
    """Each selector picks its devices, sorted, and only registered ones."""
    groups = Groups(data_dir)
    try:
        groups.add_label("dev-c", "kitchen")
        groups.add_label("dev-a", "kitchen")
        groups.add_label("gone", "kitchen")  # a label left by a device since removed
        groups.record_boards({"dev-b": "esp32-devkitc", "dev-c": "unix-sim", "old": "unix-sim"})
        groups.add("kitchen", "label", "kitchen")
        groups.add("sims", "board", "unix-sim")
        groups.add("pair", "devices", "dev-b, dev-a,dev-a,ghost")
    finally:
        groups.close()
    assert resolve_group(data_dir, "kitchen") == ["dev-a", "dev-c"]
    assert resolve_group(data_dir, "sims") == ["dev-c"]
    assert resolve_group(data_dir, "pair") == ["dev-a", "dev-b"]


def test_unknown_group_and_bad_input_are_refused_clearly(data_dir: Path) -> None:
    """An unknown group, a bad name, selector or duplicate raises GroupError saying what."""
    with pytest.raises(GroupError, match="no group 'nope'"):
        resolve_group(data_dir, "nope")
    groups = Groups(data_dir)
    try:
        with pytest.raises(GroupError, match="bad group name"):
            groups.add("Bad Name", "label", "x")
        with pytest.raises(GroupError, match="bad label"):
            groups.add("g", "label", "../x")
        with pytest.raises(GroupError, match="bad board"):
            groups.add("g", "board", "a b")
        with pytest.raises(GroupError, match="bad device id"):
            groups.add("g", "devices", "ok,NOT OK")
        with pytest.raises(GroupError, match="selects by"):
            groups.add("g", "owner", "x")
        groups.add("g", "label", "x")
        with pytest.raises(GroupError, match="exists already"):
            groups.add("g", "board", "unix-sim")
        for n in range(MAX_LABELS):
            groups.add_label("dev-a", f"l{n}")
        with pytest.raises(GroupError, match="the most it may have"):
            groups.add_label("dev-a", "one-more")
        assert groups.get("g") is not None and groups.get("g").kind == "label"  # type: ignore[union-attr]
    finally:
        groups.close()


def test_precedence_is_highest_priority_then_name(data_dir: Path) -> None:
    """A device's groups come highest priority first, equal priorities by name."""
    groups = Groups(data_dir)
    try:
        groups.add_label("dev-a", "hall")
        groups.record_boards({"dev-a": "unix-sim"})
        groups.add("zeta", "label", "hall", priority=5)
        groups.add("beta", "board", "unix-sim")
        groups.add("alpha", "devices", "dev-a")
        groups.add("other", "devices", "dev-b", priority=9)
        assert [g.name for g in groups.groups_of("dev-a")] == ["zeta", "alpha", "beta"]
    finally:
        groups.close()


def test_removing_a_group_removes_its_desired_document(data_dir: Path) -> None:
    """`remove` deletes the group and its document in one transaction."""
    groups = Groups(data_dir)
    try:
        groups.add("g", "devices", "dev-a")
        groups.db.write(
            "INSERT INTO docs VALUES ('group', 'g', 1, '{}', 'admin', 0)",
        )
        groups.remove("g")
        assert groups.db.rows("SELECT * FROM docs") == []
        with pytest.raises(GroupError, match="no group 'g'"):
            groups.remove("g")
    finally:
        groups.close()


def test_cli_group_and_label_commands(data_dir: Path) -> None:
    """`hub device label` and `hub group add|list|show|remove` work and refuse bad input."""
    assert hub_cli(data_dir, "device", "label", "dev-b", "add", "porch").returncode == 0
    labels = hub_cli(data_dir, "device", "label", "dev-b", "list")
    assert json.loads(labels.stdout) == ["porch"]
    unknown = hub_cli(data_dir, "device", "label", "ghost", "add", "porch")
    assert unknown.returncode == 2 and "no device 'ghost'" in unknown.stderr
    added = hub_cli(data_dir, "group", "add", "porch", "--label", "porch", "--priority", "3")
    assert added.returncode == 0, added.stderr
    assert "label=porch" in added.stdout
    listed = hub_cli(data_dir, "group", "list", "--json")
    assert [g["name"] for g in json.loads(listed.stdout)] == ["porch"]
    shown = json.loads(hub_cli(data_dir, "group", "show", "porch").stdout)
    assert shown["members"] == ["dev-b"] and shown["priority"] == 3
    bad = hub_cli(data_dir, "group", "add", "x", "--devices", "a,B!")
    assert bad.returncode == 2 and "hub: error: bad device id" in bad.stderr
    assert "Traceback" not in bad.stderr
    both = hub_cli(data_dir, "group", "add", "x", "--label", "a", "--board", "b")
    assert both.returncode == 2
    missing = hub_cli(data_dir, "group", "show", "nope")
    assert missing.returncode == 2 and "no group 'nope'" in missing.stderr
    assert hub_cli(data_dir, "device", "label", "dev-b", "remove", "porch").returncode == 0
    assert json.loads(hub_cli(data_dir, "group", "show", "porch").stdout)["members"] == []
    assert hub_cli(data_dir, "group", "remove", "porch").returncode == 0
    assert json.loads(hub_cli(data_dir, "group", "list", "--json").stdout) == []


def test_database_is_owner_only_and_in_wal_mode(data_dir: Path) -> None:
    """desired.sqlite3 is created 0600 and uses WAL."""
    Groups(data_dir).close()
    path = data_dir / "desired.sqlite3"
    assert path.stat().st_mode & 0o077 == 0
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        conn.close()
