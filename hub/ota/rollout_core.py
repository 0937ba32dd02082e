"""A rollout's rules, as pure functions over its state (no I/O: unit-tested in milliseconds).

A rollout updates its target devices to one app version in stages: the canary (the first
``canary`` devices), then each step, a cumulative share of the target (``10%,50%,100%``).
``decide`` looks at a rollout, its devices and each device's update (the OTA store's row) at
one moment and says what happens next: each device's new state, the devices to assign now
(paced by ``max_per_minute``), those refused (another board, unknown to the hub), and whether
the rollout advances a step, completes or aborts. The engine (``hub/ota/rollout.py``) does the
I/O around it.
"""

from __future__ import annotations

import math
import re
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from hub.topics import DEVICE_ID_RE

RUNNING, PAUSED = "running", "paused"
ACTIVE = (RUNNING, PAUSED)
ENDED = ("completed", "aborted", "cancelled")
PENDING, REFUSED, TIMED_OUT = "pending", "refused", "timed_out"
FAILURES = frozenset(("rolled_back", "failed", TIMED_OUT))
FINAL = FAILURES | {"updated", REFUSED}
IN_PROGRESS = ("offered", "downloading", "verifying", "installing", "trial")

MAX_DEVICES = 10_000  # devices in one rollout
MAX_STEPS = 20
DEFAULT_STEPS = (10, 50, 100)
DEFAULT_CANARY = 1
DEFAULT_MAX_PER_MINUTE = 60
DEFAULT_ABORT_PCT = 10.0
DEFAULT_TIMEOUT_S = 900.0
MAX_PER_MINUTE = 100_000
MIN_TIMEOUT_S, MAX_TIMEOUT_S = 5.0, 7 * 86400.0
PACE_WINDOW_S = 60.0
_STEP_RE = re.compile(r"^\s*([0-9]{1,3})\s*%?\s*\Z")
GROUP_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}\Z")


class RolloutError(ValueError):
    """A refused rollout or action (the message says why)."""


class RolloutMissing(RolloutError):
    """No rollout of that id."""


class RolloutConflict(RolloutError):
    """The rollout's status does not allow the action, or a device is in another rollout."""


@dataclass(frozen=True)
class Request:
    """A rollout as asked for, checked (``check_request``)."""

    version: str
    devices: tuple[str, ...]  # empty when a group names the target
    group: str | None
    canary: int
    steps: tuple[int, ...]
    max_per_minute: int
    abort_failed_pct: float
    timeout_s: float


@dataclass
class Rollout:
    id: int
    version: str
    canary: int
    steps: tuple[int, ...]
    max_per_minute: int
    abort_failed_pct: float
    timeout_s: float
    status: str
    step: int  # 0: the canary, k: steps[k - 1]
    reason: str | None = None
    created_at: float = 0.0


@dataclass
class Member:
    """One device of a rollout: its place in the order and its state in the rollout."""

    device: str
    position: int
    state: str = PENDING
    error: str | None = None
    tag: str | None = None  # the update's tag in the OTA store, once assigned
    assigned_at: float | None = None  # wall clock (it survives a restart)


@dataclass
class Decision:
    changes: list[tuple[str, str, str | None]] = field(
        default_factory=list
    )  # device, state, error
    assign: list[str] = field(default_factory=list)
    step: int | None = None  # the stage the rollout enters
    status: str | None = None  # "completed" or "aborted"
    reason: str | None = None


# --- checking a request ---------------------------------------------------------------------
def parse_steps(text: str | Sequence[Any]) -> tuple[int, ...]:
    """``10%,50%,100%`` (or a list of numbers): rising whole percentages ending at 100."""
    parts = text.split(",") if isinstance(text, str) else list(text)
    if not parts or len(parts) > MAX_STEPS:
        raise RolloutError(f"steps: 1 to {MAX_STEPS} percentages, e.g. 10%,50%,100%")
    out: list[int] = []
    for part in parts:
        if isinstance(part, bool):
            part = None
        if isinstance(part, int):
            value = part
        else:
            match = _STEP_RE.match(part) if isinstance(part, str) else None
            if match is None:
                raise RolloutError(f"steps: {str(part)[:20]!r} is not a percentage like 50%")
            value = int(match.group(1))
        if not 1 <= value <= 100:
            raise RolloutError(f"steps: {value}% is not from 1% to 100%")
        if out and value <= out[-1]:
            raise RolloutError("steps: each percentage must be larger than the one before")
        out.append(value)
    if out[-1] != 100:
        raise RolloutError("steps: the last step must be 100% (every target device)")
    return tuple(out)


