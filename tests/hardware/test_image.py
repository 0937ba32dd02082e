"""Hardware in the loop: a full firmware image over the air on a real ESP32 with two app slots.

Run with a board flashed with MicroPython's OTA variant (ESP32_GENERIC-OTA, e.g. with
`python -m tools flash --board esp32-devkitc-ota`) attached, and the OTA app image of another
build (micropython.bin, the .app-bin download) to update it to:
    WIFI_PASSWORD=... HIL_OTA_IMAGE=ESP32_GENERIC-OTA-v1.25.0.app-bin \\
        .venv/bin/python -m pytest tests/hardware/test_image.py --board-port /dev/ttyUSB0 \\
        --board esp32-devkitc-ota --board-hub-host 192.168.1.10 --board-wifi-ssid MyNet
Without --board-port, or without HIL_OTA_IMAGE, it is skipped with that reason.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from tests.hardware.test_board import lan_hub as lan_hub
from tests.hardware.test_board import real_board as real_board
from tests.support.hubproc import HubProcess, hub_cli, scaled
from tests.support.waits import eventually
from tests.tools.test_deploy import tools
from tools import boards, bundle


@pytest.fixture
def ota_image() -> Path:
    path = os.environ.get("HIL_OTA_IMAGE")
    if not path:
        pytest.skip("needs HIL_OTA_IMAGE: the OTA app image (.app-bin) to update the board to")
    return Path(path)


def _row(hub: HubProcess, device: str) -> dict[str, Any] | None:
    result = hub_cli(hub.data_dir, "app", "status", "--json")
    return next((r for r in json.loads(result.stdout) if r["device"] == device), None)


def test_full_image_update_of_a_real_board(
    real_board: tuple[str, str, str, str],
    lan_hub: HubProcess,
    ota_image: Path,
    tmp_path: Path,
) -> None:
    """A real ESP32 with two app slots downloads an image into the next slot, boots it on
    trial, reports updated once it reached the hub, and runs it (fw is the image's version)."""
    port, board, host, ssid = real_board
    spec, _ = boards.load_board(board)
    if not boards.supports_images(spec):
        pytest.skip(f"board {board} has no ota_image: use e.g. --board esp32-devkitc-ota")
    args = ["provision", "--board", board, "--port", port, "--id", "hil-img"]
    args += ["--hub", f"mqtt://{host}:{lan_hub.mqtt_port}", "--allow-insecure"]
    args += ["--data-dir", str(lan_hub.data_dir), "--wifi-ssid", ssid]
    args += ["--api", f"http://127.0.0.1:{lan_hub.http_port}", "--timeout", str(scaled(90))]
    first = tools(*args, timeout=300)
    assert first.returncode == 0, first.stdout + first.stderr
    out = tmp_path / "image.tar"
    bundle.build_image(board, "9.0.0-hil", ota_image, out)
    assert hub_cli(lan_hub.data_dir, "app", "add", str(out)).returncode == 0
    assert hub_cli(lan_hub.data_dir, "app", "assign", "hil-img", "9.0.0-hil").returncode == 0

    def settled() -> dict[str, Any] | None:
        row = _row(lan_hub, "hil-img")
        return row if row and row["state"] in ("updated", "rolled_back", "failed") else None

    row = eventually(settled, 900, "the image update to settle", poll=2)
    assert row["state"] == "updated", row
