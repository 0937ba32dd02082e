"""App bundles (``mpy-hub-tools bundle``): validated, then kept in ``<data dir>/apps/<version>/``.

A bundle is hostile until checked: an uncompressed tar of at most ``MAX_BUNDLE`` bytes holding
``manifest.json`` and exactly the files it lists, each a regular file whose path is
``node/.../name.mpy`` (no ``..``, no absolute path, no link), with the size and SHA-256 the
manifest gives. The hub keeps the manifest and the files concatenated in manifest order
(``payload.bin``: what goes over the wire, chunk by chunk), written into a temporary folder and
renamed into place, so a failed ``hub app add`` leaves nothing behind.
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
MAX_BUNDLE = 2 * 1024 * 1024  # bytes of the tar
MAX_APP = 1024 * 1024  # bytes of the app's files together (what a device accepts)
MAX_FILES = 128
MAX_MANIFEST = 64 * 1024
VERSION_RE = re.compile(r"^[0-9A-Za-z][0-9A-Za-z.+_-]{0,31}\Z")
BOARD_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}\Z")
PATH_RE = re.compile(r"^node/(?:[a-z0-9_]{1,32}/){0,4}[a-z0-9_]{1,32}\.mpy\Z")
MP_RE = re.compile(r"^[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}\Z")
MPY_RE = re.compile(r"^[0-9]{1,2}\.[0-9]\Z")
SHA_RE = re.compile(r"^[0-9a-f]{64}\Z")


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

    @property
    def size(self) -> int:
        """Bytes of the app's files."""
        return sum(size for _, size, _ in self.files)

    def manifest_lines(self) -> bytes:
        """The manifest as the device reads it: one ``path size sha256`` line per file."""
        return b"".join(f"{p} {s} {d}\n".encode() for p, s, d in self.files)

    @property
    def download_size(self) -> int:
        """Bytes on the wire: the manifest lines, then the files."""
        return len(self.manifest_lines()) + self.size

    def summary(self) -> dict[str, Any]:
        return {
            "version": self.version,
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
    known = {"format", "version", "board", "micropython", "mpy", "files"}
    if unknown := sorted(set(raw) - known):
        raise BundleError(f"manifest.json: unknown field {unknown[0]!r}")
    if raw.get("format") != FORMAT:
        raise BundleError(f"manifest.json: format must be {FORMAT}")
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
                listed = {p for p, _, _ in bundle.files}
                if extra := sorted(set(by_name) - listed):
                    raise BundleError(f"{extra[0][:60]!r} is in the bundle but not the manifest")
                datas = []
                for p, size, digest in bundle.files:
                    if p not in by_name:
                        raise BundleError(f"{p} is in the manifest but not the bundle")
                    data = _read_member(tar, by_name[p], MAX_APP)
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
        return Bundle(b.version, b.board, b.micropython, b.mpy, b.files, folder / PAYLOAD)

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
