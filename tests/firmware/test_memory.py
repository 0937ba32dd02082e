"""The firmware's steady state fits a board's heap: 10,000 readings under -X heapsize=64K."""

import asyncio
import json
import subprocess
from pathlib import Path

import pytest

from tests.support.firmware import Subscriber, assert_complete
from tests.support.hubproc import HubProcess, scaled
from tools import mpunix

READINGS = 10_000


@pytest.mark.parametrize("form", ["hub_host", "hubs"])
def test_ten_thousand_readings_in_64k_without_memory_error(
    form: str, hub: HubProcess, tmp_path: Path
) -> None:
    """The real App loop sends 10,000 readings through ring, link and hub with a 64 KiB heap:
    no MemoryError, nothing dropped, every reading received once deduplicated, in order; with
    one hub address (`hub_host`) and with a `hubs` list (whose parser is loaded at boot)."""
    settings = mpunix.DeviceSettings("mem-1", hub.host, hub.mqtt_port)
    folder = mpunix.prepare_device_dir(tmp_path / "mem-1", settings)
    if form == "hubs":
        hubs = [f"{hub.host}:{hub.mqtt_port}", "127.0.0.1:9"]
        with_hubs = {"id": "mem-1", "hubs": hubs, "period_s": settings.period_s}
        (folder / "settings.json").write_text(json.dumps(with_hubs))
    command = mpunix.firmware_command(mpunix.HEAP_SIZE, mpunix.STEADY_STATE, str(READINGS))

    async def scenario() -> tuple[dict[str, float], Subscriber]:
        sub = await Subscriber.start(hub, "mem-1")

        def run() -> subprocess.CompletedProcess[str]:
            return subprocess.run(
                command,
                cwd=folder,
                env=mpunix.firmware_env(),
                capture_output=True,
                text=True,
                timeout=scaled(60),
            )

        result = await asyncio.to_thread(run)
        assert result.returncode == 0, result.stdout + result.stderr
        await sub.wait_readings(READINGS, 10)
        await sub.stop()
        return json.loads(result.stdout.splitlines()[-1]), sub

    stats, sub = asyncio.run(scenario())
    assert stats["readings"] == READINGS and stats["dropped"] == 0
    assert stats["heap_total"] <= 64 * 1024
    assert stats["heap_base"] < stats["heap_high"] < stats["heap_total"]
    assert stats["heap_free_end"] > 8 * 1024  # room left for commands and health
    (seqs,) = assert_complete(sub.readings()).values()
    assert len(seqs) == READINGS
