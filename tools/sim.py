"""`python -m tools sim`: a fleet of real firmware instances on the MicroPython unix port."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
import tempfile
from pathlib import Path
from urllib.parse import urlsplit

from hub.registry import Registry
from tools import mpunix


class SimError(Exception):
    """A mistake in the sim's arguments."""


def parse_hub_url(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    if parts.scheme != "mqtt" or not parts.hostname:
        raise SimError(f"--hub must look like mqtt://HOST:PORT, not {url!r}")
    try:
        port = parts.port or 1883
    except ValueError:
        raise SimError(f"bad port in --hub {url!r}") from None
    return parts.hostname, port


def device_ids(count: int, prefix: str = "sim") -> list[str]:
    return [f"{prefix}-{i:03d}" for i in range(1, count + 1)]


async def _stream(device: str, stream: asyncio.StreamReader) -> None:
    while line := await stream.readline():
        sys.stdout.write(f"[{device}] {line.decode(errors='replace')}")
        sys.stdout.flush()


async def _run_device(device: str, folder: Path, stop: asyncio.Event) -> None:
    """Runs one device until stop, restarting it when its firmware reboots."""
    while not stop.is_set():
        proc = await asyncio.create_subprocess_exec(
            *mpunix.firmware_command(),
            cwd=folder,
            env=mpunix.firmware_env(),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,  # Ctrl-C reaches the sim, which then stops its devices
        )
        assert proc.stdout is not None
        reader = asyncio.create_task(_stream(device, proc.stdout))
        stopper = asyncio.create_task(stop.wait())
        waiter = asyncio.create_task(proc.wait())
        await asyncio.wait({stopper, waiter}, return_when=asyncio.FIRST_COMPLETED)
        stopper.cancel()
        if proc.returncode is None:
            proc.terminate()  # like pulling the plug: the hub publishes the device's will
            await proc.wait()
        await reader
        if proc.returncode != mpunix.EXIT_REBOOT and not stop.is_set():
            print(f"[{device}] firmware exited with code {proc.returncode}", flush=True)
            return


def provision(data_dir: Path, devices: list[str]) -> dict[str, str]:
    """Registers each simulated device in the hub's registry (allowed without TLS) and returns
    fresh secrets; a device registered by an earlier run gets its secret rotated."""
    registry = Registry(data_dir)
    try:
        secrets = {}
        for device in devices:
            if registry.get(device) is None:
                secrets[device] = registry.add(device, allow_insecure=True)
            else:
                registry.set_tls_policy(device, allow_insecure=True)
                secrets[device] = registry.rotate(device)
        return secrets
    finally:
        registry.close()


async def run_fleet(
    host: str,
    port: int,
    count: int,
    seconds: float | None,
    period_s: int,
    work_dir: Path,
    data_dir: Path | None = None,
) -> None:
    mpunix.check_built()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    secrets = provision(data_dir, device_ids(count)) if data_dir is not None else {}
    devices = []
    for device in device_ids(count):
        settings = mpunix.DeviceSettings(
            id=device,
            hub_host=host,
            hub_port=port,
            period_s=period_s,
            username=device if device in secrets else None,
            password=secrets.get(device),
        )
        devices.append((device, mpunix.prepare_device_dir(work_dir / device, settings)))
    print(f"sim: {count} devices -> mqtt://{host}:{port}", flush=True)
    tasks = [asyncio.create_task(_run_device(d, f, stop)) for d, f in devices]
    if seconds is not None:
        loop.call_later(seconds, stop.set)
    await asyncio.gather(*tasks)
    print("sim: stopped", flush=True)


def run(
    hub: str,
    count: int,
    seconds: float | None,
    period_s: int,
    work_dir: Path | None,
    data_dir: Path | None = None,
) -> None:
    if count < 1:
        raise SimError("--count must be at least 1")
    host, port = parse_hub_url(hub)
    with contextlib.ExitStack() as stack:
        folder = work_dir or Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="sim-")))
        asyncio.run(run_fleet(host, port, count, seconds, period_s, folder, data_dir))
