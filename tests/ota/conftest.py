"""What the over-the-air tests share: bundles built once per run, and a device on a hub."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

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
        tmp, "crash", "app.py", "def main():\n", "def main():\n    raise RuntimeError('boom')\n"
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
        "esp32": build(tmp / "esp32.tar", "1.2.0", board="esp32-devkitc"),
        "crash": build(tmp / "crash.tar", "9.0.0-crash", source=crash),
        "lost": build(tmp / "lost.tar", "9.0.0-lost", source=lost),
    }
