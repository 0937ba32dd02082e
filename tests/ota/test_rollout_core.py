"""The rollout's rules without devices or I/O: requests, stages, steps, pacing, timeouts, abort."""

from __future__ import annotations

from typing import Any

import pytest

from hub.ota.rollout_core import (
    Member,
    Rollout,
    RolloutError,
    check_request,
    check_target,
    decide,
    parse_steps,
    stage_sizes,
)

NOW = 1_000_000.0


def rollout(**kw: Any) -> Rollout:
    fields: dict[str, Any] = dict(
        id=1,
        version="1.2.0",
        canary=1,
        steps=(50, 100),
        max_per_minute=100,
        abort_failed_pct=30.0,
        timeout_s=300.0,
        status="running",
        step=0,
    )
    fields.update(kw)
    return Rollout(**fields)


def fleet(n: int) -> list[Member]:
    return [Member(f"d{i}", i) for i in range(n)]


def assigned(m: Member, at: float = NOW - 10) -> None:
    m.state, m.tag, m.assigned_at = "offered", f"{m.position:08x}", at


def ota(members: list[Member], states: dict[str, str]) -> dict[str, dict[str, Any]]:
    """OTA store rows of the assigned members, in the given states (offered otherwise)."""
    return {
        m.device: {
            "device": m.device,
            "version": "1.2.0",
            "tag": m.tag,
            "state": states.get(m.device, "offered"),
            "created_at": m.assigned_at,
        }
        for m in members
        if m.tag
    }


def test_steps_parse_and_refuse_bad_percentages() -> None:
    """10%,50%,100% parses; falling, repeated, zero, over 100, not ending at 100 and garbage are
    refused with a message naming steps."""
    assert parse_steps("10%,50%,100%") == (10, 50, 100)
    assert parse_steps([25, 100]) == (25, 100)
    for bad in ("50%,10%,100%", "10%,10%,100%", "0%,100%", "10%,150%", "10%,50%", "x", "", [True]):
        with pytest.raises(RolloutError, match="steps"):
            parse_steps(bad)  # type: ignore[arg-type]


def test_request_is_checked_field_by_field() -> None:
    """Defaults fill what is not given; a missing target, both targets, a bad id, a name given
    twice, an unknown field and out-of-range numbers are refused, naming what is wrong."""
    ok = check_request({"app": "1.2.0", "devices": "a,b,c"})
    assert ok.devices == ("a", "b", "c") and ok.canary == 1 and ok.steps == (10, 50, 100)
    cases = [
        ({"app": "1.2.0"}, "target"),
        ({"app": "1.2.0", "devices": "a", "group": "g"}, "target"),
        ({"app": "1.2.0", "devices": "a,../b"}, "bad device id"),
        ({"app": "1.2.0", "devices": "a,a"}, "named twice"),
        ({"app": "1.2.0", "devices": ""}, "bad device id"),
        ({"app": "1.2.0", "devices": []}, "empty"),
        ({"app": "1.2.0", "devices": "a", "colour": 1}, "unknown field"),
        ({"app": "1.2.0", "devices": "a", "canary": -1}, "canary"),
        ({"app": "1.2.0", "devices": "a", "max_per_minute": 0}, "max_per_minute"),
        ({"app": "1.2.0", "devices": "a", "abort_failed_pct": 101}, "abort_failed_pct"),
        ({"app": "1.2.0", "devices": "a", "abort_failed_pct": "nan"}, "abort_failed_pct"),
        ({"app": "1.2.0", "devices": "a", "timeout_per_device": 1}, "timeout_per_device"),
        ({"app": 12, "devices": "a"}, "app"),
        ({"app": "1.2.0", "group": "no/slash"}, "group"),
    ]
    for raw, words in cases:
        with pytest.raises(RolloutError, match=words):
            check_request(raw)
    with pytest.raises(RolloutError, match="canary"):
        check_target(check_request({"app": "1", "devices": "a", "canary": 2}), ["a"])
    with pytest.raises(RolloutError, match="empty"):
        check_target(ok, [])


