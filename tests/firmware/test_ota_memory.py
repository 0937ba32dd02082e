"""An app update's download fits a board's heap: the real App loop under -X heapsize=64K
downloads a whole bundle from a real hub without a MemoryError."""

from __future__ import annotations

import asyncio
import json
import subprocess
from pathlib import Path

import pytest

from tests.ota.conftest import build
from tests.support.firmware import Subscriber
from tests.support.hubproc import HubProcess, hub_cli, scaled
from tests.support.micropython import MP_TESTS
from tools import mpunix


@pytest.mark.usefixtures("hub")
def test_download_heap_high_water_stays_in_64k(hub: HubProcess, tmp_path: Path) -> None:
    """The download completes in 64 KB with no exception in the loop; the high-water mark is
    above the idle heap (the download was measured) and within the budget."""
    bundle = build(tmp_path / "b.tar", "1.2.0")
    assert hub_cli(hub.data_dir, "app", "add", str(bundle)).returncode == 0
    settings = mpunix.DeviceSettings("heap-1", hub.host, hub.mqtt_port, period_s=1)
    folder = mpunix.prepare_device_dir(tmp_path / "heap-1", settings)
    env = mpunix.firmware_env()
    env["MICROPYPATH"] += f":{MP_TESTS}"
    command = mpunix.firmware_command(mpunix.HEAP_SIZE, MP_TESTS / "ota_heap.py")

    async def scenario() -> dict[str, object]:
        sub = await Subscriber.start(hub, "heap-1")
        proc = await asyncio.to_thread(
            subprocess.Popen, command, cwd=folder, env=env, stdout=subprocess.PIPE, text=True
        )
        await sub.wait_until(lambda: sub.online(), scaled(20), "the device online")
        assert hub_cli(hub.data_dir, "app", "assign", "heap-1", "1.2.0").returncode == 0
        out, _ = await asyncio.to_thread(proc.communicate, timeout=scaled(90))
        await sub.stop()
        assert proc.returncode == 0, out
        result: dict[str, object] = json.loads(out.splitlines()[-1])
        return result

    stats = asyncio.run(scenario())
    print("download heap", stats)
    assert stats["done"] is True, stats
    assert stats["errors"] == 0, stats
    total = int(stats["heap_total"])  # type: ignore[call-overload]
    assert total <= 64 * 1024
    assert int(stats["heap_base"]) < int(stats["heap_high"]) < total  # type: ignore[call-overload]
