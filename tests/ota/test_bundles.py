"""Bundles are hostile until checked: `hub app add` refuses every malformed one and keeps
nothing of it; the guard refuses update messages from anyone but the hub. No sockets."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import tarfile
from pathlib import Path
from typing import Any

import pytest

from hub.ota.bundles import MAX_BUNDLE, BundleError, Bundles, read_chunk
from hub.ota.guard import is_update, update_guard
from tests.support.hubproc import scaled


def entry(data: bytes, path: str = "node/app.mpy") -> dict[str, Any]:
    import hashlib

    return {"path": path, "size": len(data), "sha256": hashlib.sha256(data).hexdigest()}


def manifest(**changes: Any) -> dict[str, Any]:
    m = {
        "format": 1,
        "version": "2.0.0",
        "board": "unix-sim",
        "micropython": "1.25.0",
        "mpy": "6.3",
        "files": [entry(b"M\x06code")],
    }
    m.update(changes)
    return m


def tar_of(path: Path, members: list[tuple[str, bytes]], *, link: str | None = None) -> Path:
    with tarfile.open(path, "w") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        if link is not None:
            info = tarfile.TarInfo(link)
            info.type = tarfile.SYMTYPE
            info.linkname = "/etc/passwd"
            tar.addfile(info)
    return path


def good_members(m: dict[str, Any] | None = None) -> list[tuple[str, bytes]]:
    return [
        ("manifest.json", json.dumps(m or manifest()).encode()),
        ("node/app.mpy", b"M\x06code"),
    ]


def test_a_good_bundle_is_kept_with_its_wire_form(tmp_path: Path) -> None:
    """A valid bundle is registered: listed, its download is the manifest lines then the files,
    read back chunk by chunk exactly."""
    bundles = Bundles(tmp_path / "data")
    b = bundles.add(tar_of(tmp_path / "b.tar", good_members()))
    assert [x.version for x in bundles.list()] == ["2.0.0"]
    wire = b.manifest_lines() + b"M\x06code"
    assert b.download_size == len(wire)
    chunks = [read_chunk(b, i, 16) for i in range((len(wire) + 15) // 16)]
    assert b"".join(chunks) == wire
    with pytest.raises(BundleError, match="registered already"):
        bundles.add(tmp_path / "b.tar")


@pytest.mark.parametrize(
    ("members", "message"),
    [
        ([("node/app.mpy", b"x")], "no manifest.json"),
        ([("manifest.json", b"{not json")], "not JSON"),
        ([("manifest.json", b"[1]")], "JSON object"),
        (good_members(manifest(format=2)), "format"),
        (good_members(manifest(extra=1)), "unknown field"),
        (good_members(manifest(version="../../x")), "bad version"),
        (good_members(manifest(board="<script>")), "bad board"),
        (good_members(manifest(micropython="1.25")), "bad micropython"),
        (good_members(manifest(mpy="x")), "bad mpy"),
        (good_members(manifest(files=[])), "files must list"),
        (good_members(manifest(files=[entry(b"x", "node/../../boot.mpy")])), "bad path"),
        (good_members(manifest(files=[entry(b"x", "/node/app.mpy")])), "bad path"),
        (good_members(manifest(files=[entry(b"x", "main.py")])), "bad path"),
        (
            good_members(
                manifest(files=[{"path": "node/app.mpy", "size": -1, "sha256": "0" * 64}])
            ),
            "bad size",
        ),
        (good_members(manifest(files=[entry(b"other")])), "differs from the manifest"),
        ([*good_members(), ("node/extra.mpy", b"x")], "not the manifest"),
        (good_members(manifest(files=[entry(b"x"), entry(b"x")])), "listed twice"),
    ],
)
def test_hostile_bundles_are_refused(
    tmp_path: Path, members: list[tuple[str, bytes]], message: str
) -> None:
    """Each malformed or hostile bundle is refused with a message naming what is wrong, and
    nothing is left in the apps folder."""
    bundles = Bundles(tmp_path / "data")
    with pytest.raises(BundleError, match=message):
        bundles.add(tar_of(tmp_path / "b.tar", members))
    assert bundles.list() == []
    assert not (tmp_path / "data" / "apps").exists() or not any(
        (tmp_path / "data" / "apps").iterdir()
    )


def test_links_truncation_garbage_and_size_are_refused(tmp_path: Path) -> None:
    """A symlink member, a truncated tar, a file that is no tar and one over the size limit."""
    bundles = Bundles(tmp_path / "data")
    with pytest.raises(BundleError, match=r"not a regular file|not the manifest"):
        bundles.add(tar_of(tmp_path / "l.tar", good_members(), link="node/evil.mpy"))
    whole = tar_of(tmp_path / "t.tar", good_members()).read_bytes()
    (tmp_path / "t.tar").write_bytes(whole[:700])
    with pytest.raises(BundleError):
        bundles.add(tmp_path / "t.tar")
    (tmp_path / "g.tar").write_bytes(b"\x00garbage" * 100)
    with pytest.raises(BundleError):
        bundles.add(tmp_path / "g.tar")
    with (tmp_path / "big.tar").open("wb") as f:
        f.truncate(MAX_BUNDLE + 1)
    with pytest.raises(BundleError, match="more than"):
        bundles.add(tmp_path / "big.tar")
    assert bundles.list() == []


def test_hub_app_add_says_why_and_exits_2(tmp_path: Path) -> None:
    """The CLI prints `hub: error: ...` with exit code 2 for a refused bundle, no traceback."""
    bad = tar_of(tmp_path / "b.tar", good_members(manifest(files=[entry(b"x", "../x.mpy")])))
    result = subprocess.run(
        [sys.executable, "-m", "hub", "app", "add", str(bad), "--data-dir", str(tmp_path / "d")],
        capture_output=True,
        text=True,
        timeout=scaled(30),
    )
    assert result.returncode == 2
    assert result.stderr.startswith("hub: error: manifest.json: bad path"), result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    "payload",
    [
        b"\x01\x00\x00\x00\x00\x00\x00\x00\x00data",
        b'{"op": "ota", "id": 1, "v": "6.6.6"}',
        b'  {"id": 1, "op": "ota"}',
        b'{"\\u006fp": "\\u006fta", "id": 1}',
    ],
)
def test_update_messages_from_clients_are_refused(payload: bytes) -> None:
    """A chunk or an `ota` command on a device's command topic from any client (tokens,
    operators, development mode) is refused; other commands and topics pass."""
    assert is_update(payload)
    refusal = update_guard(object(), "d/dev-1/c", payload, False)
    assert refusal is not None and refusal.event == "filter_violation"
    assert refusal.device == "dev-1"
    assert update_guard(object(), "d/dev-1/r", payload, False) is None


def test_ordinary_commands_pass_the_guard() -> None:
    """Commands that are not updates, and garbage, are the device's business, not the guard's."""
    for payload in (b'{"op": "ping", "id": 1}', b"not json", b"", b'{"op": "settings"}'):
        assert update_guard(object(), "d/dev-1/c", payload, False) is None
