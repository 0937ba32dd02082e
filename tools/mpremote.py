"""The serial line to a board, through mpremote (``mpremote connect PORT ...``).

mpremote enters the raw REPL with one Ctrl-C; a board whose program ignores it ("could not enter
raw repl", micropython#16142) gets a few slow Ctrl-Cs and another attempt, three in all.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

from tools.errors import ToolError

RAW_REPL_ATTEMPTS = 3
TIMEOUT_S = 120.0


class BoardLinkError(ToolError):
    """mpremote could not talk to the board (the message says why and what to try)."""


def check_port(port: str) -> None:
    """A serial device must exist; a pyserial URL (``socket://HOST:PORT``) is tried later."""
    if "://" not in port and not os.path.exists(port):
        raise BoardLinkError(f"no serial port {port} (is the board plugged in?)")


def interrupt(port: str) -> None:
    """Ctrl-C a few times, slowly, for a board whose program ignored mpremote's one Ctrl-C."""
    import serial  # pyserial comes with mpremote

    try:
        with serial.serial_for_url(port, baudrate=115200, timeout=0.2) as line:
            for _ in range(3):
                line.write(b"\r\x03\x03")
                time.sleep(0.3)
                line.reset_input_buffer()
    except (OSError, serial.SerialException):
        pass


def run(port: str, *args: str, timeout: float = TIMEOUT_S) -> str:
    """Runs `mpremote connect PORT ARGS`, retrying the raw-REPL entry; returns its stdout."""
    cmd = [sys.executable, "-m", "mpremote", "connect", port, *args]
    for attempt in range(1, RAW_REPL_ATTEMPTS + 1):
        try:
            result = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            raise BoardLinkError(
                f"mpremote did not finish within {timeout:.0f} s on {port}"
            ) from None
        if result.returncode == 0:
            return result.stdout
        err = result.stderr.strip()
        if "No module named mpremote" in err:
            raise BoardLinkError(
                "mpremote is not installed: pip install -e '.[tools]' (or make setup)"
            )
        if "failed to access" in err:
            raise BoardLinkError(f"cannot open {port}: it may be in use by another program")
        if "could not enter raw repl" not in err:
            last = err.splitlines()[-1] if err else f"exit code {result.returncode}"
            raise BoardLinkError(f"mpremote failed on {port}: {last}")
        print(f"mpremote: raw REPL not reachable (attempt {attempt}), interrupting", flush=True)
        interrupt(port)
        time.sleep(0.5 * attempt)
    raise BoardLinkError(
        f"raw REPL not reachable on {port} after {RAW_REPL_ATTEMPTS} attempts: the board does "
        "not answer Ctrl-C. Is MicroPython on it (mpy-hub-tools flash)? Otherwise hold the "
        "safe-mode button (GPIO0) while pressing reset, so main.py does not start, and retry."
    )
