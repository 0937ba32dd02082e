"""`mpy-hub-tools sim`: a fleet of real firmware instances on the MicroPython unix port.

With --data-dir (the hub's) the sim registers its devices, PREFIX-001 to PREFIX-NNN, and gives
each a fresh secret; an existing one's secret is rotated, which locks out whatever used the old
one. So the sim refuses, before it changes anything:
- while another sim runs the same ids on the same data dir (it holds ``sim-PREFIX.lock`` there
  for its whole run: a second ``sim --data-dir data`` beside ``make demo`` would lock the demo's
  devices out);
- to touch a registered device that is not a sim's (one that must use TLS or holds a client
  certificate: the sim registers its own for plain MQTT, without certificates), unless --force.

--hub may list several addresses, comma-separated: each device gets them all as its `hubs`
setting and fails over between them as a deployed one does.

It reads its devices' output: a refused CONNECT is reported once (``sim: ID: credentials refused
(CONNACK 4)``) and that device stops, since a refusal will not cure itself; a run in which no
device ever connected ends in an error (exit code 2).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import signal
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from hub.registry import TLS_REQUIRED, Registry
from hub.topics import DEVICE_ID_RE
from tools import mpunix
from tools.credentials import with_hubs
from tools.diagnose import CONNECTED_RE, CREDENTIALS_REFUSED, refused_credentials
from tools.errors import ToolError
from tools.hubaddr import HubAddress, hubs_url, parse_hubs

MAX_COUNT = 999  # PREFIX-001 .. PREFIX-999; each device is a process
MAX_PERIOD_S = 86400  # the firmware's range for period_s (node/config.py)


class SimError(ToolError):
    """A mistake in the sim's arguments, or a run in which no device got in."""


@dataclass
class FleetRun:
    """What the devices said: who connected, and who was refused (with the CONNACK code)."""

    connected: set[str] = field(default_factory=set)
    refused: dict[str, int] = field(default_factory=dict)


def device_ids(count: int, prefix: str = "sim") -> list[str]:
    return [f"{prefix}-{i:03d}" for i in range(1, count + 1)]


def check_ids(prefix: str, count: int) -> list[str]:
    if not 1 <= count <= MAX_COUNT:
        raise SimError(f"--count must be 1 to {MAX_COUNT}")
    ids = device_ids(count, prefix)
    if not all(DEVICE_ID_RE.fullmatch(device) for device in ids):
        raise SimError(
            f"--prefix {prefix!r} does not make device ids ({ids[-1]!r}): use a-z, 0-9, '-' "
            "and '_', starting with a letter or digit, at most 28 characters"
        )
    return ids


async def _stream(
    device: str, stream: asyncio.StreamReader, fleet: FleetRun, halt: asyncio.Event
) -> None:
    while raw := await stream.readline():
        line = raw.decode(errors="replace")
        sys.stdout.write(f"[{device}] {line}")
        if CONNECTED_RE.match(line):
            fleet.connected.add(device)
        code = refused_credentials(line)
        if code is not None and device not in fleet.refused:
            fleet.refused[device] = code
            why = CREDENTIALS_REFUSED[code]
            sys.stdout.write(f"sim: {device}: credentials refused (CONNACK {code}, {why})\n")
            halt.set()
        sys.stdout.flush()


async def _run_device(device: str, folder: Path, stop: asyncio.Event, fleet: FleetRun) -> None:
    """Runs one device until stop (or its refusal), restarting it when its firmware reboots."""
    halt = asyncio.Event()
    while not stop.is_set() and not halt.is_set():
        proc = await asyncio.create_subprocess_exec(
            *mpunix.firmware_command(),
            cwd=folder,
            env=mpunix.firmware_env(),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,  # Ctrl-C reaches the sim, which then stops its devices
        )
        assert proc.stdout is not None
        reader = asyncio.create_task(_stream(device, proc.stdout, fleet, halt))
        waiters = {asyncio.create_task(e.wait()) for e in (stop, halt)}
        waiter = asyncio.create_task(proc.wait())
        await asyncio.wait({*waiters, waiter}, return_when=asyncio.FIRST_COMPLETED)
        for task in waiters:
            task.cancel()
        if proc.returncode is None:
            proc.terminate()  # like pulling the plug: the hub publishes the device's will
            await proc.wait()
        await reader
        if proc.returncode != mpunix.EXIT_REBOOT and not (stop.is_set() or halt.is_set()):
            print(f"[{device}] firmware exited with code {proc.returncode}", flush=True)
            return


