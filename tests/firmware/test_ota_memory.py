"""What loads code after boot fits a board's heap: under -X heapsize=64K the real App loop
downloads a whole app update, and takes a settings update, from a real hub without a
MemoryError and with room to spare (tests/mp/heap_probe.py measures)."""

from __future__ import annotations

import asyncio
import json
import subprocess
from collections.abc import Awaitable, Callable
from pathlib import Path

from hub import topics
from tests.ota.conftest import build
from tests.support.firmware import Subscriber
from tests.support.hubproc import HubProcess, hub_cli, scaled
from tests.support.micropython import MP_TESTS
from tests.support.mqtt import publish_packet
from tools import mpunix

SPARE = 4 * 1024  # the least room the high-water mark leaves in the heap


def heap_during(
    hub: HubProcess, folder: Path, device: str, act: Callable[[Subscriber], Awaitable[None]]
) -> dict[str, object]:
    """Runs the heap probe as `device` in `folder`, does `act` once it is online and returns
    the probe's measurements (it ends where the device would reboot)."""
    env = mpunix.firmware_env()
    env["MICROPYPATH"] += f":{MP_TESTS}"
    command = mpunix.firmware_command(mpunix.HEAP_SIZE, MP_TESTS / "heap_probe.py")

    async def scenario() -> dict[str, object]:
        sub = await Subscriber.start(hub, device)
        proc = await asyncio.to_thread(
            subprocess.Popen, command, cwd=folder, env=env, stdout=subprocess.PIPE, text=True
        )
        await sub.wait_until(lambda: sub.online(), scaled(20), "the device online")
        await act(sub)
        out, _ = await asyncio.to_thread(proc.communicate, timeout=scaled(90))
        await sub.stop()
        assert proc.returncode == 0, out
        result: dict[str, object] = json.loads(out.splitlines()[-1])
        return result

    stats = asyncio.run(scenario())
    print(device, "heap", stats)
    return stats


def assert_room(stats: dict[str, object]) -> None:
    """The probe reached the reboot with no exception in the loop; the high-water mark is above
    the heap after boot (the work was measured) and SPARE below the total."""
    assert stats["done"] is True, stats
    assert stats["errors"] == 0, stats
    total, base, high = (int(str(stats[k])) for k in ("heap_total", "heap_base", "heap_high"))
    assert total <= 64 * 1024
    assert base < high <= total - SPARE, stats


def test_download_heap_high_water_stays_in_64k(hub: HubProcess, tmp_path: Path) -> None:
    """A whole app update downloads in 64 KB with room to spare."""
    bundle = build(tmp_path / "b.tar", "1.2.0")
    assert hub_cli(hub.data_dir, "app", "add", str(bundle)).returncode == 0
    settings = mpunix.DeviceSettings("heap-1", hub.host, hub.mqtt_port, period_s=1)
    folder = mpunix.prepare_device_dir(tmp_path / "heap-1", settings)

    async def assign(sub: Subscriber) -> None:
        assert hub_cli(hub.data_dir, "app", "assign", "heap-1", "1.2.0").returncode == 0

    assert_room(heap_during(hub, folder, "heap-1", assign))


def test_settings_update_heap_high_water_stays_in_64k(hub: HubProcess, tmp_path: Path) -> None:
    """A command, a refused settings update (its checks' code unloaded after) and one with a
    `hubs` list that begins its trial all run in 64 KB with room to spare."""
    settings = mpunix.DeviceSettings("heap-2", hub.host, hub.mqtt_port, period_s=1)
    folder = mpunix.prepare_device_dir(tmp_path / "heap-2", settings)
    hubs = [f"127.0.0.1:{hub.mqtt_port}", f"{hub.host}:{hub.mqtt_port}"]

    async def update(sub: Subscriber) -> None:
        assert (await sub.command({"id": 1, "op": "ping"}))["ok"] is True
        bad = await sub.command({"id": 2, "op": "settings", "set": {"hubs": ["nope"]}})
        assert not bad["ok"] and "setting 'hubs' must be a list" in bad["error"]
        good = {"id": 3, "op": "settings", "set": {"hubs": hubs}}  # answered after the reboot
        packet = publish_packet(topics.command_topic("heap-2"), json.dumps(good).encode(), qos=1)
        await sub.client.send(packet)

    assert_room(heap_during(hub, folder, "heap-2", update))
    assert json.loads((folder / "settings.json").read_text())["hubs"] == hubs  # trial begun
