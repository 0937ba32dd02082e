"""Starts `python -m tools vboard` as a subprocess and talks to it like a host."""

from __future__ import annotations

import re
import select
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import serial

from tests.support.hubproc import scaled
from tests.support.waits import eventually

READY_RE = re.compile(r"^ready port=(\S+) socket=(socket://\S+) dir=(\S+)$")
MPREMOTE = Path(sys.executable).with_name("mpremote")


@dataclass
class Vboard:
    proc: subprocess.Popen[str]
    port: str
    socket_url: str
    folder: Path
    log: Path

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=scaled(10))
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def console(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def wait_console(self, text: str, timeout: float = 10) -> str:
        """Waits until the board has written text to its serial port; returns all output."""

        def written() -> str:
            out = self.console()
            assert text in out, f"console:\n{out[-2000:]}"
            return out

        return eventually(written, timeout, f"{text!r} on the console")


def start_vboard(tmp: Path, *extra: str) -> Vboard:
    tmp.mkdir(parents=True, exist_ok=True)
    log = tmp / "console.log"
    cmd = [
        sys.executable,
        "-m",
        "tools",
        "vboard",
        "--dir",
        str(tmp / "fs"),
        "--port-link",
        str(tmp / "ttyVB0"),
        "--log",
        str(log),
        *extra,
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], scaled(30))
    line = proc.stdout.readline().strip() if ready else ""
    match = READY_RE.match(line)
    if match is None:
        proc.kill()
        raise AssertionError(f"vboard did not print a ready line, got {line!r}")
    return Vboard(proc, match.group(1), match.group(2), Path(match.group(3)), log)


def mpremote(port: str, *args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(MPREMOTE), "connect", port, *args],
        capture_output=True,
        text=True,
        timeout=scaled(timeout),
    )


class Host:
    """The host end of the serial line, speaking the REPL protocol byte by byte."""

    def __init__(self, port: str) -> None:
        self.serial = serial.serial_for_url(port, baudrate=115200, timeout=0.05)

    def close(self) -> None:
        self.serial.close()

    def write(self, data: bytes) -> None:
        self.serial.write(data)

    def read_until(self, ending: bytes, timeout: float = 10) -> bytes:
        deadline = time.monotonic() + scaled(timeout)
        data = b""
        while not data.endswith(ending):
            assert time.monotonic() < deadline, f"waited for {ending!r}, got {data!r}"
            data += self.serial.read(1)
        return data

    def read_exactly(self, n: int, timeout: float = 10) -> bytes:
        deadline = time.monotonic() + scaled(timeout)
        data = b""
        while len(data) < n:
            assert time.monotonic() < deadline, f"waited for {n} bytes, got {data!r}"
            data += self.serial.read(n - len(data))
        return data

    def enter_raw(self) -> None:
        self.write(b"\r\x03")
        time.sleep(0.1)  # on purpose: whatever Ctrl-C makes the board print, then discard it
        self.serial.reset_input_buffer()
        self.write(b"\r\x01")
        self.read_until(b"raw REPL; CTRL-B to exit\r\n>")
