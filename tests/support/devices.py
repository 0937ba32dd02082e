"""Real firmware instances on the MicroPython unix port, for tests."""

from __future__ import annotations

import json
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tests.support.hubproc import HubProcess
from tools import mpunix

# A health message (topic d/<id>/m) as the firmware sends it: every field of the contract.
HEALTH = {
    "fw": "1.0",
    "board": "unix-sim",
    "reset": "power",
    "up": 5,
    "heap": 30000,
    "rssi": None,
    "reconnects": 0,
    "queue": 0,
    "dropped": 0,
    "boot": "ab",
    "seq": 3,
    "error": None,
}

SOFT_RESET = 5  # machine.SOFT_RESET: what fake_machine reports after machine.reset()


class Device:
    """One device folder run like a board: a reboot or a deep-sleep wake starts it again."""

    def __init__(self, folder: Path, log_path: Path, heap: str = mpunix.HEAP_SIZE) -> None:
        self.folder = folder
        self.log_path = log_path
        self.heap = heap
        self.exits: list[int] = []  # exit code of every run so far
        self.proc: subprocess.Popen[bytes] | None = None
        self._stop = threading.Event()
        self._lock = threading.Lock()  # no new run starts once kill() has begun
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Powers the device on (again)."""
        self._stop.clear()
        self._thread = threading.Thread(target=self._supervise, daemon=True)
        self._thread.start()

    def _supervise(self) -> None:
        cause = None
        while not self._stop.is_set():
            env = mpunix.firmware_env()
            if cause is not None:
                env["FAKE_RESET_CAUSE"] = str(cause)
            with self.log_path.open("ab") as log, self._lock:
                if self._stop.is_set():
                    return
                proc = self.proc = subprocess.Popen(
                    mpunix.firmware_command(self.heap),
                    cwd=self.folder,
                    env=env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            code = proc.wait()
            self.exits.append(code)
            if code == mpunix.EXIT_REBOOT:
                cause = SOFT_RESET
            elif code == mpunix.EXIT_DEEPSLEEP:
                cause = mpunix.DEEPSLEEP_RESET
            else:
                return

    def kill(self) -> None:
        """Pulls the plug: SIGKILL, no chance to flush or say goodbye; no restart."""
        with self._lock:
            self._stop.set()
            proc = self.proc
        if proc is not None and proc.poll() is None:
            proc.kill()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def poll(self) -> int | None:
        """None while the device runs (or is between reboots)."""
        if self._thread is not None and self._thread.is_alive():
            return None
        return self.exits[-1] if self.exits else None

    def log(self) -> str:
        """What the device printed so far ("" before its process has opened the log)."""
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""


def write_board(folder: Path, board: dict[str, Any]) -> None:
    (folder / "board.json").write_text(json.dumps(board))


@contextmanager
def running_device(
    folder: Path,
    hub: HubProcess,
    device_id: str,
    *,
    period_s: int = 1,
    keepalive_s: int = 30,
    port: int | None = None,
    board: str = "unix-sim",
    board_json: dict[str, Any] | None = None,
    heap: str = mpunix.HEAP_SIZE,
    **settings: Any,
) -> Iterator[Device]:
    """Starts a device on the hub (or on `port`, e.g. a fault proxy's) and stops it after."""
    config = mpunix.DeviceSettings(
        id=device_id,
        hub_host=hub.host,
        hub_port=port or hub.mqtt_port,
        period_s=period_s,
        keepalive_s=keepalive_s,
        **settings,
    )
    root = mpunix.prepare_device_dir(folder / device_id, config, board)
    if board_json is not None:
        write_board(root, board_json)
    device = Device(root, folder / f"{device_id}.log", heap)
    device.start()
    try:
        yield device
    finally:
        device.kill()
