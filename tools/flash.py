"""`mpy-hub-tools flash`: MicroPython onto an ESP32 with esptool, at the board file's offset.

Erases the whole flash and writes the image in one esptool session (``write-flash --erase-all``)
for the chip the board file names, showing esptool's own progress. The image is checked first:
an ESP image starts with the magic byte 0xE9 and names its chip in its extended header, so an
ESP32-S3 build meant for another board is refused before the board is touched.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from tools import boards, mpremote
from tools.errors import ToolError

ESP_MAGIC = 0xE9
# The chip id in an ESP image's extended header (ESP-IDF esp_chip_id_t).
CHIP_IDS = {"esp32": 0, "esp32s2": 2, "esp32c3": 5, "esp32s3": 9, "esp32c2": 12, "esp32c6": 13}
CHIP_NAMES = {v: k for k, v in CHIP_IDS.items()}
DEFAULT_BAUD = 460800
CONNECT_ATTEMPTS = 7  # esptool's default


class FlashError(ToolError):
    """Flashing cannot start or failed (the message says why)."""


def check_image(path: Path, chip: str) -> None:
    if not path.is_file():
        raise FlashError(f"no firmware image {path}")
    header = path.read_bytes()[:16]
    if len(header) < 16 or header[0] != ESP_MAGIC:
        raise FlashError(f"{path} is not an ESP firmware image (no 0xE9 magic byte)")
    chip_id = int.from_bytes(header[12:14], "little")
    if chip_id != CHIP_IDS[chip]:
        other = CHIP_NAMES.get(chip_id, f"chip id {chip_id}")
        raise FlashError(f"{path} is an image for {other}, but the board's chip is {chip}")


def esptool_command(
    chip: str,
    port: str,
    offset: int,
    image: Path,
    baud: int = DEFAULT_BAUD,
    connect_attempts: int = CONNECT_ATTEMPTS,
) -> list[str]:
    options = {
        "--chip": chip,
        "--port": port,
        "--baud": str(baud),
        "--connect-attempts": str(connect_attempts),
    }
    flags = [word for option in options.items() for word in option]
    write = ["write-flash", "--erase-all", hex(offset), str(image)]
    return [sys.executable, "-m", "esptool", *flags, *write]


def diagnose(output: str, port: str, chip: str) -> str:
    if "No module named esptool" in output:
        return "esptool is not installed: pip install -e '.[tools]' (or make setup)"
    wrong = re.search(r"This chip is (\S+),? not (\S+)", output)
    if wrong:
        return f"the chip on {port} is {wrong.group(1)}, but the board file says {chip}"
    if "could not open port" in output.lower() or "No such file" in output:
        return f"esptool cannot open {port}"
    if re.search(r"Failed to connect|No serial data received|Invalid head of packet", output):
        return (
            f"esptool cannot sync with the ROM bootloader on {port}: hold BOOT (GPIO0) and "
            "press EN/RESET to enter download mode, then retry (a board that runs a REPL, like "
            "the virtual board, has no ROM bootloader to talk to)"
        )
    tail = "\n".join(output.strip().splitlines()[-3:])
    return f"esptool failed on {port}:\n{tail}"


def flash(
    board_name: str,
    port: str,
    image: Path,
    baud: int = DEFAULT_BAUD,
    connect_attempts: int = CONNECT_ATTEMPTS,
) -> int:
    """Writes the image; returns the offset it went to."""
    board, _ = boards.load_board(board_name)
    offset = board.get("flash_offset")
    if board["chip"] not in CHIP_IDS or not isinstance(offset, int):
        raise FlashError(f"board {board_name} ({board['chip']}) has no firmware to flash")
    check_image(image, board["chip"])
    mpremote.check_port(port)
    cmd = esptool_command(board["chip"], port, offset, image.resolve(), baud, connect_attempts)
    print("flash: " + " ".join(cmd[2:]), flush=True)
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    assert proc.stdout is not None
    seen = bytearray()
    while chunk := os.read(proc.stdout.fileno(), 4096):  # esptool's progress, as it comes
        sys.stdout.buffer.write(chunk)
        sys.stdout.flush()
        seen += chunk
    if proc.wait() != 0:
        raise FlashError(diagnose(seen.decode(errors="replace"), port, board["chip"]))
    return offset
