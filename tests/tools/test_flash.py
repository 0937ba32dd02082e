"""`python -m tools flash`: the esptool command it runs, and clear errors without a bootloader."""

from __future__ import annotations

import os
import sys
import tty
from pathlib import Path

import pytest

from tests.support.vboards import start_vboard
from tests.tools.test_deploy import tools


def image(tmp_path: Path, chip_id: int, name: str = "fw.bin") -> Path:
    """The first bytes of an ESP image: magic 0xE9, chip id in the extended header."""
    header = bytearray(64)
    header[0] = 0xE9
    header[12:14] = chip_id.to_bytes(2, "little")
    path = tmp_path / name
    path.write_bytes(bytes(header))
    return path


def test_flash_against_the_virtual_board_cannot_sync(tmp_path: Path) -> None:
    """The command names the board's chip, offset and image; with no ROM bootloader to answer,
    the error says so and the exit code is 2."""
    vb = start_vboard(tmp_path / "vb")
    try:
        fw = image(tmp_path, 0)
        result = tools(
            "flash",
            "--board",
            "esp32-devkitc",
            "--port",
            vb.port,
            "--firmware",
            str(fw),
            "--connect-attempts",
            "1",
        )
    finally:
        vb.stop()
    assert result.returncode == 2, result.stdout + result.stderr
    command = result.stdout.splitlines()[0]
    assert command == (
        f"flash: esptool --chip esp32 --port {vb.port} --baud 460800 --connect-attempts 1 "
        f"write-flash --erase-all 0x1000 {fw}"
    )
    assert "Connecting" in result.stdout  # esptool's own output is shown as it runs
    assert result.stderr.startswith("tools: error: esptool cannot sync with the ROM bootloader")


def test_flash_s3_at_offset_zero_on_a_silent_pty(tmp_path: Path) -> None:
    """An ESP32-S3 board is flashed at 0x0 with --chip esp32s3; a pty nobody answers fails."""
    master, slave = os.openpty()
    tty.setraw(slave)
    try:
        fw = image(tmp_path, 9)
        result = tools(
            "flash",
            "--board",
            "esp32-s3-bme280",
            "--port",
            os.ttyname(slave),
            "--firmware",
            str(fw),
            "--connect-attempts",
            "1",
        )
    finally:
        os.close(master)
        os.close(slave)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "--chip esp32s3" in result.stdout and f"--erase-all 0x0 {fw}" in result.stdout
    assert "cannot sync with the ROM bootloader" in result.stderr


@pytest.mark.parametrize(
    ("board", "chip_id", "port", "message"),
    [
        ("esp32-devkitc", 9, "", "is an image for esp32s3, but the board's chip is esp32"),
        ("esp32-devkitc", None, "", "is not an ESP firmware image"),
        ("esp32-devkitc", 0, "/dev/ttyNOPE", "no serial port /dev/ttyNOPE"),
        ("unix-sim", 0, "", "board unix-sim (unix) has no firmware to flash"),
        ("esp32-devkitc", -1, "", "no firmware image"),
    ],
)
def test_flash_bad_input_is_a_clear_error(
    tmp_path: Path, board: str, chip_id: int | None, port: str, message: str
) -> None:
    """A wrong chip, a missing image or port: `tools: error: ...`, exit 2, before esptool runs."""
    if chip_id is None:
        fw = tmp_path / "fw.bin"
        fw.write_bytes(b"PK\x03\x04 not an image" * 4)
    elif chip_id < 0:
        fw = tmp_path / "missing.bin"
    else:
        fw = image(tmp_path, chip_id)
    result = tools(
        "flash", "--board", board, "--port", port or sys.executable, "--firmware", str(fw)
    )
    assert result.returncode == 2 and result.stderr.startswith("tools: error: "), result.stderr
    assert message in result.stderr
    assert "esptool" not in result.stdout
