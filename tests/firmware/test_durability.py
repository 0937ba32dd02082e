"""Acknowledged means stored: real firmware (and a fast raw publisher) against a hub that is
killed with SIGKILL, or whose data dir fills up. A reading a device deleted from its flash ring
(because the hub acknowledged it) must be in storage; the rest stay on the device until then.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.firmware import FAST
from tests.support.devices import Device, running_device
from tests.support.durable import Events, Publisher, read_ring, stored
from tests.support.faultproxy import FaultProxy
from tests.support.hubproc import HubProcess, scaled, start_hub
from tests.support.waits import eventually_async
from tools import mpunix

SENSORS = 6  # simulated sensors per device: 6 readings a second each


def _board(sensors: int = SENSORS) -> dict[str, Any]:
    return {
        "name": "unix-sim",
        "chip": "unix",
        "pins": {"led": 2},
        "outputs": [],
        "watchdog_ms": 0,
        "deep_sleep_s": 0,
        "sensors": [{"kind": "sim", "name": f"s{n}", "decimals": 1} for n in range(sensors)],
    }


@contextlib.contextmanager
def _devices(
    tmp_path: Path, hub: HubProcess, port: int, names: list[str]
) -> Iterator[list[Device]]:
    mpunix.build_mpy()  # once, before devices start together (each would compile it)
    with contextlib.ExitStack() as stack:
        yield [
            stack.enter_context(
                running_device(tmp_path, hub, name, port=port, board_json=_board(), **FAST)
            )
            for name in names
        ]


def _assert_acknowledged_are_stored(device: Device, data_dir: Path, name: str) -> int:
    """Every reading the device deleted from its ring is stored; returns how many that is."""
    ring = read_ring(device.folder)
    acknowledged = ring.acknowledged()
    have = set(stored(data_dir, name))
    missing = sorted(acknowledged - have)
    assert not missing, f"{name}: {len(missing)} acknowledged readings not stored: {missing[:10]}"
    return len(acknowledged)


def test_kill_9_loses_no_acknowledged_reading(tmp_path: Path) -> None:
    """Three SIGKILLs of the hub while firmware devices and a raw publisher send: after each
    restart every reading that was acknowledged is in storage, and in the end every reading
    the devices took is stored, each once."""
    data = tmp_path / "data"
    logs = (tmp_path / "hub.log").open("w")
    names = ["kill-1", "kill-2"]

    async def scenario() -> None:
        hub = start_hub(data, stderr=logs)
        publisher = Publisher("kill-raw")
        try:
            async with FaultProxy((hub.host, hub.mqtt_port)) as proxy:
                with _devices(tmp_path, hub, proxy.port, names) as devices:
                    for round_ in range(3):
                        task = asyncio.create_task(publisher.run(hub.host, hub.mqtt_port))
                        before = len(publisher.acked)
                        await _until(
                            lambda n=before + 100: len(publisher.acked) > n,
                            10,
                            "100 more acknowledged readings before the kill",
                        )
                        hub.proc.send_signal(signal.SIGKILL)
                        hub.proc.wait(timeout=scaled(10))
                        await asyncio.wait_for(task, scaled(5))  # it saw the connection die
                        proxy.upstream = None
                        proxy.drop()
                        hub = start_hub(data, stderr=logs)
                        proxy.upstream = (hub.host, hub.mqtt_port)
                        missing = publisher.acked - set(stored(data, "kill-raw"))
                        assert not missing, f"round {round_}: acknowledged, not stored: " + str(
                            sorted(missing)[:10]
                        )
                    # Back to normal: the devices send what their rings hold.
                    await _until(
                        lambda: all(
                            len(read_ring(d.folder).acknowledged()) > 3 * SENSORS * 3
                            for d in devices
                        ),
                        15,
                        f"every device to have {3 * SENSORS * 3} readings acknowledged",
                    )
                    for device in devices:
                        device.kill()
            hub.stop()
            for device, name in zip(devices, names, strict=True):
                ring = read_ring(device.folder)
                assert ring.dropped == 0
                count = _assert_acknowledged_are_stored(device, data, name)
                assert count > 3 * SENSORS * 3, f"{name}: only {count} readings acknowledged"
                rows = stored(data, name)
                assert len(rows) == len(set(rows))
                # Nothing the device took is missing below the last one it deleted.
                (boot,) = ring.boots()
                seqs = {s for b, s in rows if b == boot}
                assert set(range(ring.first)) <= seqs
        finally:
            hub.stop()

    asyncio.run(scenario())


def _mount_tmpfs(where: Path, size: str) -> None:
    where.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        pytest.skip("mounting a small filesystem for the data dir needs root")
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(where)],
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {result.stderr.strip()}")


def _fill(where: Path) -> Path:
    """Writes a file until the filesystem is full; returns it."""
    filler = where / "filler"
    chunk = b"\0" * 65536
    with filler.open("wb", buffering=0) as f:
        with contextlib.suppress(OSError):
            while True:
                f.write(chunk)
        with contextlib.suppress(OSError):
            while True:
                f.write(b"\0" * 512)
    return filler


def test_full_disk_stops_acknowledging_and_loses_nothing(tmp_path: Path) -> None:
    """With the data dir on a small filesystem that fills up, the hub stops acknowledging
    (store_failure, disk_low events): every reading is stored or still on its device; once
    space is freed (store_recovered) every reading ends up stored, once."""
    data = tmp_path / "data"
    _mount_tmpfs(data, "3m")
    logs = (tmp_path / "hub.log").open("w")
    names = ["full-1", "full-2"]

    async def scenario() -> None:
        hub = start_hub(data, "--disk-low", "50%", stderr=logs)
        try:
            events = await Events.watch(hub.host, hub.mqtt_port)
            with _devices(tmp_path, hub, hub.mqtt_port, names) as devices:
                await _until(lambda: all(stored(data, n) for n in names), 15, "first readings")
                filler = _fill(data)
                await events.wait_for("store_failure", 10)
                await events.wait_for("disk_low", 2)  # checked at once on a store failure
                full_since = {n: len(stored(data, n)) for n in names}
                # Devices keep reading; the hub cannot store, so their rings fill up.
                await _until(
                    lambda: all(
                        (ring := read_ring(d.folder)).next - ring.first > SENSORS * 2
                        for d in devices
                    ),
                    10,
                    "the rings to fill while the disk is full",
                )
                for device, name in zip(devices, names, strict=True):
                    _assert_acknowledged_are_stored(device, data, name)
                    ring = read_ring(device.folder)
                    assert ring.next - ring.first > SENSORS * 2, "the ring did not fill up"
                filler.unlink()
                await events.wait_for("store_recovered", 15)
                await _until(  # readings are acknowledged again: the rings drain
                    lambda: all(
                        read_ring(d.folder).first > full_since[n]
                        for d, n in zip(devices, names, strict=True)
                    ),
                    15,
                    "the rings to drain after the disk has room",
                )
                for device in devices:
                    device.kill()
            await events.close()
            for device, name in zip(devices, names, strict=True):
                _assert_acknowledged_are_stored(device, data, name)
                ring = read_ring(device.folder)
                rows = stored(data, name)
                assert len(rows) == len(set(rows))
                (boot,) = ring.boots()
                seqs = {s for b, s in rows if b == boot}
                assert set(range(ring.first)) <= seqs
                assert ring.first > full_since[name]  # readings were acknowledged again
        finally:
            hub.stop()
            subprocess.run(["umount", "-l", str(data)], capture_output=True)

    asyncio.run(scenario())


async def _until(check: Any, timeout: float, what: str) -> None:
    await eventually_async(check, timeout, what, poll=0.1)