def test_stage_sizes_are_cumulative_and_cover_the_canary() -> None:
    """Stages count devices from the first: canary, then each share rounded up, never fewer
    than the stage before, the last all of them."""
    assert stage_sizes(10, 1, (10, 50, 100)) == [1, 1, 5, 10]
    assert stage_sizes(7, 2, (10, 50, 100)) == [2, 2, 4, 7]
    assert stage_sizes(3, 0, (50, 100)) == [0, 2, 3]
    assert stage_sizes(2, 5, (100,)) == [2, 2]


def test_canary_first_then_steps_advance_only_when_their_devices_are_done() -> None:
    """The canary alone is assigned; its step is taken only once it is updated; the next
    stage's devices are assigned, and the rollout completes when the last stage is done."""
    r, members = rollout(), fleet(4)
    d = decide(r, members, {}, {}, NOW)
    assert d.assign == ["d0"] and d.step is None
    assigned(members[0])
    d = decide(r, members, ota(members, {"d0": "downloading"}), {}, NOW)
    assert d.assign == [] and d.step is None and members[0].state == "downloading"
    d = decide(r, members, ota(members, {"d0": "updated"}), {}, NOW)
    assert d.step == 1 and d.assign == ["d1"] and d.changes == [("d0", "updated", None)]
    r.step = 1
    assigned(members[1])
    d = decide(r, members, ota(members, {"d0": "updated", "d1": "trial"}), {}, NOW)
    assert d.step is None and d.assign == []
    d = decide(r, members, ota(members, {"d0": "updated", "d1": "updated"}), {}, NOW)
    assert d.step == 2 and d.assign == ["d2", "d3"]
    r.step = 2
    for m in members[2:]:
        assigned(m)
    done = {m.device: "updated" for m in members}
    d = decide(r, members, ota(members, done), {}, NOW)
    assert d.status == "completed" and d.assign == []


def test_canary_failure_aborts_at_once_and_assigns_nobody() -> None:
    """A canary that rolled back aborts the rollout with the canary's reason; no other device
    is assigned."""
    r, members = rollout(abort_failed_pct=100.0), fleet(5)
    assigned(members[0])
    rows = ota(members, {"d0": "rolled_back"})
    rows["d0"]["error"] = "app on trial crashed: boom"
    d = decide(r, members, rows, {}, NOW)
    assert d.status == "aborted" and d.assign == []
    assert d.reason is not None and "canary d0 rolled_back" in d.reason and "boom" in d.reason


def test_failures_abort_only_past_the_threshold_among_devices_tried() -> None:
    """In a step, 1 failure of 4 tried (25%) is under a 30% threshold; 2 of 4 (50%) aborts."""
    r, members = rollout(step=2, canary=0, steps=(40, 100)), fleet(10)
    for m in members[:4]:
        assigned(m)
    d = decide(r, members, ota(members, {"d0": "updated", "d1": "failed"}), {}, NOW)
    assert d.status is None
    d = decide(r, members, ota(members, {"d0": "updated", "d2": "rolled_back"}), {}, NOW)
    assert d.status == "aborted" and d.reason is not None and "2 of 4" in d.reason


def test_a_device_times_out_from_its_assignment_time() -> None:
    """A device not updated within timeout_per_device of its (stored) assignment time is
    timed_out, a failure; one assigned later is not."""
    r, members = rollout(step=1, canary=0, steps=(100,), abort_failed_pct=60.0), fleet(2)
    assigned(members[0], at=NOW - 301)
    assigned(members[1], at=NOW - 299)
    d = decide(r, members, ota(members, {}), {}, NOW)
    assert [(c[0], c[1]) for c in d.changes] == [("d0", "timed_out")]
    assert d.status is None  # 1 of 2 = 50% < 60%


def test_pacing_limits_assignments_per_minute() -> None:
    """With max_per_minute 3 and 2 assigned in the last minute, one more is assigned now; a
    minute later, three."""
    r, members = rollout(step=1, canary=0, steps=(100,), max_per_minute=3), fleet(10)
    assigned(members[0], at=NOW - 30)
    assigned(members[1], at=NOW - 59)
    d = decide(r, members, ota(members, {}), {}, NOW)
    assert d.assign == ["d2"]
    d = decide(r, members, ota(members, {}), {}, NOW + 60)
    assert d.assign == ["d2", "d3", "d4"]


