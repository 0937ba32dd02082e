"""Runs the real firmware under the MicroPython unix port, one process per device."""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
MICROPYTHON = ROOT / "build" / "bin" / "micropython"
FIRMWARE_DIR = ROOT / "firmware"
MPLIB_DIR = ROOT / "build" / "mplib"  # umqtt.simple for host runs (stock ESP32 builds freeze it)
UNIXPORT_DIR = ROOT / "tools" / "unixport"
RUNNER = UNIXPORT_DIR / "run.py"
BOARDS_DIR = ROOT / "boards"
EXIT_REBOOT = 75  # tools/unixport/fake_machine.py: machine.reset()
HEAP_SIZE = "64K"  # as tight as a real ESP32's free heap


class UnixPortMissing(RuntimeError):
    """The MicroPython unix port has not been built."""


@dataclass(frozen=True)
class DeviceSettings:
    """What a deploy writes to a device's settings.json."""

    id: str
    hub_host: str
    hub_port: int
    username: str | None = None
    password: str | None = None
    period_s: int = 5
    keepalive_s: int = 30

    def to_json(self) -> dict[str, Any]:
        data = {k: v for k, v in self.__dict__.items() if v is not None}
        return data


def check_built() -> None:
    missing = [p for p in (MICROPYTHON, MPLIB_DIR / "umqtt" / "simple.py") if not p.exists()]
    if missing:
        names = ", ".join(str(p.relative_to(ROOT)) for p in missing)
        raise UnixPortMissing(f"{names} missing: run tools/bootstrap.sh (or make setup) first")


def prepare_device_dir(folder: Path, settings: DeviceSettings, board: str = "unix-sim") -> Path:
    """Lays out a device's filesystem root: its settings and its board file."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "settings.json").write_text(json.dumps(settings.to_json()))
    board_file = BOARDS_DIR / f"{board}.json"
    (folder / "board.json").write_text(board_file.read_text())
    return folder


def firmware_env() -> dict[str, str]:
    env = dict(os.environ)
    env["MICROPYPATH"] = os.pathsep.join(map(str, (FIRMWARE_DIR, MPLIB_DIR, UNIXPORT_DIR)))
    return env


def firmware_command(heap: str = HEAP_SIZE) -> list[str]:
    return [str(MICROPYTHON), "-X", f"heapsize={heap}", str(RUNNER)]


def spawn(folder: Path, heap: str = HEAP_SIZE, **popen: Any) -> subprocess.Popen[bytes]:
    """Starts one device: the firmware's main.py with the folder as its filesystem."""
    check_built()
    return subprocess.Popen(firmware_command(heap), cwd=folder, env=firmware_env(), **popen)
