"""The real firmware across a hub crash: its last status and health, its retained topics, and
a command sent while it was offline all survive SIGKILL of the hub; a device online when the
hub is killed comes back on its own, on the firmware's reconnect schedule, with every reading."""

import asyncio
import json
import signal
import sqlite3
import time
from pathlib import Path

from hub import topics
from tests.hub.fleet import admin_token, call, get, poll
from tests.support.devices import running_device
from tests.support.firmware import FAST, assert_backoff, retry_delays
from tests.support.hubproc import HubProcess, start_hub
from tests.support.waits import eventually_async
from tests.support.mqtt import RawClient


async def _retained(hub: HubProcess, topic: str) -> bytes:
    """What a new subscriber is sent for the topic's retained message."""
    client = await RawClient.tcp(hub.host, hub.mqtt_port)
    try:
        assert (await client.connect("restart-viewer"))[1] == 0
        assert await client.subscribe([(topic, 1)]) == [1]
        message = await client.next_message(10)
        assert message.retain and message.topic == topic
        return message.payload
    finally:
        await client.disconnect()


def _stored_status(data_dir: Path) -> object:
    """The device's status as the hub's records hold it."""
    db = sqlite3.connect(f"file:{data_dir / 'telemetry.sqlite3'}?mode=ro", uri=True)
    try:
        row = db.execute("SELECT state FROM device_state WHERE device = 'dur-1'").fetchone()
    finally:
        db.close()
    return json.loads(row[0]).get("status") if row else None


def _online_with_health(hub: HubProcess, admin: str) -> dict[str, object] | None:
    """The device's view once the hub knows it online with its health, else None."""
    status, _, raw = call(hub, "/api/devices/dur-1", admin)
    if status == 404:
        return None  # not seen yet
    view: dict[str, object] = json.loads(raw)
    return view if view["status"] == "online" and view["health"] else None


def test_command_status_and_health_survive_a_hub_crash(tmp_path: Path) -> None:
    """A unix-port device goes offline, a command is sent to it, the hub is killed with
    SIGKILL and restarted: the API serves the device's last status and health at once, new
    subscribers get its retained status and health, and the command reaches the device when it
    comes back and its reply is recorded."""
    data_dir = tmp_path / "data"
    hub = start_hub(data_dir)
    try:
        admin = admin_token(hub)
        path = "/api/devices/dur-1"

        async def before() -> tuple[dict[str, object], int]:
            with running_device(tmp_path / "first", hub, "dur-1", period_s=30, **FAST):
                view = await poll(lambda: _online_with_health(hub, admin), 30, "online, health")
            await poll(lambda: get(hub, path, admin)["status"] == "offline", 30, "offline")
            # The console's device state is written once a second (hub/recorder.py), unlike
            # the broker's state, which is written before a publish is acknowledged.
            await poll(lambda: _stored_status(data_dir) == "offline", 10, "the state stored")
            status, _, raw = call(hub, f"{path}/commands?wait=0", admin, {"op": "ping"})
            sent = json.loads(raw)
            assert status == 202 and sent["status"] == "pending" and sent["online"] is False
            return view, int(sent["id"])

        view, command = asyncio.run(before())
        hub.stop(signal.SIGKILL)
        hub = start_hub(data_dir)

        async def after() -> None:
            again = get(hub, path, admin)  # right after the restart, the device still away
            assert again["status"] == "offline"
            assert again["health"] == view["health"] and again["boot"] == view["boot"]
            assert await _retained(hub, topics.status_topic("dur-1")) == b"offline"
            meta = topics.parse_meta(await _retained(hub, topics.meta_topic("dur-1")))
            assert meta["boot"] == view["boot"]
            assert get(hub, f"{path}/commands/{command}", admin)["status"] == "pending"
            with running_device(tmp_path / "second", hub, "dur-1", period_s=30, **FAST):
                done = await poll(
                    lambda: (c := get(hub, f"{path}/commands/{command}", admin))["status"]
                    == "replied" and c, 30, "the command's reply",
                )
            assert done["reply"]["ok"] is True and done["reply"]["id"] == command

        asyncio.run(after())
    finally:
        hub.stop()


def _stored_seqs(data_dir: Path, device: str) -> dict[str, list[int]]:
    """The sequence numbers stored for the device, by boot, in order."""
    db = sqlite3.connect(f"file:{data_dir / 'telemetry.sqlite3'}?mode=ro", uri=True)
    try:
        rows = db.execute(
            "SELECT boot, seq FROM readings WHERE device = ? ORDER BY boot, seq", (device,)
        ).fetchall()
    finally:
        db.close()
    out: dict[str, list[int]] = {}
    for boot, seq in rows:
        out.setdefault(boot, []).append(seq)
    return out


def test_a_device_online_when_the_hub_is_killed_comes_back_on_schedule(tmp_path: Path) -> None:
    """A unix-port device online when its hub is SIGKILLed retries first within the spread
    window (0 to 2 x backoff_min_ms), then, refused while the hub starts again on the same
    port, waits half to all of a step that starts at backoff_min_ms and doubles; it is online
    again on the new hub and every reading it took is stored once, none missing."""
    data_dir = tmp_path / "data"
    hub = start_hub(data_dir)
    port = hub.mqtt_port

    def stored() -> list[int]:
        by_boot = _stored_seqs(data_dir, "crash-1")
        assert len(by_boot) <= 1, by_boot  # one boot of the device
        return next(iter(by_boot.values()), [])

    async def scenario() -> None:
        nonlocal hub
        with running_device(tmp_path, hub, "crash-1", period_s=1, **FAST) as device:
            await eventually_async(lambda: len(stored()) >= 2, 20, "readings stored")
            logged = len(device.log())
            killed = time.monotonic()
            hub.stop(signal.SIGKILL)
            # Refused while the hub is down: the device fails a few attempts first.
            await eventually_async(
                lambda: len(retry_delays(device.log()[logged:])) >= 4, 20, "refused attempts"
            )
            hub = start_hub(data_dir, "--mqtt-port", str(port))
            await eventually_async(
                lambda: device.log()[logged:].count("connected to") == 1, 20, "online again"
            )
            down_s = time.monotonic() - killed
            after = retry_delays(device.log()[logged:])
            assert all(err == "OSError(111,)" for err, _ in after[1:]), after  # refused
            steps = [FAST["backoff_min_ms"]]
            while len(steps) < len(after) - 1:
                steps.append(min(steps[-1] * 2, FAST["backoff_max_ms"]))
            assert_backoff([ms for _, ms in after], 2 * FAST["backoff_min_ms"], steps)
            # The downtime's readings (one a second) waited in the flash ring: all stored,
            # each once, none missing.
            await eventually_async(
                lambda: (seqs := stored()) == list(range(len(seqs))) and len(seqs) > down_s,
                20,
                "the downtime's readings stored",
            )

    try:
        asyncio.run(scenario())
    finally:
        hub.stop()
