"""`mpy-hub-tools boards check`: validates boards/*.json against what each chip really has.

Checks, with a message naming the board file and the key: unknown keys; pins that do not
exist on the chip, that the SPI flash/PSRAM uses, that are strapping pins (they decide the
boot mode, so a sensor or relay there can stop the board from booting), or input-only pins
used as outputs or for bidirectional buses; sensors naming pins the board does not define;
ADC sensors on pins without ADC1 (ADC2 is unusable while Wi-Fi is on); reading names that are
not a topic's sensor name (hub/topics.py SENSOR_RE) and decimals the hub does not take. Every
problem of every file is reported, not just the first.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hub.topics import SENSOR_RE
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
MAX_DECIMALS = 6  # hub/topics.py: a reading's value has at most 6 decimals


class BoardError(ToolError):
    """A board file that the firmware would choke on, or that would damage or brick a board;
    ``problems`` holds one message per problem, each naming the file and the key."""

    def __init__(self, *problems: str) -> None:
        super().__init__("\n".join(problems))
        self.problems = list(problems)


def _gpio_problem(chip: Chip, number: Any, *, output: bool, adc: bool) -> str | None:
    if not isinstance(number, int) or isinstance(number, bool):
        return f"a pin is a GPIO number, not {number!r}"
    if number not in chip.gpios:
        return f"GPIO{number} does not exist on this chip"
    if number in chip.flash:
        return f"GPIO{number} is wired to the SPI flash/PSRAM"
    if number in chip.strapping:
        return f"GPIO{number} is a strapping pin (it sets the boot mode)"
    if output and number in chip.input_only:
        return f"GPIO{number} is input-only and cannot drive this"
    if adc and number not in chip.adc1:
        return f"GPIO{number} has no ADC1 channel (ADC2 stops with Wi-Fi)"
    return None


def _whole(value: Any, low: int, high: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and low <= value <= high


def _sensor_problems(
    where: str,
    sensor: Any,
    pins: dict[str, Any],
    uses: dict[str, tuple[bool, bool]],
    names: set[str],
) -> list[str]:
    """What is wrong with one sensor entry; notes the pins it uses and its reading names."""
    kind = sensor.get("kind") if isinstance(sensor, dict) else None
    if not isinstance(kind, str) or kind not in SENSOR_KINDS:
        return [f"{where}: unknown kind {kind!r}; known: {sorted(SENSOR_KINDS)}"]
    spec = SENSOR_KINDS[kind]
    problems = [
        f"{where}: unknown key {key!r} for a {kind}"
        for key in sensor
        if key not in COMMON_SENSOR_KEYS | spec["pins"] | spec["keys"]
    ]
    for key in sorted(spec["pins"]):
        pin = sensor.get(key)
        if pin is None:
            problems.append(f"{where}: a {kind} needs {key!r}")
        elif not isinstance(pin, str) or pin not in pins:
            problems.append(f"{where}: {key!r} names pin {pin!r}, which is not in 'pins'")
        else:
            uses[pin] = (kind != "adc" or uses.get(pin, (False, False))[0], kind == "adc")
    if "decimals" in sensor and not _whole(sensor["decimals"], 0, MAX_DECIMALS):
        problems.append(f"{where}: 'decimals' must be a whole number from 0 to {MAX_DECIMALS}")
    if "period_s" in sensor and not _whole(sensor["period_s"], 1, 86400):
        problems.append(f"{where}: 'period_s' must be a whole number from 1 to 86400")
    channels = sensor.get("names") or [sensor.get("name", kind)]
    if not isinstance(channels, list) or not all(isinstance(c, str) for c in channels):
        return [*problems, f"{where}: 'name' is a reading name, 'names' a list of them"]
    if len(channels) != CHANNELS[kind]:
        problems.append(f"{where}: a {kind} has {CHANNELS[kind]} value(s) to name")
    for channel in channels:
        if not SENSOR_RE.fullmatch(channel):
            problems.append(
                f"{where}: reading name {channel!r} is not a topic's sensor name (1 to 16 of "
                "a-z, 0-9 and '_', the first a letter or digit)"
            )
        elif channel in names:
            problems.append(f"{where}: two readings named {channel!r}")
        names.add(channel)
    return problems


def check_board(path: Path) -> dict[str, Any]:
    """Returns the board, or raises BoardError with every problem found, each naming the file
    and the key."""
    name = path.name
    try:
        board = json.loads(path.read_text())
    except (OSError, ValueError, RecursionError) as exc:  # RecursionError: [[[[...
        raise BoardError(f"{name}: not valid JSON ({exc})") from None
    if not isinstance(board, dict):
        raise BoardError(f"{name}: a board file holds one JSON object")
    problems = [f"unknown key {key!r}" for key in board if key not in BOARD_KEYS]
    missing = [key for key in ("name", "chip", "micropython", "sensors") if key not in board]
    problems += [f"{key!r} is required" for key in missing]
    if missing:
        raise BoardError(*(f"{name}: {p}" for p in problems))
    if board["name"] != path.stem:
        problems.append(f"'name' must be the file's name, {path.stem!r}")
    chip = None
    if not isinstance(board["chip"], str) or board["chip"] not in CHIPS:
        problems.append(f"unknown chip {board['chip']!r}; known: {sorted(CHIPS)}")
    else:
        chip = CHIPS[board["chip"]]
    mp = board["micropython"]
    if not isinstance(mp, dict) or set(mp) != MICROPYTHON_KEYS:
        problems.append('\'micropython\' is {"board": ..., "version": ...}')
    for key in ("watchdog_ms", "deep_sleep_s"):
        if not _whole(board.get(key, 0), 0, 2**31):
            problems.append(f"{key!r} must be a whole number, 0 for off")
        elif key == "watchdog_ms" and chip is not None and 0 < board.get(key, 0) < 1000:
            problems.append("'watchdog_ms' under 1000 resets before a slow connect ends")
    pins = board.get("pins", {})
    if not isinstance(pins, dict):
        problems.append("'pins' maps names to GPIO numbers")
        pins = {}
    outputs = board.get("outputs", [])
    if not isinstance(outputs, list):
        problems.append("'outputs' is a list of pin names")
        outputs = []
    uses: dict[str, tuple[bool, bool]] = {}  # pin name -> (needs output, needs ADC)
    for out in outputs:
        if not isinstance(out, str) or out not in pins:
            problems.append(f"output {out!r} is not in 'pins'")
        else:
            uses[out] = (True, False)
    sensors = board["sensors"]
    if not isinstance(sensors, list):
        problems.append("'sensors' is a list of sensors")
        sensors = []
    problems = [f"{name}: {p}" for p in problems]
    names: set[str] = set()
    for i, sensor in enumerate(sensors):
        problems += _sensor_problems(f"{name}: sensors[{i}]", sensor, pins, uses, names)
    if chip is not None:
        for pin_name, number in pins.items():
            output, adc = uses.get(pin_name, (False, False))
            problem = _gpio_problem(chip, number, output=output, adc=adc)
            if problem is not None:
                problems.append(f"{name}: pins.{pin_name}: {problem}")
    if problems:
        raise BoardError(*problems)
    return board


def check_folder(folder: Path = BOARDS_DIR) -> list[tuple[str, dict[str, Any]]]:
    """Checks every board file; returns (name, board) for each, or raises BoardError with
    every problem of every bad file, so one run shows them all."""
    paths = sorted(folder.glob("*.json"))
    if not paths:
        raise BoardError(f"no board files in {folder}")
    good: list[tuple[str, dict[str, Any]]] = []
    problems: list[str] = []
    for path in paths:
        try:
            good.append((path.stem, check_board(path)))
        except BoardError as exc:
            problems += exc.problems
    if problems:
        raise BoardError(*problems)
    return good


def check_all(folder: Path = BOARDS_DIR) -> list[str]:
    """The names of every board file, all of which pass (or BoardError)."""
    return [name for name, _ in check_folder(folder)]


def load_board(name: str) -> tuple[dict[str, Any], Path]:
    """A board by name (boards/NAME.json) or by path (a .json file), checked."""
    path = Path(name) if name.endswith(".json") else BOARDS_DIR / f"{name}.json"
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in BOARDS_DIR.glob("*.json")))
        raise BoardError(f"no board {name!r}; known boards: {known}")
    return check_board(path), path
