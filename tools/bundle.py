"""`mpy-hub-tools bundle`: an app bundle for over-the-air updates (`hub app add FILE`).

A bundle is an uncompressed tar holding ``manifest.json`` and the app package ``node/`` compiled
with mpy-cross for the board's MicroPython (its .mpy version checked as deploy does). The
manifest names the bundle's version (written into ``node/__init__.py`` as ``VERSION``, so the
device then reports it as its ``fw``), the board, the MicroPython release and .mpy version,
and every file with its size and SHA-256, in the order the hub sends them. ``boot.py``,
``main.py`` and ``otaboot.py`` are not in it: they are the way back to the previous app and
change only by deploy.

With ``--image FIRMWARE`` the bundle is a full firmware image instead (``build_image``), for a
board whose file says ``"ota_image": true`` (MicroPython's OTA variant: two app slots). It
holds ``manifest.json`` (``kind`` "image", the version, board, MicroPython release, and the
image's size and SHA-256) and ``firmware.bin``: an ESP-IDF app image (``micropython.bin``, the
``.app-bin`` download, not the combined image ``flash`` writes), checked for its magic byte,
its chip and its app description before anything is written.
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

from tools import boards, deploy, flash, mpunix
from tools.errors import ToolError

FORMAT = 1
MANIFEST = "manifest.json"
IMAGE = "firmware.bin"
MAX_IMAGE = 4 * 1024 * 1024  # the largest OTA app slot of the boards we know (16 MiB flash)
APP_DESC_MAGIC = 0xABCD5432  # ESP-IDF esp_app_desc_t, right after the first segment's header
_APP_DESC = 24 + 8  # image header, then the first segment's header
_MP_VERSION = re.compile(rb"^v?([0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3})")
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


def image_info(data: bytes, chip: str, name: str) -> tuple[str | None, str]:
    """Checks an ESP-IDF app image for the board's chip; returns the MicroPython release its
    app description names (or None) and its project name."""
    if not data:
        raise BundleError(f"{name} is empty")
    if len(data) > MAX_IMAGE:
        raise BundleError(f"{name} is {len(data)} bytes, more than {MAX_IMAGE}")
    if data[0] != flash.ESP_MAGIC or len(data) < _APP_DESC + 256:
        raise BundleError(f"{name} is not an ESP firmware image (no 0xE9 magic byte)")
    chip_id = int.from_bytes(data[12:14], "little")
    if chip in flash.CHIP_IDS and chip_id != flash.CHIP_IDS[chip]:
        other = flash.CHIP_NAMES.get(chip_id, f"chip id {chip_id}")
        raise BundleError(f"{name} is an image for {other}, but the board's chip is {chip}")
    if int.from_bytes(data[_APP_DESC : _APP_DESC + 4], "little") != APP_DESC_MAGIC:
        raise BundleError(
            f"{name} is not an app image (no app description): use the OTA app image "
            "(micropython.bin, the .app-bin download), not the combined firmware.bin that "
            "`flash` writes at the board's flash_offset"
        )
    desc = data[_APP_DESC : _APP_DESC + 256]
    version = desc[16:48].split(b"\0")[0]
    project = desc[48:80].split(b"\0")[0].decode("ascii", "replace")
    match = _MP_VERSION.match(version)
    return (match.group(1).decode() if match else None), project


def image_manifest(
    version: str, board: dict[str, Any], micropython: str, data: bytes
) -> dict[str, Any]:
    return {
        "format": FORMAT,
        "kind": "image",
        "version": version,
        "board": board["name"],
        "micropython": micropython,
        "files": [{"path": IMAGE, "size": len(data), "sha256": hashlib.sha256(data).hexdigest()}],
    }


def build_image(board_name: str, version: str, image: Path, out: Path) -> str:
    """Builds a full firmware image bundle; returns its one-line summary."""
    if not VERSION_RE.match(version):
        raise BundleError(
            f"bad version {version!r}: 1 to 32 of A-Z a-z 0-9 . + _ -, starting with a letter "
            "or digit"
        )
    board, _ = boards.load_board(board_name)
    if not boards.supports_images(board):
        raise BundleError(
            f"board {board['name']} does not take firmware images over the air: its board file "
            'needs "ota_image": true (and MicroPython\'s OTA variant, two app slots)'
        )
    try:
        with image.open("rb") as f:
            data = f.read(MAX_IMAGE + 1)
    except OSError as exc:
        raise BundleError(f"cannot read {image}: {exc.strerror}") from None
    release, project = image_info(data, board["chip"], str(image))
    micropython = release or board["micropython"]["version"]
    manifest = image_manifest(version, board, micropython, data)
    write_bundle(out, manifest, {IMAGE: data})
    return (
        f"bundle: {out} (image {version} for {board['name']}, MicroPython {micropython}"
        f" ({project}): {len(data)} bytes, sha256 {manifest['files'][0]['sha256'][:16]}...)"
    )