def parse_devices(value: str | Sequence[Any]) -> tuple[str, ...]:
    """``a,b,c`` (or a list): device ids, each valid and named once."""
    items = value.split(",") if isinstance(value, str) else list(value)
    if len(items) > MAX_DEVICES:
        raise RolloutError(f"devices: at most {MAX_DEVICES} in one rollout")
    out: list[str] = []
    seen: set[str] = set()
    for item in items:
        name = item.strip() if isinstance(item, str) else None
        if not name or not DEVICE_ID_RE.match(name):
            raise RolloutError(f"devices: bad device id {str(item)[:40]!r}")
        if name in seen:
            raise RolloutError(f"devices: {name} is named twice")
        seen.add(name)
        out.append(name)
    if not out:
        raise RolloutError("devices: the target is empty")
    return tuple(out)


def _whole(raw: Mapping[str, Any], name: str, default: int, low: int, high: int) -> int:
    value = raw.get(name, default)
    if value is None:
        value = default
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise RolloutError(f"{name}: a whole number from {low} to {high}")
    return value


def _real(raw: Mapping[str, Any], name: str, default: float, low: float, high: float) -> float:
    value = raw.get(name, default)
    if value is None:
        value = default
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            value = None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise RolloutError(f"{name}: a number from {low:g} to {high:g}")
    if not math.isfinite(value) or not low <= value <= high:
        raise RolloutError(f"{name}: a number from {low:g} to {high:g}")
    return float(value)


KNOWN_FIELDS = (
    "app",
    "devices",
    "group",
    "canary",
    "steps",
    "max_per_minute",
    "abort_failed_pct",
    "timeout_per_device",
)


def check_request(raw: Mapping[str, Any]) -> Request:
    """The fields of a new rollout (the CLI's options, the API's JSON body) checked: what is
    wrong is a RolloutError naming the field. The version's bundle, the group's devices and
    the other rollouts are checked by the caller (``hub/ota/rollout_store.py``)."""
    if unknown := sorted(set(raw) - set(KNOWN_FIELDS)):
        raise RolloutError(f"unknown field {str(unknown[0])[:40]!r}")
    app = raw.get("app")
    if not isinstance(app, str) or not app or len(app) > 32:
        raise RolloutError("app: the version of a registered bundle (hub app list)")
    group, devices = raw.get("group"), raw.get("devices")
    if (group is None) == (devices is None):
        raise RolloutError("name the target: either a group or devices, not both")
    if group is not None and (not isinstance(group, str) or not GROUP_RE.match(group)):
        raise RolloutError(f"group: bad group name {str(group)[:40]!r}")
    if devices is not None and not isinstance(devices, (str, list)):
        raise RolloutError("devices: a list of device ids (or ID,ID,...)")
    steps = raw.get("steps")
    return Request(
        version=app,
        devices=parse_devices(devices) if devices is not None else (),
        group=group,
        canary=_whole(raw, "canary", DEFAULT_CANARY, 0, MAX_DEVICES),
        steps=parse_steps(steps) if steps is not None else DEFAULT_STEPS,
        max_per_minute=_whole(raw, "max_per_minute", DEFAULT_MAX_PER_MINUTE, 1, MAX_PER_MINUTE),
        abort_failed_pct=_real(raw, "abort_failed_pct", DEFAULT_ABORT_PCT, 0.0, 100.0),
        timeout_s=_real(
            raw, "timeout_per_device", DEFAULT_TIMEOUT_S, MIN_TIMEOUT_S, MAX_TIMEOUT_S
        ),
    )


def check_target(request: Request, devices: Sequence[str]) -> None:
    """The resolved target: not empty, and at least as many devices as the canary."""
    if not devices:
        raise RolloutError("the target is empty: no device to update")
    if len(devices) > MAX_DEVICES:
        raise RolloutError(f"the target has {len(devices)} devices, more than {MAX_DEVICES}")
    if request.canary > len(devices):
        raise RolloutError(f"canary: {request.canary} devices, but the target has {len(devices)}")


# --- the stages -----------------------------------------------------------------------------
def stage_sizes(total: int, canary: int, steps: Sequence[int]) -> list[int]:
    """How many devices (counted from the first) each stage covers, cumulatively: stage 0 is
    the canary, stage k is ``steps[k-1]`` percent of the target (rounded up), never fewer
    than the stage before."""
    sizes = [min(canary, total)]
    for pct in steps:
        sizes.append(min(total, max(sizes[-1], math.ceil(total * pct / 100))))
    return sizes


def stage_name(rollout: Rollout, step: int) -> str:
    return "canary" if step == 0 else f"{rollout.steps[step - 1]}%"


