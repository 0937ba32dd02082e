"""A power cut at each stage of installing an app update leaves a device that boots a complete
app, the old one or the new one, under the real firmware on the unix port (no hub)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from hub.ota.bundles import Bundles, read_chunk
from hub.ota.transfer import CHUNK
from tests.ota.conftest import build
from tests.support.micropython import run_mp

STAGES = ["verify", "install", "file", "switch", "switched"]


@pytest.fixture(scope="module")
def staged(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A device folder with a complete download of app 1.2.0 in ota/, as node/ota.py leaves it."""
    tmp = tmp_path_factory.mktemp("staged")
    bundle = Bundles(tmp / "hub").add(build(tmp / "b.tar", "1.2.0"))
    folder = tmp / "device"
    (folder / "ota").mkdir(parents=True)
    count = (bundle.download_size + CHUNK - 1) // CHUNK
    (folder / "ota" / "stage.bin").write_bytes(
        b"".join(read_chunk(bundle, i, CHUNK) for i in range(count))
    )
    offer = {
        "v": bundle.version,
        "tag": "0a0b0c0d",
        "size": bundle.download_size,
        "chunk": CHUNK,
        "msize": len(bundle.manifest_lines()),
    }
    (folder / "ota" / "stage.json").write_text(json.dumps(offer))
    (folder / "manifest.txt").write_bytes(bundle.manifest_lines())
    return folder


def boot(folder: Path) -> dict[str, object]:
    result: dict[str, object] = json.loads(run_mp("ota_probe.py", folder, "boot").splitlines()[-1])
    return result


@pytest.mark.parametrize("stage", STAGES)
def test_power_cut_at_each_stage_boots_a_complete_app(
    stage: str, staged: Path, tmp_path: Path
) -> None:
    """Cut at STAGE, the next boot runs the old app (0.1.0, the deployed one) or the new one
    (1.2.0, complete, on trial); installing again after the cut ends on the new one."""
    folder = tmp_path / "device"
    shutil.copytree(staged, folder)
    out = run_mp("ota_probe.py", folder, "install", stage)
    assert f"cut at {stage}" in out
    first = boot(folder)
    if stage == "switched":
        assert first == {"dir": "a", "version": "1.2.0", "complete": True, "trial": 2}
    else:
        assert first == {"dir": "", "version": "0.1.0", "complete": True, "trial": 0}
        assert "install: None" in run_mp("ota_probe.py", folder, "install", "none")
        assert boot(folder) == {"dir": "a", "version": "1.2.0", "complete": True, "trial": 2}


def test_torn_pointer_write_keeps_the_last_whole_pointer(staged: Path, tmp_path: Path) -> None:
    """A pointer file cut mid-write (the temporary one, before its rename) is ignored; a
    pointer left only as the temporary file (FAT: removed, not yet renamed) is used."""
    folder = tmp_path / "device"
    shutil.copytree(staged, folder)
    assert "install: None" in run_mp("ota_probe.py", folder, "install", "none")
    pointer = (folder / "app.json").read_text()
    (folder / "app.json.tmp").write_text(pointer[: len(pointer) // 2])
    assert boot(folder)["version"] == "1.2.0"
    (folder / "app.json").rename(folder / "app.json.tmp")
    assert boot(folder)["version"] == "1.2.0"


def test_a_damaged_download_is_refused_and_the_old_app_boots(staged: Path, tmp_path: Path) -> None:
    """One flipped byte in the staged files: install refuses it naming the file, the pointer
    is untouched and the deployed app boots."""
    folder = tmp_path / "device"
    shutil.copytree(staged, folder)
    stage = folder / "ota" / "stage.bin"
    data = bytearray(stage.read_bytes())
    data[-10] ^= 0x55
    stage.write_bytes(bytes(data))
    out = run_mp("ota_probe.py", folder, "install", "none")
    assert "install: sha256 mismatch: node/" in out
    assert boot(folder) == {"dir": "", "version": "0.1.0", "complete": True, "trial": 0}
