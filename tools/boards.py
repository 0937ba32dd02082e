"""`mpy-hub-tools boards check`: validates boards/*.json against what each chip really has.

Checks, with a message naming the board file and the key: unknown keys; pins that do not
exist on the chip, that the SPI flash/PSRAM uses, that are strapping pins (they decide the
boot mode, so a sensor or relay there can stop the board from booting), or input-only pins
used as outputs or for bidirectional buses; sensors naming pins the board does not define;
ADC sensors on pins without ADC1 (ADC2 is unusable while Wi-Fi is on).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tools.errors import ToolError
from tools.mpunix import BOARDS_DIR


@dataclass(frozen=True)
class Chip:
    gpios: frozenset[int]
    flash: frozenset[int]  # wired to the SPI flash (and octal PSRAM)
    strapping: frozenset[int]
    input_only: frozenset[int]
    adc1: frozenset[int]


def _pins(*ranges: range | int) -> frozenset[int]:
    out: set[int] = set()
    for r in ranges:
        out.update(r if isinstance(r, range) else (r,))
    return frozenset(out)


# From Espressif's datasheets (ESP32 v4.x section 2.2, ESP32-S3 v1.x section 2.3).
CHIPS: dict[str, Chip | None] = {
    "esp32": Chip(
        gpios=_pins(range(0, 20), range(21, 24), range(25, 28), range(32, 40)),
        flash=_pins(range(6, 12)),
        strapping=_pins(0, 2, 5, 12, 15),
        input_only=_pins(range(34, 40)),
        adc1=_pins(range(32, 40)),
    ),
    "esp32s3": Chip(
        gpios=_pins(range(0, 22), range(26, 49)),
        flash=_pins(range(26, 38)),  # SPI flash 26-32, octal PSRAM 33-37 (R8 modules)
        strapping=_pins(0, 3, 45, 46),
        input_only=frozenset(),
        adc1=_pins(range(1, 11)),
    ),
    "unix": None,  # the unix port: fake pins, nothing to check
}
BOARD_KEYS = {
    "name",
    "description",
    "chip",
    "micropython",
    "flash_offset",
    "pins",
    "outputs",
    "watchdog_ms",
    "deep_sleep_s",
    "sensors",
}
MICROPYTHON_KEYS = {"board", "version"}
COMMON_SENSOR_KEYS = {"kind", "name", "names", "decimals", "period_s"}
SENSOR_KINDS: dict[str, dict[str, set[str]]] = {
    # kind: {"pins": pin keys (bidirectional unless "adc"), "keys": other keys allowed}
    "sim": {"pins": set(), "keys": {"base", "amplitude"}},
    "dht22": {"pins": {"pin"}, "keys": set()},
    "ds18b20": {"pins": {"pin"}, "keys": set()},
    "bme280": {"pins": {"sda", "scl"}, "keys": {"address"}},
    "adc": {"pins": {"pin"}, "keys": {"scale", "offset"}},
}
CHANNELS = {"sim": 1, "dht22": 2, "ds18b20": 1, "bme280": 3, "adc": 1}


class BoardError(ToolError):
    """A board file that the firmware would choke on, or that would damage or brick a board."""


def _check_gpio(chip: Chip, where: str, number: Any, *, output: bool, adc: bool = False) -> None:
    if not isinstance(number, int) or isinstance(number, bool):
        raise BoardError(f"{where}: a pin is a GPIO number, not {number!r}")
    if number not in chip.gpios:
        raise BoardError(f"{where}: GPIO{number} does not exist on this chip")
    if number in chip.flash:
        raise BoardError(f"{where}: GPIO{number} is wired to the SPI flash/PSRAM")
    if number in chip.strapping:
        raise BoardError(f"{where}: GPIO{number} is a strapping pin (it sets the boot mode)")
    if output and number in chip.input_only:
        raise BoardError(f"{where}: GPIO{number} is input-only and cannot drive this")
    if adc and number not in chip.adc1:
        raise BoardError(f"{where}: GPIO{number} has no ADC1 channel (ADC2 stops with Wi-Fi)")


def check_board(path: Path) -> dict[str, Any]:
    """Returns the board, or raises BoardError with a message that names file and key."""
    name = path.name
    try:
        board = json.loads(path.read_text())
    except ValueError as exc:
        raise BoardError(f"{name}: not valid JSON ({exc})") from None
    if not isinstance(board, dict):
        raise BoardError(f"{name}: a board file holds one JSON object")
    for key in board:
        if key not in BOARD_KEYS:
            raise BoardError(f"{name}: unknown key {key!r}")
    for key in ("name", "chip", "micropython", "sensors"):
        if key not in board:
            raise BoardError(f"{name}: {key!r} is required")
    if board["name"] != path.stem:
        raise BoardError(f"{name}: 'name' must be the file's name, {path.stem!r}")
    if board["chip"] not in CHIPS:
        raise BoardError(f"{name}: unknown chip {board['chip']!r}; known: {sorted(CHIPS)}")
    chip = CHIPS[board["chip"]]
    mp = board["micropython"]
    if not isinstance(mp, dict) or set(mp) != MICROPYTHON_KEYS:
        raise BoardError(f'{name}: \'micropython\' is {{"board": ..., "version": ...}}')
    for key in ("watchdog_ms", "deep_sleep_s"):
        value = board.get(key, 0)
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise BoardError(f"{name}: {key!r} must be a whole number, 0 for off")
    if chip is not None and board.get("watchdog_ms", 0) and board["watchdog_ms"] < 1000:
        raise BoardError(f"{name}: 'watchdog_ms' under 1000 resets before a slow connect ends")
    pins = board.get("pins", {})
    if not isinstance(pins, dict):
        raise BoardError(f"{name}: 'pins' maps names to GPIO numbers")
    uses: dict[str, tuple[bool, bool]] = {}  # pin name -> (needs output, needs ADC)
    for out in board.get("outputs", []):
        if out not in pins:
            raise BoardError(f"{name}: output {out!r} is not in 'pins'")
        uses[out] = (True, False)
    names: set[str] = set()
    for i, sensor in enumerate(board["sensors"]):
        where = f"{name}: sensors[{i}]"
        kind = sensor.get("kind") if isinstance(sensor, dict) else None
        if kind not in SENSOR_KINDS:
            raise BoardError(f"{where}: unknown kind {kind!r}; known: {sorted(SENSOR_KINDS)}")
        spec = SENSOR_KINDS[kind]
        for key in sensor:
            if key not in COMMON_SENSOR_KEYS | spec["pins"] | spec["keys"]:
                raise BoardError(f"{where}: unknown key {key!r} for a {kind}")
        for key in spec["pins"]:
            pin = sensor.get(key)
            if pin is None:
                raise BoardError(f"{where}: a {kind} needs {key!r}")
            if pin not in pins:
                raise BoardError(f"{where}: {key!r} names pin {pin!r}, which is not in 'pins'")
            uses[pin] = (kind != "adc" or uses.get(pin, (False, False))[0], kind == "adc")
        channel_names = sensor.get("names") or [sensor.get("name", kind)]
        if len(channel_names) != CHANNELS[kind]:
            raise BoardError(f"{where}: a {kind} has {CHANNELS[kind]} value(s) to name")
        for channel in channel_names:
            if channel in names:
                raise BoardError(f"{where}: two readings named {channel!r}")
            names.add(channel)
    if chip is not None:
        for pin_name, number in pins.items():
            output, adc = uses.get(pin_name, (False, False))
            _check_gpio(chip, f"{name}: pins.{pin_name}", number, output=output, adc=adc)
    return board


class BoardErrors(ToolError):
    """Every board file that failed its check, one message each."""

    def __init__(self, errors: list[str]) -> None:
        super().__init__("\n".join(errors))
        self.errors = errors


def check_folder(folder: Path = BOARDS_DIR) -> list[tuple[str, dict[str, Any]]]:
    """Checks every board file; returns (name, board) for each, or raises BoardErrors with
    the first problem of every bad file, so one run shows them all."""
    paths = sorted(folder.glob("*.json"))
    if not paths:
        raise BoardErrors([f"no board files in {folder}"])
    good: list[tuple[str, dict[str, Any]]] = []
    errors: list[str] = []
    for path in paths:
        try:
            good.append((path.stem, check_board(path)))
        except BoardError as exc:
            errors.append(str(exc))
    if errors:
        raise BoardErrors(errors)
    return good


def check_all(folder: Path = BOARDS_DIR) -> list[str]:
    """The names of every board file, all of which pass (or BoardErrors)."""
    return [name for name, _ in check_folder(folder)]


def load_board(name: str) -> tuple[dict[str, Any], Path]:
    """A board by name (boards/NAME.json) or by path (a .json file), checked."""
    path = Path(name) if name.endswith(".json") else BOARDS_DIR / f"{name}.json"
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in BOARDS_DIR.glob("*.json")))
        raise BoardError(f"no board {name!r}; known boards: {known}")
    return check_board(path), path
