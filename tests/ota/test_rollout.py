"""Staged rollouts end to end: real unix-port firmware devices (64 KB heap) and a real hub."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.ota.conftest import firmware_version, update_row
from tests.support.devices import running_device
from tests.support.durable import Events
from tests.support.firmware import Subscriber
from tests.support.hubproc import HubProcess, hub_cli, scaled, start_hub
from tests.support.waits import eventually_async

TRIAL_S = 8  # ota_trial_s of the test devices


@pytest.fixture(scope="module")
def hub(
    tmp_path_factory: pytest.TempPathFactory, bundles: dict[str, Path]
) -> Iterator[HubProcess]:
    """One hub for the module, with the good, crashing, unreachable and esp32 bundles."""
    proc = start_hub(tmp_path_factory.mktemp("rollout-hub"))
    try:
        for name in ("good", "crash", "lost", "esp32"):
            result = hub_cli(proc.data_dir, "app", "add", str(bundles[name]))
            assert result.returncode == 0, result.stderr
        yield proc
    finally:
        proc.stop()


def cli(hub: HubProcess, *args: str) -> str:
    result = hub_cli(hub.data_dir, "rollout", *args)
    assert result.returncode == 0, result.stderr
    return result.stdout


def start(hub: HubProcess, *args: str) -> int:
    """`hub rollout start ARGS`: the new rollout's id."""
    out = cli(hub, "start", *args)
    assert out.startswith("rollout "), out
    return int(out.split()[1])


def status(hub: HubProcess, rid: int) -> dict[str, Any]:
    found: dict[str, Any] = json.loads(cli(hub, "status", str(rid), "--json"))
    return found


def await_status(hub: HubProcess, rid: int, wanted: str) -> None:
    """Waits until the rollout's stored status is `wanted`."""
    asyncio.run(
        eventually_async(
            lambda: status(hub, rid)["status"] == wanted, scaled(20), f"rollout {wanted}"
        )
    )


def device_states(hub: HubProcess, rid: int) -> dict[str, str]:
    return {d["device"]: d["state"] for d in status(hub, rid)["devices"]}


def of_rollout(events: Events, rid: int, kind: str, **fields: Any) -> list[dict[str, Any]]:
    return [
        e
        for e in events.seen
        if e["event"] == kind
        and e.get("rollout") == rid
        and all(e.get(k) == v for k, v in fields.items())
    ]


async def event(
    events: Events, rid: int, kind: str, timeout: float = 60, **fields: Any
) -> dict[str, Any]:
    """The first event of rollout rid of this kind (with these fields), once it has come."""
    found: list[dict[str, Any]] = await eventually_async(
        lambda: of_rollout(events, rid, kind, **fields), scaled(timeout), f"{kind} {fields}"
    )
    return found[0]


@contextlib.contextmanager
def fleet(tmp: Path, hub: HubProcess, names: list[str]) -> Iterator[None]:
    """Unix-port devices running on the hub for the block."""
    with contextlib.ExitStack() as stack:
        for name in names:
            stack.enter_context(running_device(tmp, hub, name, ota_trial_s=TRIAL_S))
        yield


async def watch(hub: HubProcess, names: list[str]) -> list[Subscriber]:
    """A subscriber per device, once each runs the factory app (fw 0.1.0)."""
    subs = [await Subscriber.start(hub, name) for name in names]
    for sub in subs:
        await sub.wait_until(lambda s=sub: firmware_version(s) == "0.1.0", scaled(30), "health")
    return subs


def test_fleet_is_updated_by_canary_and_two_steps(hub: HubProcess, tmp_path: Path) -> None:
    """Four devices, a canary and steps 50%,100%: the canary is updated before anyone else is
    assigned, each step waits for its devices, and every device ends on 1.2.0 and reports it;
    each transition is a hub event."""
    names = ["fl-1", "fl-2", "fl-3", "fl-4"]

    async def scenario() -> None:
        events = await Events.watch(hub.host, hub.mqtt_port)
        with fleet(tmp_path, hub, names):
            subs = await watch(hub, names)
            rid = start(
                hub,
                "--app",
                "1.2.0",
                "--devices",
                ",".join(names),
                "--canary",
                "1",
                "--steps",
                "50%,100%",
                "--timeout-per-device",
                "120",
            )
            await event(events, rid, "rollout_completed", 150)
            for sub in subs:
                await sub.wait_until(
                    lambda s=sub: firmware_version(s) == "1.2.0", scaled(15), "fw 1.2.0"
                )
            for sub in subs:
                await sub.stop()
        await events.close()
        found = status(hub, rid)
        assert found["status"] == "completed" and found["counts"] == {"updated": 4}
        assert [s["devices"] for s in found["stages"]] == [1, 2, 4]
        steps = [e["stage"] for e in of_rollout(events, rid, "rollout_step")]
        assert steps == ["50%", "100%"], steps
        assert of_rollout(events, rid, "rollout_started")[0]["devices"] == 4
        # The canary was updated before the first step's device was even assigned, and that
        # one before the last two.
        rows = {name: update_row(hub, name) for name in names}
        assert all(r is not None and r["state"] == "updated" for r in rows.values())
        done = {n: r["updated_at"] for n, r in rows.items() if r is not None}
        born = {n: r["created_at"] for n, r in rows.items() if r is not None}
        assert done["fl-1"] <= born["fl-2"] and done["fl-2"] <= min(born["fl-3"], born["fl-4"])
        kinds = [e["state"] for e in events.seen if e["event"] == "rollout_device"]
        assert kinds.count("updated") == 4

    asyncio.run(scenario())


