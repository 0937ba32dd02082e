"""`python -m tools boards check`: board files validated against their chip, clearly."""

import copy
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tools import boards

DEVKITC = json.loads((boards.BOARDS_DIR / "esp32-devkitc.json").read_text())


def test_shipped_boards_pass() -> None:
    """Every board in boards/ passes, including the DevKitC, the S3 and unix-sim."""
    assert boards.check_all() == ["esp32-devkitc", "esp32-s3-bme280", "unix-sim"]


def _broken(change: dict[str, Any]) -> dict[str, Any]:
    board = copy.deepcopy(DEVKITC)
    for key, value in change.items():
        target = board
        *path, last = key.split(".")
        for part in path:
            target = target[int(part)] if part.isdigit() else target[part]
        target[int(last) if last.isdigit() else last] = value
    return board


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"watchdog": 5}, "unknown key 'watchdog'"),
        ({"pins.dht": 7}, "pins.dht: GPIO7 is wired to the SPI flash/PSRAM"),
        ({"pins.dht": 24}, "pins.dht: GPIO24 does not exist on this chip"),
        ({"pins.dht": 12}, "pins.dht: GPIO12 is a strapping pin"),
        ({"pins.relay": 35}, "pins.relay: GPIO35 is input-only"),
        ({"pins.dht": 36}, "pins.dht: GPIO36 is input-only"),
        ({"pins.light": 4}, "pins.light: GPIO4 has no ADC1 channel"),
        ({"sensors.0.pin": "dth"}, "sensors[0]: 'pin' names pin 'dth', which is not in 'pins'"),
        ({"sensors.0.kind": "dht11"}, "sensors[0]: unknown kind 'dht11'"),
        ({"sensors.1.gain": 2}, "sensors[1]: unknown key 'gain' for a adc"),
        ({"outputs": ["fan"]}, "output 'fan' is not in 'pins'"),
        ({"chip": "esp8266"}, "unknown chip 'esp8266'"),
        ({"sensors.0.names": ["temp"]}, "a dht22 has 2 value(s) to name"),
        ({"sensors.0.names": ["Temp", "hum"]}, "reading name 'Temp' is not a topic's sensor"),
        ({"sensors.1.name": "light/lux"}, "reading name 'light/lux' is not a topic's sensor"),
        ({"sensors.1.name": "a" * 17}, "is not a topic's sensor name"),
        ({"sensors.0.names": "temp"}, "'names' a list of them"),
        ({"sensors.0.names": [1, 2]}, "'names' a list of them"),
        ({"sensors.0.decimals": 7}, "'decimals' must be a whole number from 0 to 6"),
        ({"sensors.0.period_s": True}, "'period_s' must be a whole number from 1 to 86400"),
        ({"sensors.0.pin": ["dht"]}, "sensors[0]: 'pin' names pin ['dht'], which is not in"),
        ({"sensors": {"kind": "sim"}}, "'sensors' is a list of sensors"),
        ({"sensors.0": "dht22"}, "sensors[0]: unknown kind None"),
        ({"chip": ["esp32"]}, "unknown chip ['esp32']"),
        ({"pins": [4, 34]}, "'pins' maps names to GPIO numbers"),
        ({"pins.dht": "4"}, "pins.dht: a pin is a GPIO number, not '4'"),
        ({"outputs": "relay"}, "'outputs' is a list of pin names"),
        ({"watchdog_ms": 500}, "'watchdog_ms' under 1000 resets"),
        ({"deep_sleep_s": -1}, "'deep_sleep_s' must be a whole number, 0 for off"),
    ],
)
def test_broken_board_is_refused_with_a_clear_message(
    tmp_path: Path, change: dict[str, Any], message: str
) -> None:
    """Each mistake is caught and the message names the file, the key and the reason."""
    path = tmp_path / "esp32-devkitc.json"
    path.write_text(json.dumps(_broken(change)))
    with pytest.raises(boards.BoardError) as err:
        boards.check_board(path)
    assert err.value.problems and all(
        p.startswith("esp32-devkitc.json: ") for p in err.value.problems
    )
    assert any(message in p for p in err.value.problems), err.value.problems


def test_every_problem_in_a_file_is_reported(tmp_path: Path) -> None:
    """A file with three mistakes gets three messages, not just the first."""
    path = tmp_path / "esp32-devkitc.json"
    path.write_text(json.dumps(_broken({"watchdog": 5, "pins.dht": 6, "sensors.1.gain": 2})))
    with pytest.raises(boards.BoardError) as err:
        boards.check_board(path)
    assert err.value.problems == [
        "esp32-devkitc.json: unknown key 'watchdog'",
        "esp32-devkitc.json: sensors[1]: unknown key 'gain' for a adc",
        "esp32-devkitc.json: pins.dht: GPIO6 is wired to the SPI flash/PSRAM",
    ]


@pytest.mark.parametrize("text", ["", "[]", "null", '"board"', "[" * 100000, "\x00\xff"])
def test_a_file_that_is_no_board_is_refused(tmp_path: Path, text: str) -> None:
    """Empty, non-object, deeply nested or binary files are refused with a message, never a
    traceback."""
    path = tmp_path / "x.json"
    path.write_text(text, errors="surrogateescape")
    with pytest.raises(boards.BoardError, match=r"^x\.json: "):
        boards.check_board(path)


def test_cli_exit_codes(tmp_path: Path) -> None:
    """The command prints one line per good board, and `tools: error:` with exit 2 otherwise."""
    cmd = [sys.executable, "-m", "tools", "boards", "check"]
    good = subprocess.run(cmd, capture_output=True, text=True, check=False)
    assert good.returncode == 0 and "ok esp32-s3-bme280" in good.stdout
    (tmp_path / "esp32-devkitc.json").write_text(json.dumps(_broken({"pins.dht": 6})))
    bad = subprocess.run([*cmd, "--dir", str(tmp_path)], capture_output=True, text=True)
    assert bad.returncode == 2
    assert bad.stderr.strip() == (
        "tools: error: esp32-devkitc.json: pins.dht: GPIO6 is wired to the SPI flash/PSRAM"
    )
