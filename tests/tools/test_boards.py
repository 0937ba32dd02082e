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
        target[last] = value
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
    assert str(err.value).startswith("esp32-devkitc.json: ")
    assert message in str(err.value)


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
