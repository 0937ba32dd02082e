"""Real firmware instances on the MicroPython unix port, for tests."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.support.hubproc import HubProcess
from tools import mpunix


@contextmanager
def running_device(
    folder: Path, hub: HubProcess, device_id: str, *, period_s: int = 1, keepalive_s: int = 30
) -> Iterator[subprocess.Popen[bytes]]:
    settings = mpunix.DeviceSettings(
        id=device_id,
        hub_host=hub.host,
        hub_port=hub.mqtt_port,
        period_s=period_s,
        keepalive_s=keepalive_s,
    )
    mpunix.prepare_device_dir(folder / device_id, settings)
    log = (folder / f"{device_id}.log").open("wb")
    proc = mpunix.spawn(folder / device_id, stdout=log, stderr=subprocess.STDOUT)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        log.close()