@contextlib.contextmanager
def fleet_lock(data_dir: Path, prefix: str) -> Iterator[None]:
    """Holds ``sim-PREFIX.lock`` in the data dir for the run; refuses if another sim does."""
    data_dir.mkdir(parents=True, exist_ok=True)
    path = data_dir / f"sim-{prefix}.lock"
    with open(path, "a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise SimError(
                f"another sim is running devices {prefix}-NNN on {data_dir} (it holds {path}): "
                "new secrets would lock them out; give another --prefix"
            ) from None
        yield


def provision(data_dir: Path, devices: list[str], *, force: bool = False) -> dict[str, str]:
    """Registers each simulated device in the hub's registry (allowed without TLS) and returns
    fresh secrets; a device registered by an earlier run gets its secret rotated. A registered
    device that is not a sim's is refused, before anything changes, unless ``force``."""
    registry = Registry(data_dir)
    try:
        existing = {d: registry.get(d) for d in devices}
        foreign = [
            d
            for d, entry in existing.items()
            if entry is not None
            and (entry.tls_policy == TLS_REQUIRED or entry.cert_fingerprint is not None)
        ]
        if foreign and not force:
            raise SimError(
                f"{', '.join(foreign)} registered on this hub for TLS, not by a sim: a new secret "
                "would lock out whatever uses the old one; give another --prefix (or --force)"
            )
        secrets = {}
        for device, entry in existing.items():
            if entry is None:
                secrets[device] = registry.add(device, allow_insecure=True)
            else:
                registry.set_tls_policy(device, allow_insecure=True)
                secrets[device] = registry.rotate(device)
        return secrets
    finally:
        registry.close()


async def run_fleet(
    hubs: list[HubAddress],
    devices: list[str],
    seconds: float | None,
    period_s: int,
    work_dir: Path,
    secrets: dict[str, str],
) -> FleetRun:
    mpunix.check_built()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    folders = []
    for device in devices:
        settings = mpunix.DeviceSettings(
            id=device,
            hub_host=hubs[0].host,
            hub_port=hubs[0].port,
            period_s=period_s,
            username=device if device in secrets else None,
            password=secrets.get(device),
        )
        folder = mpunix.prepare_device_dir(work_dir / device, settings)
        if len(hubs) > 1:  # the firmware's list form (tools/credentials.py, as deploy writes it)
            (folder / "settings.json").write_text(json.dumps(with_hubs(settings, hubs)))
        folders.append((device, folder))
    print(f"sim: {len(devices)} devices -> {hubs_url(hubs)}", flush=True)
    fleet = FleetRun()
    tasks = [asyncio.create_task(_run_device(d, f, stop, fleet)) for d, f in folders]
    if seconds is not None:
        loop.call_later(seconds, stop.set)
    await asyncio.gather(*tasks)
    return fleet


def run(
    hub: str,
    count: int,
    seconds: float | None,
    period_s: int,
    work_dir: Path | None,
    data_dir: Path | None = None,
    *,
    prefix: str = "sim",
    force: bool = False,
) -> FleetRun:
    """Runs the fleet until Ctrl-C or ``seconds``; SimError if no device ever connected."""
    devices = check_ids(prefix, count)
    if not 1 <= period_s <= MAX_PERIOD_S:
        raise SimError(f"--period must be 1 to {MAX_PERIOD_S} seconds")
    hubs = parse_hubs(hub)  # one address, or several each device tries in turn
    if hubs[0].tls:  # all of one kind
        raise SimError(
            "simulated devices connect without TLS (the unix port has no certificates "
            f"deployed): give --hub mqtt://{hubs[0].host}:PORT"
        )
    with contextlib.ExitStack() as stack:
        secrets: dict[str, str] = {}
        if data_dir is not None:
            stack.enter_context(fleet_lock(data_dir, prefix))
            secrets = provision(data_dir, devices, force=force)
        folder = work_dir or Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="sim-")))
        fleet = asyncio.run(run_fleet(hubs, devices, seconds, period_s, folder, secrets))
    if not fleet.connected:
        refused = f"; {len(fleet.refused)} refused their credentials" if fleet.refused else ""
        where = " or ".join(h.where for h in hubs)
        raise SimError(f"no device connected to the hub at {where}{refused}")
    return fleet