def test_paused_follows_devices_but_assigns_nothing_and_takes_no_step() -> None:
    """Paused: states are followed and the abort rule still holds, nothing is assigned."""
    r, members = rollout(status="paused"), fleet(3)
    assigned(members[0])
    d = decide(r, members, ota(members, {"d0": "updated"}), {}, NOW)
    assert d.assign == [] and d.step is None and d.changes == [("d0", "updated", None)]
    members[0].state = "offered"
    d = decide(r, members, ota(members, {"d0": "failed"}), {}, NOW)
    assert d.status == "aborted"


def test_refused_devices_are_never_assigned_and_do_not_count_as_failures() -> None:
    """A device of another board is refused with its reason and skipped; the stage moves on."""
    r, members = rollout(step=1, canary=0, steps=(100,), abort_failed_pct=0.0), fleet(3)
    d = decide(r, members, {}, {"d1": "wrong board: the bundle is for unix-sim"}, NOW)
    assert d.assign == ["d0", "d2"] and d.changes == [
        ("d1", "refused", "wrong board: the bundle is for unix-sim")
    ]
    assert d.status is None


def test_an_update_replaced_outside_the_rollout_is_a_failure() -> None:
    """If the device's OTA row is another version's (assigned by hand since), the rollout
    counts it as failed rather than waiting for an update it no longer follows."""
    r, members = rollout(), fleet(2)
    assigned(members[0])
    rows = ota(members, {})
    rows["d0"].update(tag="ffffffff", version="1.3.0")
    d = decide(r, members, rows, {}, NOW)
    assert d.changes[0][:2] == ("d0", "failed") and d.status == "aborted"


def test_the_same_version_assigned_again_is_followed_under_its_new_tag() -> None:
    """Desired state assigning the rollout's version again (a new tag, after the rollout's
    assignment) is the same update: followed to updated, not counted as a failure."""
    r, members = rollout(), fleet(2)
    assigned(members[0])
    rows = ota(members, {"d0": "updated"})
    rows["d0"].update(tag="ffffffff", created_at=NOW - 5)
    d = decide(r, members, rows, {}, NOW)
    assert d.changes == [("d0", "updated", None)] and members[0].tag == "ffffffff"
    assert d.status is None and d.assign == ["d1"]


def test_a_pending_device_given_the_version_since_the_start_is_followed_not_assigned() -> None:
    """A device whose OTA row holds this version's update from after the rollout began (the
    hub stopped between assigning it and recording that) is followed, never assigned again;
    an older row of the version is not the rollout's."""
    r, members = rollout(created_at=NOW - 100), fleet(2)
    rows = {
        "d0": {
            "device": "d0",
            "version": "1.2.0",
            "tag": "0000000a",
            "state": "downloading",
            "created_at": NOW - 50,
        },
        "d1": {
            "device": "d1",
            "version": "1.2.0",
            "tag": "0000000b",
            "state": "updated",
            "created_at": NOW - 500,
        },
    }
    d = decide(r, members, rows, {}, NOW)
    assert d.assign == [] and members[0].tag == "0000000a"
    assert members[0].assigned_at == NOW - 50
    assert d.changes == [("d0", "offered", None), ("d0", "downloading", None)]
    assert members[1].state == "pending"


def test_devices_already_on_the_version_are_updated_without_an_update() -> None:
    """A device that already runs the version is counted updated when its stage comes, and
    is not assigned."""
    r, members = rollout(step=1, canary=0, steps=(100,)), fleet(3)
    d = decide(r, members, {}, {}, NOW, current={"d1"})
    assert d.assign == ["d0", "d2"] and d.changes == [("d1", "updated", None)]


def test_ended_rollouts_decide_nothing() -> None:
    """A cancelled rollout assigns no device and changes no state."""
    r, members = rollout(status="cancelled"), fleet(3)
    d = decide(r, members, {}, {}, NOW)
    assert d.assign == [] and d.changes == [] and d.status is None