@pytest.mark.parametrize(
    ("version", "why"), [("9.0.0-crash", "boom"), ("9.0.0-lost", "no healthy report")]
)
def test_failing_canary_rolls_back_and_aborts_touching_no_other_device(
    hub: HubProcess, tmp_path: Path, version: str, why: str
) -> None:
    """A bundle that crashes at start, and one that cannot reach the hub: the canary rolls back
    by itself, the rollout aborts with the canary's reason, and the other devices are never
    assigned (no OTA store row) and keep fw 0.1.0."""
    tag = version.split("-")[1]
    names = [f"{tag}-1", f"{tag}-2", f"{tag}-3"]

    async def scenario() -> None:
        events = await Events.watch(hub.host, hub.mqtt_port)
        with fleet(tmp_path, hub, names):
            subs = await watch(hub, names)
            rid = start(hub, "--app", version, "--devices", ",".join(names))
            aborted = await event(events, rid, "rollout_aborted", 60)
            assert f"canary {names[0]} rolled_back" in aborted["reason"], aborted
            assert why in aborted["reason"]
            for sub in subs:
                assert firmware_version(sub) == "0.1.0"
            for sub in subs:
                await sub.stop()
        await events.close()
        found = status(hub, rid)
        assert found["status"] == "aborted"
        assert device_states(hub, rid) == {
            names[0]: "rolled_back",
            names[1]: "pending",
            names[2]: "pending",
        }
        assert update_row(hub, names[1]) is None and update_row(hub, names[2]) is None

    asyncio.run(scenario())


def test_pause_resume_and_cancel(hub: HubProcess, tmp_path: Path) -> None:
    """Paused after the canary was assigned: the canary finishes, nobody else is assigned and
    the step is not taken; a second rollout naming a device of it is refused, naming it;
    resumed, the next step's device is assigned; cancelled then, the last device never is."""
    names = ["pa-1", "pa-2", "pa-3"]

    async def scenario() -> None:
        events = await Events.watch(hub.host, hub.mqtt_port)
        with fleet(tmp_path, hub, names):
            subs = await watch(hub, names)
            rid = start(hub, "--app", "1.2.0", "--devices", ",".join(names), "--steps", "50%,100%")
            await event(events, rid, "rollout_device", 20, name=names[0])
            assert cli(hub, "pause", str(rid)).strip() == f"rollout {rid} paused"
            await event(events, rid, "rollout_paused", 10, by="cli")
            await event(events, rid, "rollout_device", 90, name=names[0], state="updated")
            # The pass that saw the canary updated took no step and assigned nobody.
            found = status(hub, rid)
            assert found["status"] == "paused" and found["step"] == 0
            assert device_states(hub, rid)[names[1]] == "pending"
            assert update_row(hub, names[1]) is None
            again = hub_cli(
                hub.data_dir, "rollout", "start", "--app", "1.2.0", "--devices", names[2]
            )
            assert again.returncode == 2
            assert f"{names[2]} is in rollout {rid} already" in again.stderr
            assert cli(hub, "resume", str(rid)).strip() == f"rollout {rid} running"
            await event(events, rid, "rollout_resumed", 10)
            await event(events, rid, "rollout_device", 20, name=names[1], state="offered")
            assert cli(hub, "cancel", str(rid)).strip() == f"rollout {rid} cancelled"
            await event(events, rid, "rollout_cancelled", 10)
            refused = hub_cli(hub.data_dir, "rollout", "resume", str(rid))
            assert refused.returncode == 2 and "cancelled" in refused.stderr
            # The device under way finishes its update; the last one was never assigned.
            await subs[1].wait_until(
                lambda: firmware_version(subs[1]) == "1.2.0", scaled(90), "pa-2 on 1.2.0"
            )
            for sub in subs:
                await sub.stop()
        await events.close()
        assert device_states(hub, rid)[names[2]] == "pending"
        assert update_row(hub, names[2]) is None
        assert not of_rollout(events, rid, "rollout_device", name=names[2])

    asyncio.run(scenario())


def test_wrong_board_devices_are_refused_with_a_reason(hub: HubProcess, tmp_path: Path) -> None:
    """A bundle for esp32-devkitc and unix-sim devices that reported their board: each device is
    refused (never assigned, no OTA row) with the reason, and the rollout completes."""
    names = ["wb-1", "wb-2"]

    async def scenario() -> None:
        events = await Events.watch(hub.host, hub.mqtt_port)
        with fleet(tmp_path, hub, names):
            subs = await watch(hub, names)
            rid = start(hub, "--app", "1.2.0-esp32", "--devices", ",".join(names))
            await event(events, rid, "rollout_completed", 20)
            for sub in subs:
                await sub.stop()
        await events.close()
        for d in status(hub, rid)["devices"]:
            assert d["state"] == "refused", d
            assert "wrong board: the bundle is for esp32-devkitc" in d["error"]
            assert update_row(hub, d["device"]) is None

    asyncio.run(scenario())


