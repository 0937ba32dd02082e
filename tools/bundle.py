"""`mpy-hub-tools bundle`: an app bundle for over-the-air updates (`hub app add FILE`).

A bundle is an uncompressed tar holding ``manifest.json`` and the app package ``node/`` compiled
with mpy-cross for the board's MicroPython (its .mpy version checked as deploy does). The
manifest names the bundle's version (written into ``node/__init__.py`` as ``VERSION``, so the
device then reports it as its ``fw``), the board, the MicroPython release and .mpy version,
and every file with its size and SHA-256, in the order the hub sends them. ``boot.py``,
``main.py`` and ``otaboot.py`` are not in it: they are the way back to the previous app and
change only by deploy.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import shutil
import tarfile
import tempfile
from pathlib import Path
from typing import Any

from tools import boards, deploy, mpunix
from tools.errors import ToolError

FORMAT = 1
MANIFEST = "manifest.json"
VERSION_RE = re.compile(r"^[0-9A-Za-z][0-9A-Za-z.+_-]{0,31}\Z")
_VERSION_LINE = re.compile(r'^VERSION = "[^"]*"$', re.M)


class BundleError(ToolError):
    """A bundle that cannot be built (the message says why)."""


def manifest_for(
    version: str, board: dict[str, Any], mpy: str, files: dict[str, bytes]
) -> dict[str, Any]:
    return {
        "format": FORMAT,
        "version": version,
        "board": board["name"],
        "micropython": board["micropython"]["version"],
        "mpy": mpy,
        "files": [
            {"path": p, "size": len(d), "sha256": hashlib.sha256(d).hexdigest()}
            for p, d in sorted(files.items())
        ],
    }


def write_bundle(out: Path, manifest: dict[str, Any], files: dict[str, bytes]) -> None:
    """Writes the tar (to a temporary file renamed into place)."""
    tmp = out.with_name(f".{out.name}.tmp")
    with tarfile.open(tmp, "w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in [
            (MANIFEST, json.dumps(manifest, indent=1).encode()),
            *sorted(files.items()),
        ]:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(data))
    tmp.replace(out)


def compile_app(source: Path, version: str) -> dict[str, bytes]:
    """The app package under source/node compiled to .mpy, with VERSION set to version."""
    package = source / "node"
    init = package / "__init__.py"
    if not init.is_file():
        raise BundleError(f"{source} holds no app package (node/__init__.py)")
    with tempfile.TemporaryDirectory(prefix="bundle-") as tmp:
        copy = Path(tmp) / "src" / "node"
        shutil.copytree(package, copy, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        text = (copy / "__init__.py").read_text()
        if not _VERSION_LINE.search(text):
            raise BundleError(f'{init} has no VERSION = "..." line')
        (copy / "__init__.py").write_text(_VERSION_LINE.sub(f'VERSION = "{version}"', text))
        out = mpunix.compile_mpy(mpunix.tree(copy.parent), Path(tmp) / "out")
        return {p.relative_to(out).as_posix(): p.read_bytes() for p in sorted(out.rglob("*.mpy"))}


def build(board_name: str, version: str, out: Path, source: Path = mpunix.FIRMWARE_DIR) -> str:
    """Builds the bundle; returns its one-line summary."""
    if not VERSION_RE.match(version):
        raise BundleError(
            f"bad version {version!r}: 1 to 32 of A-Z a-z 0-9 . + _ -, starting with a letter "
            "or digit"
        )
    board, _ = boards.load_board(board_name)
    if board.get("chip") is None:
        raise BundleError(f"board {board_name}: no chip")
    try:
        deploy.check_mpy_version(board)
    except deploy.DeployError as exc:
        raise BundleError(str(exc)) from None
    _, mpy = mpunix.mpy_cross_version()
    files = compile_app(source, version)
    manifest = manifest_for(version, board, mpy, files)
    write_bundle(out, manifest, files)
    size = sum(len(d) for d in files.values())
    return (
        f"bundle: {out} ({version} for {board['name']}, MicroPython "
        f"{manifest['micropython']}, .mpy {mpy}: {len(files)} files, {size} bytes)"
    )