# --- what happens next ----------------------------------------------------------------------
def follow(
    member: Member, ota: Mapping[str, Any] | None, rollout: Rollout, now: float
) -> tuple[str, str | None] | None:
    """An assigned device's new (state, error) from its OTA store row, or None if unchanged.
    The same version assigned again since (desired state does so once the rollout has set the
    device's desired app) is the same update under a new tag: followed, not a failure."""
    if member.state in FINAL or member.state == PENDING:
        return None
    timeout_s = rollout.timeout_s
    if (
        ota is not None
        and ota.get("tag") != member.tag
        and ota.get("version") == rollout.version
        and float(ota.get("created_at") or 0) >= (member.assigned_at or 0)
    ):
        member.tag = str(ota["tag"])
    if ota is None or ota.get("tag") != member.tag:
        new: tuple[str, str | None] = ("failed", "its update was replaced outside the rollout")
    elif ota["state"] == "cancelled":
        new = ("failed", "its update was cancelled")
    else:
        new = (str(ota["state"]), ota.get("error"))
    late = member.assigned_at is not None and now - member.assigned_at > timeout_s
    if new[0] not in FINAL and late:
        new = (TIMED_OUT, f"not updated within {timeout_s:g} s (last state {new[0]})")
    return None if new == (member.state, member.error) else new


def abort_reason(rollout: Rollout, members: Sequence[Member]) -> str | None:
    """Why the rollout must abort now, or None: any failure in the canary stage; later, more
    than ``abort_failed_pct`` percent of the devices tried so far (assigned) failed."""
    tried = [m for m in members if m.state not in (PENDING, REFUSED)]
    failed = [m for m in tried if m.state in FAILURES]
    if not failed:
        return None
    if rollout.step == 0:
        first = failed[0]
        return f"canary {first.device} {first.state}" + (f": {first.error}" if first.error else "")
    pct = 100.0 * len(failed) / len(tried)
    if pct > rollout.abort_failed_pct:
        return (
            f"{len(failed)} of {len(tried)} devices tried failed ({pct:.0f}% > "
            f"{rollout.abort_failed_pct:g}%)"
        )
    return None


def pace_allowance(rollout: Rollout, members: Sequence[Member], now: float) -> int:
    """How many devices may be assigned now: max_per_minute less those of the last minute."""
    recent = sum(
        1 for m in members if m.assigned_at is not None and now - m.assigned_at < PACE_WINDOW_S
    )
    return max(0, rollout.max_per_minute - recent)


def decide(
    rollout: Rollout,
    members: Sequence[Member],
    ota: Mapping[str, Mapping[str, Any]],
    refusals: Mapping[str, str],
    now: float,
    current: Collection[str] = (),
) -> Decision:
    """What happens next to an active rollout. ``members`` in rollout order; ``ota``: the OTA
    store's row per device; ``refusals``: why a device may not be assigned (another board,
    unknown to the hub); ``current``: the devices that already run the version (updated
    without an update when their stage comes). ``members`` are updated in place to the states
    decided. A pending device given this version's update since the rollout began (a hub
    stopped between the assignment and its record, or desired state) is followed, not
    assigned again."""
    out = Decision()
    if rollout.status not in ACTIVE:
        return out
    for m in members:
        row = ota.get(m.device)
        if (
            m.state == PENDING
            and row is not None
            and row.get("version") == rollout.version
            and float(row.get("created_at") or 0) >= rollout.created_at
        ):
            m.state, m.tag, m.assigned_at = "offered", str(row["tag"]), float(row["created_at"])
            out.changes.append((m.device, m.state, None))
    for m in members:
        new = follow(m, ota.get(m.device), rollout, now)
        if new is not None:
            m.state, m.error = new
            out.changes.append((m.device, m.state, m.error))
    reason = abort_reason(rollout, members)
    if reason is not None:
        out.status, out.reason = "aborted", reason
        return out
    if rollout.status != RUNNING:
        return out  # paused: devices followed, nothing new assigned, no step taken
    sizes = stage_sizes(len(members), rollout.canary, rollout.steps)
    step = rollout.step
    while all(m.state in FINAL for m in members[: sizes[step]]):
        if step == len(sizes) - 1:
            out.status = "completed"
            return out
        step += 1
        out.step = step
        if any(m.state == PENDING for m in members[: sizes[step]]):
            break
    allowance = pace_allowance(rollout, members, now)
    for m in members[: sizes[step]]:
        if m.state != PENDING:
            continue
        if m.device in refusals:
            m.state, m.error = REFUSED, refusals[m.device]
            out.changes.append((m.device, m.state, m.error))
        elif m.device in current:
            m.state, m.error = "updated", None
            out.changes.append((m.device, m.state, m.error))
        elif allowance > 0:
            out.assign.append(m.device)
            allowance -= 1
    return out


def counts(members: Sequence[Member]) -> dict[str, int]:
    """How many devices are in each state."""
    out: dict[str, int] = {}
    for m in members:
        out[m.state] = out.get(m.state, 0) + 1
    return out