def test_start_refuses_bad_requests_and_keeps_nothing(hub: HubProcess) -> None:
    """An unknown version, an empty target, bad percentages and a canary larger than the
    target are refused (exit 2, a message saying why) and no rollout is stored."""
    before = cli(hub, "list", "--json")
    for args, words in [
        (["--app", "7.7.7", "--devices", "x-1"], "no app version '7.7.7'"),
        (["--app", "1.2.0", "--devices", ""], "bad device id"),
        (["--app", "1.2.0", "--devices", "x-1", "--steps", "50%,20%"], "steps"),
        (["--app", "1.2.0", "--devices", "x-1", "--steps", "50%"], "last step must be 100%"),
        (["--app", "1.2.0", "--devices", "x-1", "--canary", "3"], "canary"),
        (["--app", "1.2.0", "--devices", "x-1", "--abort-failed-pct", "-1"], "abort_failed"),
    ]:
        result = hub_cli(hub.data_dir, "rollout", "start", *args)
        assert result.returncode == 2, (args, result.stdout)
        assert result.stderr.startswith("hub: error: ") and words in result.stderr, result.stderr
    assert cli(hub, "list", "--json") == before
    missing = hub_cli(hub.data_dir, "rollout", "status", "999")
    assert missing.returncode == 2 and "no rollout 999" in missing.stderr


def test_rollout_resumes_after_a_hub_restart(tmp_path: Path, bundles: dict[str, Path]) -> None:
    """The hub stopped while the canary downloads and started again on the same data dir and
    ports: the engine carries on from the stored state (the canary's assignment time kept, the
    start not announced twice) and every device ends on 1.2.0."""
    own = start_hub(tmp_path / "hub-data")
    assert hub_cli(own.data_dir, "app", "add", str(bundles["good"])).returncode == 0
    names = ["rs-1", "rs-2", "rs-3"]

    async def scenario() -> None:
        nonlocal own
        events = await Events.watch(own.host, own.mqtt_port)
        with fleet(tmp_path, own, names):
            subs = await watch(own, names)
            rid = start(own, "--app", "1.2.0", "--devices", ",".join(names), "--steps", "100%")
            await event(events, rid, "rollout_device", 30, name=names[0], state="downloading")
            assigned_at = status(own, rid)["devices"][0]["assigned_at"]
            port, ws = own.mqtt_port, own.ws_port
            own.stop()
            await events.close()
            for sub in subs:
                await sub.stop()
            own = start_hub(own.data_dir, "--mqtt-port", str(port), "--ws-port", str(ws))
            events = await Events.watch(own.host, own.mqtt_port)
            subs = [await Subscriber.start(own, name) for name in names]
            await event(events, rid, "rollout_completed", 120)
            for sub in subs:
                await sub.wait_until(
                    lambda s=sub: firmware_version(s) == "1.2.0", scaled(15), "fw 1.2.0"
                )
                await sub.stop()
        await events.close()
        found = status(own, rid)
        assert found["status"] == "completed" and found["counts"] == {"updated": 3}
        assert found["devices"][0]["assigned_at"] == assigned_at
        assert not of_rollout(events, rid, "rollout_started")  # announced once, before

    try:
        asyncio.run(scenario())
    finally:
        own.stop()


def test_group_target_is_resolved_when_started(hub: HubProcess) -> None:
    """--group takes the group's registered devices (hub/groups.py) at the start, in id order;
    a device neither registered nor seen is refused as unknown; an unknown group is refused;
    cancelling frees its devices for another rollout."""
    for name in ("gr-2", "gr-1"):
        assert hub_cli(hub.data_dir, "device", "add", name).returncode == 0
    added = hub_cli(hub.data_dir, "group", "add", "shelf", "--devices", "gr-2,gr-1")
    assert added.returncode == 0, added.stderr
    rid = start(hub, "--app", "1.2.0", "--group", "shelf", "--canary", "0")
    found = status(hub, rid)
    assert found["target"] == "group shelf"
    assert [d["device"] for d in found["devices"]] == ["gr-1", "gr-2"]
    ghost = start(hub, "--app", "1.2.0", "--devices", "ghost-1", "--canary", "0")
    await_status(hub, ghost, "completed")
    (member,) = status(hub, ghost)["devices"]
    assert member["state"] == "refused" and "unknown device" in member["error"]
    assert update_row(hub, "ghost-1") is None
    missing = hub_cli(hub.data_dir, "rollout", "start", "--app", "1.2.0", "--group", "nope")
    assert missing.returncode == 2 and "nope" in missing.stderr
    assert cli(hub, "cancel", str(rid)).strip() == f"rollout {rid} cancelled"
    again = start(hub, "--app", "1.2.0", "--devices", "gr-1")
    assert cli(hub, "cancel", str(again)).strip() == f"rollout {again} cancelled"
