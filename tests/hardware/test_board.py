"""Hardware in the loop: provision, deploy and end to end on a real ESP32.

Run with a board attached (MicroPython already flashed, e.g. with `python -m tools flash`):
    WIFI_PASSWORD=... .venv/bin/python -m pytest tests/hardware --board-port /dev/ttyUSB0 \\
        --board esp32-devkitc --board-hub-host 192.168.1.10 --board-wifi-ssid MyNet
Without --board-port every test here is skipped, with that reason.
"""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.hubproc import HubProcess, hub_cli, scaled, start_hub
from tests.support.waits import eventually
from tests.tools.test_deploy import tools


@pytest.fixture
def real_board(request: pytest.FixtureRequest) -> tuple[str, str, str, str]:
    port = request.config.getoption("--board-port")
    if port is None:
        pytest.skip("needs a real board: --board-port PORT (and --board, --board-hub-host)")
    host = request.config.getoption("--board-hub-host")
    ssid = request.config.getoption("--board-wifi-ssid")
    if host is None or ssid is None:
        pytest.skip("needs --board-hub-host (this machine's LAN address) and --board-wifi-ssid")
    return port, request.config.getoption("--board"), host, ssid


@pytest.fixture
def lan_hub(tmp_path: Path) -> Iterator[HubProcess]:
    """A hub with its default security, listening where the board can reach it."""
    process = start_hub(tmp_path / "hub-data", "--host", "0.0.0.0", secure=True)
    yield process
    process.stop()


def _api(hub: HubProcess, path: str) -> object:
    token = hub_cli(hub.data_dir, "token", "create", "--subscribe", "d/+/t/+").stdout.split()[-1]
    request = urllib.request.Request(
        f"http://127.0.0.1:{hub.http_port}{path}", headers={"Authorization": f"Bearer {token}"}
    )
    with urllib.request.urlopen(request, timeout=scaled(5)) as response:
        return json.loads(response.read())


def test_provision_a_real_board_and_see_its_readings(
    real_board: tuple[str, str, str, str], lan_hub: HubProcess
) -> None:
    """The documented command brings a real ESP32 online; its readings reach the hub; a second
    run copies nothing."""
    port, board, host, ssid = real_board
    args = [
        "provision",
        "--board",
        board,
        "--port",
        port,
        "--id",
        "hil-1",
        "--hub",
        f"mqtt://{host}:{lan_hub.mqtt_port}",
        "--allow-insecure",
        "--data-dir",
        str(lan_hub.data_dir),
        "--api",
        f"http://127.0.0.1:{lan_hub.http_port}",
        "--wifi-ssid",
        ssid,
        "--timeout",
        str(scaled(90)),
    ]
    first = tools(*args, timeout=300)
    assert first.returncode == 0, first.stdout + first.stderr
    assert "hil-1 is online" in first.stdout
    eventually(lambda: _api(lan_hub, "/api/devices/hil-1/telemetry"), 60, "a reading", poll=1)
    again = tools(*args, timeout=300)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "copied 0 file(s)" in again.stdout and "hil-1 is online" in again.stdout
