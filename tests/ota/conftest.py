"""What the over-the-air tests share: bundles built once per run, and a device on a hub."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from hub import topics
from tests.support.firmware import Subscriber
from tests.support.hubproc import HubProcess, hub_cli, start_hub
from tools import bundle, mpunix


def build(out: Path, version: str, board: str = "unix-sim", source: Path | None = None) -> Path:
    """A bundle of the firmware (or of `source`) at `version`."""
    bundle.build(board, version, out, source or mpunix.FIRMWARE_DIR)
    return out


def sabotaged(tmp: Path, name: str, module: str, old: str, new: str) -> Path:
    """A copy of firmware/ with one line of one module changed (a broken app)."""
    src = tmp / name
    shutil.copytree(mpunix.FIRMWARE_DIR, src, ignore=shutil.ignore_patterns("__pycache__"))
    path = src / "node" / module
    text = path.read_text()
    assert old in text, f"{old!r} not in {module}"
    path.write_text(text.replace(old, new, 1))
    return src


@pytest.fixture(scope="session")
def bundles(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Path]]:
    """Bundles built once: good ones, one for another board, one that crashes at start and one
    that never reaches the hub."""
    tmp = tmp_path_factory.mktemp("bundles")
    crash = sabotaged(
        tmp,
        "crash",
        "app.py",
        "    def run(self):\n",
        "    def run(self):\n        raise RuntimeError('boom')\n",
    )
    lost = sabotaged(
        tmp,
        "lost",
        "session.py",
        "    app.link.target(host, port)\n",
        "    app.link.target(host, 9)  # port 9: nothing listens\n",
    )
    yield {
        "good": build(tmp / "good.tar", "1.2.0"),
        "next": build(tmp / "next.tar", "1.3.0"),
        "esp32": build(tmp / "esp32.tar", "1.2.0-esp32", board="esp32-devkitc"),
        "crash": build(tmp / "crash.tar", "9.0.0-crash", source=crash),
        "lost": build(tmp / "lost.tar", "9.0.0-lost", source=lost),
    }


@pytest.fixture(scope="session")
def corrupt_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A good bundle of its own version, whose stored copy the corruption test damages."""
    return build(tmp_path_factory.mktemp("corrupt") / "corrupt.tar", "1.2.1")


@pytest.fixture(scope="module")
def ota_hub(
    tmp_path_factory: pytest.TempPathFactory, bundles: dict[str, Path], corrupt_bundle: Path
) -> Iterator[HubProcess]:
    """One hub for a module's devices, with every bundle registered."""
    hub = start_hub(tmp_path_factory.mktemp("hub-data"))
    try:
        for path in [*bundles.values(), corrupt_bundle]:
            result = hub_cli(hub.data_dir, "app", "add", str(path))
            assert result.returncode == 0, result.stderr
        yield hub
    finally:
        hub.stop()


def ota_reports(sub: Subscriber) -> list[dict[str, Any]]:
    """The device's update reports (on its reply topic), in arrival order."""
    out = []
    for msg in sub.on(topics.reply_topic(sub.device)):
        data = json.loads(msg.payload)
        if "ota" in data:
            out.append(data)
    return out


def chunks_sent(sub: Subscriber) -> list[int]:
    """The index of every chunk the hub sent the device."""
    return [
        int.from_bytes(m.payload[5:9], "big")
        for m in sub.on(topics.command_topic(sub.device))
        if m.payload[:1] == b"\x01"
    ]


def firmware_version(sub: Subscriber) -> str | None:
    """The `fw` of the device's latest health message."""
    health = sub.on(topics.meta_topic(sub.device))
    return json.loads(health[-1].payload)["fw"] if health else None


def assign(hub: HubProcess, device: str, version: str) -> None:
    result = hub_cli(hub.data_dir, "app", "assign", device, version)
    assert result.returncode == 0, result.stderr


def update_row(hub: HubProcess, device: str) -> dict[str, Any] | None:
    result = hub_cli(hub.data_dir, "app", "status", "--json")
    assert result.returncode == 0, result.stderr
    return next((r for r in json.loads(result.stdout) if r["device"] == device), None)
