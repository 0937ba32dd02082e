"""Runs small MicroPython programs (tests/mp/) with the firmware on the path."""

from __future__ import annotations

import subprocess
from pathlib import Path

from tests.support.hubproc import scaled
from tools import mpunix

MP_TESTS = Path(__file__).resolve().parents[1] / "mp"


def run_mp(script: str, cwd: Path, *args: str, heap: str = mpunix.HEAP_SIZE) -> str:
    """Runs tests/mp/<script> under the unix port; returns stdout, raising on failure."""
    mpunix.check_built()
    env = mpunix.firmware_env()
    env["MICROPYPATH"] += f":{MP_TESTS}"
    result = subprocess.run(
        [str(mpunix.MICROPYTHON), "-X", f"heapsize={heap}", str(MP_TESTS / script), *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=scaled(60),
    )
    assert result.returncode == 0, f"{script} failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout
