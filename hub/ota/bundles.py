"""App bundles (``mpy-hub-tools bundle``): validated, then kept in ``<data dir>/apps/<version>/``.

A bundle is hostile until checked: an uncompressed tar of at most ``MAX_BUNDLE`` bytes holding
``manifest.json`` and exactly the files it lists, each a regular file whose path is
``node/.../name.mpy`` (no ``..``, no absolute path, no link), with the size and SHA-256 the
manifest gives. The hub keeps the manifest and the files concatenated in manifest order
(``payload.bin``: what goes over the wire, chunk by chunk), written into a temporary folder and
renamed into place, so a failed ``hub app add`` leaves nothing behind.

A firmware image bundle (``kind`` "image", ``mpy-hub-tools bundle --image``) holds one file,
``firmware.bin``, of at most ``MAX_IMAGE`` bytes, and no ``mpy``; it is registered only for a
board whose file (``boards/<board>.json``) says ``"ota_image": true``. Its download is the image
alone.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

APPS_DIR = "apps"
MANIFEST = "manifest.json"
PAYLOAD = "payload.bin"
FORMAT = 1
MAX_IMAGE = 4 * 1024 * 1024  # bytes of a firmware image (the largest OTA app slot we know)
MAX_BUNDLE = MAX_IMAGE + 64 * 1024  # bytes of the tar
MAX_APP = 1024 * 1024  # bytes of the app's files together (what a device accepts)
MAX_FILES = 128
MAX_MANIFEST = 64 * 1024
VERSION_RE = re.compile(r"^[0-9A-Za-z][0-9A-Za-z.+_-]{0,31}\Z")
BOARD_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}\Z")
PATH_RE = re.compile(r"^node/(?:[a-z0-9_]{1,32}/){0,4}[a-z0-9_]{1,32}\.mpy\Z")
MP_RE = re.compile(r"^[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}\Z")
MPY_RE = re.compile(r"^[0-9]{1,2}\.[0-9]\Z")
SHA_RE = re.compile(r"^[0-9a-f]{64}\Z")
KINDS = ("app", "image")
IMAGE = "firmware.bin"
BOARDS_DIR = Path(__file__).resolve().parents[2] / "boards"


class BundleError(ValueError):
    """A bundle that is refused (the message says why)."""


@dataclass(frozen=True)
class Bundle:
    version: str
    board: str
    micropython: str
    mpy: str
    files: tuple[tuple[str, int, str], ...]  # (path, size, sha256 hex), in payload order
    payload: Path
    kind: str = "app"  # or "image": a full firmware image (files: firmware.bin alone)

    @property
    def size(self) -> int:
        """Bytes of the app's files."""
        return sum(size for _, size, _ in self.files)

    def manifest_lines(self) -> bytes:
        """The manifest as the device reads it: one ``path size sha256`` line per file (none
        for an image: the offer carries its SHA-256)."""
        if self.kind == "image":
            return b""
        return b"".join(f"{p} {s} {d}\n".encode() for p, s, d in self.files)

    @property
    def download_size(self) -> int:
        """Bytes on the wire: the manifest lines, then the files."""
        return len(self.manifest_lines()) + self.size

    def summary(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "kind": self.kind,
            "board": self.board,
            "micropython": self.micropython,
            "mpy": self.mpy,
            "files": len(self.files),
            "size": self.size,
        }


def check_manifest(raw: Any) -> Bundle:
    """The manifest's fields, checked; BundleError naming the first bad one."""
    if not isinstance(raw, dict):
        raise BundleError("manifest.json must hold a JSON object")
    known = {"format", "kind", "version", "board", "micropython", "mpy", "files"}
    if unknown := sorted(set(raw) - known):
        raise BundleError(f"manifest.json: unknown field {unknown[0]!r}")
    if raw.get("format") != FORMAT:
        raise BundleError(f"manifest.json: format must be {FORMAT}")
    kind = raw.get("kind", "app")
    if kind not in KINDS:
        raise BundleError(f"manifest.json: kind must be one of {', '.join(KINDS)}")
    if kind == "image":
        return _check_image_manifest(raw)
    for name, pattern in (
        ("version", VERSION_RE),
        ("board", BOARD_RE),
        ("micropython", MP_RE),
        ("mpy", MPY_RE),
    ):
        value = raw.get(name)
        if not isinstance(value, str) or not pattern.match(value):
            raise BundleError(f"manifest.json: bad {name} {str(value)[:40]!r}")
    files = raw.get("files")
    if not isinstance(files, list) or not 0 < len(files) <= MAX_FILES:
        raise BundleError(f"manifest.json: files must list 1 to {MAX_FILES} files")
    out: list[tuple[str, int, str]] = []
    for entry in files:
        if not isinstance(entry, dict) or set(entry) != {"path", "size", "sha256"}:
            raise BundleError("manifest.json: each file has exactly path, size and sha256")
        path, size, digest = entry["path"], entry["size"], entry["sha256"]
        if not isinstance(path, str) or not PATH_RE.match(path):
            raise BundleError(
                f"manifest.json: bad path {str(path)[:60]!r}: node/[dir/]name.mpy of a-z 0-9 _"
            )
        if not isinstance(size, int) or isinstance(size, bool) or not 0 <= size <= MAX_APP:
            raise BundleError(f"manifest.json: bad size for {path}")
        if not isinstance(digest, str) or not SHA_RE.match(digest):
            raise BundleError(f"manifest.json: bad sha256 for {path}")
        out.append((path, size, digest))
    if len({p for p, _, _ in out}) != len(out):
        raise BundleError("manifest.json: a path is listed twice")
    if sum(s for _, s, _ in out) > MAX_APP:
        raise BundleError(f"the app is larger than {MAX_APP} bytes")
    return Bundle(raw["version"], raw["board"], raw["micropython"], raw["mpy"], tuple(out), Path())


def _check_image_manifest(raw: dict[str, Any]) -> Bundle:
    if "mpy" in raw:
        raise BundleError("manifest.json: an image has no mpy (it is MicroPython itself)")
    for name, pattern in (("version", VERSION_RE), ("board", BOARD_RE), ("micropython", MP_RE)):
        value = raw.get(name)
        if not isinstance(value, str) or not pattern.match(value):
            raise BundleError(f"manifest.json: bad {name} {str(value)[:40]!r}")
    files = raw.get("files")
    if not isinstance(files, list) or len(files) != 1:
        raise BundleError(f"manifest.json: an image lists one file, {IMAGE}")
    entry = files[0]
    if not isinstance(entry, dict) or set(entry) != {"path", "size", "sha256"}:
        raise BundleError("manifest.json: each file has exactly path, size and sha256")
    size, digest = entry["size"], entry["sha256"]
    if entry["path"] != IMAGE:
        raise BundleError(f"manifest.json: an image's file is {IMAGE}")
    if not isinstance(size, int) or isinstance(size, bool) or not 0 < size <= MAX_IMAGE:
        raise BundleError(f"manifest.json: bad size for {IMAGE} (1 to {MAX_IMAGE} bytes)")
    if not isinstance(digest, str) or not SHA_RE.match(digest):
        raise BundleError(f"manifest.json: bad sha256 for {IMAGE}")
    return Bundle(
        raw["version"],
        raw["board"],
        raw["micropython"],
        "",
        ((IMAGE, size, digest),),
        Path(),
        "image",
    )


def check_image_board(board: str, boards_dir: Path = BOARDS_DIR) -> None:
    """An image is registered only for a board that takes images: its board file says so."""
    try:
        spec = json.loads((boards_dir / f"{board}.json").read_text())
    except (OSError, ValueError, RecursionError):
        raise BundleError(
            f"board {board!r} is unknown (no boards/{board}.json): an image needs a board "
            'whose file says "ota_image": true'
        ) from None
    if not isinstance(spec, dict) or spec.get("ota_image") is not True:
        raise BundleError(
            f'board {board} does not take firmware images over the air (no "ota_image": true '
            "in its board file: it needs MicroPython's OTA variant, two app slots)"
        )


def _read_member(tar: tarfile.TarFile, member: tarfile.TarInfo, limit: int) -> bytes:
    if not member.isreg():
        raise BundleError(f"{member.name[:60]!r} is not a regular file")
    if member.size > limit:
        raise BundleError(f"{member.name[:60]!r} is larger than {limit} bytes")
    f = tar.extractfile(member)
    assert f is not None
    data = f.read(limit + 1)
    if len(data) != member.size:
        raise BundleError(f"{member.name[:60]!r} is truncated")
    return data


class Bundles:
    """The registered bundles of a data dir."""

    def __init__(self, data_dir: Path) -> None:
        self.root = data_dir / APPS_DIR

    def add(self, path: Path) -> Bundle:
        """Validates the bundle at path and registers it; BundleError otherwise."""
        try:
            size = path.stat().st_size
        except OSError as exc:
            raise BundleError(f"cannot read {path}: {exc.strerror}") from None
        if size > MAX_BUNDLE:
            raise BundleError(f"{path} is {size} bytes, more than {MAX_BUNDLE}")
        try:
            with tarfile.open(path, "r:") as tar:
                members = tar.getmembers()
                if len(members) > MAX_FILES + 1:
                    raise BundleError(f"{path} holds more than {MAX_FILES + 1} entries")
                by_name = {}
                for m in members:
                    if m.name in by_name:
                        raise BundleError(f"{m.name[:60]!r} is in the bundle twice")
                    by_name[m.name] = m
                if MANIFEST not in by_name:
                    raise BundleError(f"{path} has no {MANIFEST}")
                try:
                    raw = json.loads(_read_member(tar, by_name.pop(MANIFEST), MAX_MANIFEST))
                except (ValueError, RecursionError):
                    raise BundleError(f"{MANIFEST} is not JSON") from None
                bundle = check_manifest(raw)
                if bundle.kind == "image":
                    check_image_board(bundle.board)
                listed = {p for p, _, _ in bundle.files}
                if extra := sorted(set(by_name) - listed):
                    raise BundleError(f"{extra[0][:60]!r} is in the bundle but not the manifest")
                datas = []
                for p, size, digest in bundle.files:
                    if p not in by_name:
                        raise BundleError(f"{p} is in the manifest but not the bundle")
                    limit = MAX_IMAGE if bundle.kind == "image" else MAX_APP
                    data = _read_member(tar, by_name[p], limit)
                    if len(data) != size or hashlib.sha256(data).hexdigest() != digest:
                        raise BundleError(f"{p}: size or SHA-256 differs from the manifest")
                    datas.append(data)
        except (tarfile.TarError, EOFError) as exc:
            raise BundleError(f"{path} is not a bundle (tar): {exc}") from None
        return self._store(bundle, raw, datas)

    def _store(self, bundle: Bundle, raw: dict[str, Any], datas: list[bytes]) -> Bundle:
        final = self.root / bundle.version
        if final.exists():
            raise BundleError(f"version {bundle.version} is registered already")
        self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{bundle.version}.", dir=self.root))
        try:
            (tmp / PAYLOAD).write_bytes(b"".join(datas))
            (tmp / MANIFEST).write_text(json.dumps(raw))
            for f in (tmp / PAYLOAD, tmp / MANIFEST):
                with f.open("rb") as fh:
                    os.fsync(fh.fileno())
            tmp.rename(final)
        except OSError:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return self.get(bundle.version)

    def get(self, version: str) -> Bundle:
        if not VERSION_RE.match(version):
            raise BundleError(f"bad version {version[:40]!r}")
        folder = self.root / version
        try:
            raw = json.loads((folder / MANIFEST).read_text())
        except (OSError, ValueError):
            raise BundleError(f"no app version {version!r}: add it with `hub app add`") from None
        b = check_manifest(raw)
        return Bundle(b.version, b.board, b.micropython, b.mpy, b.files, folder / PAYLOAD, b.kind)

    def list(self) -> list[Bundle]:
        if not self.root.is_dir():
            return []
        out = []
        for folder in sorted(self.root.iterdir()):
            if folder.is_dir() and not folder.name.startswith("."):
                try:
                    out.append(self.get(folder.name))
                except BundleError:
                    continue
        return out


def read_chunk(bundle: Bundle, index: int, chunk: int) -> bytes:
    """Chunk ``index`` of the download, the manifest lines and then the payload (blocking: run
    it off the event loop)."""
    head = bundle.manifest_lines()
    start = index * chunk
    data = head[start : start + chunk]
    with bundle.payload.open("rb") as f:
        f.seek(max(start - len(head), 0))
        return data + f.read(chunk - len(data))
