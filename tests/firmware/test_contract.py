"""The topic contract on both sides: what the firmware formats, the hub parses."""

import json
from pathlib import Path

import pytest

from hub import topics
from hub.topics import Kind
from tests.support.micropython import run_mp
from tools import mpunix


@pytest.fixture
def device_dir(tmp_path: Path) -> Path:
    board = json.loads((mpunix.BOARDS_DIR / "unix-sim.json").read_text())
    board["sensors"] = [
        {"kind": "sim", "name": "temp", "decimals": 1, "base": 21.0, "amplitude": 30.0},
        {"kind": "sim", "name": "hum", "decimals": 2, "base": -5.0, "amplitude": 2.0},
    ]
    folder = tmp_path / "dev"
    mpunix.prepare_device_dir(folder, mpunix.DeviceSettings("probe-1", "127.0.0.1", 1883))
    (folder / "board.json").write_text(json.dumps(board))
    return folder


def test_firmware_readings_parse_on_the_hub(device_dir: Path) -> None:
    """Every topic and reading the firmware formats is valid under the hub's parser."""
    lines = [line.split(" ", 1) for line in run_mp("contract_probe.py", device_dir).splitlines()]
    readings = [(topics.parse_topic(t), topics.parse_reading(p.encode()))
                for t, p in lines if "/t/" in t]
    assert len(readings) == 6
    assert {(t.device, t.kind, t.sensor) for t, _ in readings} == {
        ("probe-1", Kind.TELEMETRY, "temp"), ("probe-1", Kind.TELEMETRY, "hum")}
    assert [r.seq for _, r in readings] == list(range(6))  # one sequence per device, from 0
    assert len({r.boot for _, r in readings}) == 1
    decimals = {t.rsplit("/", 1)[1]: len(p.rsplit(".", 1)[1]) for t, p in lines if "/t/" in t}
    assert decimals == {"temp": 1, "hum": 2}
    others = {t: topics.parse_topic(t).kind for t, _ in lines if "/t/" not in t}
    assert others == {topics.status_topic("probe-1"): Kind.STATUS,
                      topics.command_topic("probe-1"): Kind.COMMAND,
                      topics.reply_topic("probe-1"): Kind.REPLY,
                      topics.meta_topic("probe-1"): Kind.META}
    meta = topics.parse_meta(dict(lines)[topics.meta_topic("probe-1")].encode())
    assert (meta["board"], meta["reset"], meta["rssi"], meta["seq"]) == (
        "unix-sim", "power-on", -55, 6)
    assert meta["queue"] == 0 and meta["boot"] == readings[0][1].boot
    assert 0 < meta["heap"] < 64 * 1024


def test_firmware_refuses_unknown_setting(device_dir: Path) -> None:
    """A settings file with an unknown key stops the firmware with a message naming it."""
    settings = json.loads((device_dir / "settings.json").read_text())
    settings["hub_hots"] = "typo"
    (device_dir / "settings.json").write_text(json.dumps(settings))
    with pytest.raises(AssertionError, match="unknown setting 'hub_hots'"):
        run_mp("contract_probe.py", device_dir)
