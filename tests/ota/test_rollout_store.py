"""The rollouts' SQLite store without a hub: one active rollout per device, status changes as
compare-and-set, the bound on active rollouts, and the progress view."""

from __future__ import annotations

from pathlib import Path

import pytest

from hub.ota import rollout_store
from hub.ota.rollout_core import (
    Member,
    Request,
    RolloutConflict,
    RolloutMissing,
    check_request,
)
from hub.ota.rollout_store import RolloutStore, progress


def request(devices: str, **extra: object) -> Request:
    return check_request({"app": "1.2.0", "devices": devices, **extra})


def test_a_device_is_in_one_active_rollout_at_a_time(tmp_path: Path) -> None:
    """A second rollout naming a device of an active one is refused, naming the device and the
    rollout, and nothing of it is stored; once the first is cancelled, the device is free."""
    store = RolloutStore(tmp_path)
    first = store.create(request("a,b"), ["a", "b"], "devices", "ada")
    with pytest.raises(RolloutConflict, match=f"b is in rollout {first} already"):
        store.create(request("c,b"), ["c", "b"], "devices", "ada")
    assert [r["id"] for r in store.listing()] == [first]
    store.act(first, "cancel", "ada")
    second = store.create(request("b"), ["b"], "devices", "ada")
    assert second != first and store.get(second) is not None
    store.close()


def test_actions_are_allowed_only_from_their_status(tmp_path: Path) -> None:
    """pause from running, resume from paused, cancel from either; anything else is refused
    with the current status, and an unknown id is its own error; an ended rollout is not
    finished again by the engine."""
    store = RolloutStore(tmp_path)
    rid = store.create(request("a"), ["a"], "devices", "ada")
    with pytest.raises(RolloutConflict, match="is running: it cannot be running"):
        store.act(rid, "resume", "ada")
    assert store.act(rid, "pause", "bob")["status"] == "paused"
    with pytest.raises(RolloutConflict, match="is paused"):
        store.act(rid, "pause", "ada")
    assert store.act(rid, "resume", "ada")["status"] == "running"
    assert store.act(rid, "cancel", "ada")["status"] == "cancelled"
    assert store.finish(rid, "completed", None) is False
    assert store.get(rid)["status"] == "cancelled"  # type: ignore[index]
    with pytest.raises(RolloutMissing, match="no rollout 99"):
        store.act(99, "cancel", "ada")
    store.close()


def test_active_rollouts_are_bounded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Past MAX_ACTIVE running or paused rollouts, a new one is refused until one ends."""
    monkeypatch.setattr(rollout_store, "MAX_ACTIVE", 2)
    store = RolloutStore(tmp_path)
    store.create(request("a"), ["a"], "devices", "ada")
    second = store.create(request("b"), ["b"], "devices", "ada")
    with pytest.raises(RolloutConflict, match="2 rollouts are active already"):
        store.create(request("c"), ["c"], "devices", "ada")
    store.act(second, "cancel", "ada")
    store.create(request("c"), ["c"], "devices", "ada")
    store.close()


def test_progress_shows_stages_and_each_devices_stage(tmp_path: Path) -> None:
    """Four devices, a canary and 50%,100%: stages of 1, 2 and 4 devices, each device named
    with its stage, the done count per stage and the counts per state."""
    store = RolloutStore(tmp_path)
    names = ["a", "b", "c", "d"]
    req = request(",".join(names), steps="50%,100%")
    rid = store.create(req, names, "devices", "ada")
    store.set_members(rid, [Member("a", 0, "updated", None, "00000001", 1.0)])
    store.set_step(rid, 1)
    found = store.get(rid)
    assert found is not None
    shown = progress(found)
    assert [(s["name"], s["devices"], s["new"], s["done"]) for s in shown["stages"]] == [
        ("canary", 1, 1, 1),
        ("50%", 2, 1, 1),
        ("100%", 4, 2, 1),
    ]
    assert [s["current"] for s in shown["stages"]] == [False, True, False]
    assert [d["stage"] for d in shown["devices"]] == ["canary", "50%", "100%", "100%"]
    assert shown["counts"] == {"updated": 1, "pending": 3}
    listed = store.listing()[0]
    assert listed["counts"] == {"updated": 1, "pending": 3} and listed["total"] == 4
    store.close()
