"""`hub backup` and `hub restore`: a consistent snapshot of a data dir, taken while the hub runs.

A backup is a tar.gz holding ``MANIFEST.json`` (the hub version, the time and every file with
its size and SHA-256) and the data dir's files: every SQLite database copied with SQLite's
online backup API (a consistent snapshot even while the hub writes), and every other regular
file (``hub.key``, ``registry.key``, ``certs/`` with the device keys) as it is. Telemetry kept
in PostgreSQL is not in it (the manifest says so): that is pg_dump's job.

Restoring reads the archive as hostile: only plain files and folders with relative names that
stay inside the data dir, exactly the files the manifest lists, with the sizes and hashes it
lists. Files are extracted into a new folder beside the data dir, which then takes the data
dir's place; an existing non-empty data dir is only moved aside (``--force``), never deleted,
and never while a hub serves from it.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import shutil
import sqlite3
import tarfile
import tempfile
import time
import zlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit

from hub import __version__
from hub.datalock import LOCK_FILE, DataDirBusy, DataDirLock

MANIFEST = "MANIFEST.json"
FORMAT = "mpy-hub-backup"
FORMAT_VERSION = 1
MAX_MANIFEST = 4 * 1024 * 1024
MAX_FILES = 100_000
_SKIPPED_SUFFIXES = ("-wal", "-shm", "-journal")  # SQLite's own, folded in by the backup API
_CHUNK = 1024 * 1024


class BackupError(Exception):
    """A backup cannot be written or a restore is refused; the message says why."""


@dataclass(frozen=True)
class BackupResult:
    path: Path
    files: int
    size: int
    notes: tuple[str, ...]  # what the backup leaves out, for the command's output


@dataclass(frozen=True)
class RestoreResult:
    data_dir: Path
    files: int
    moved_aside: Path | None


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _copy_sqlite(source: Path, target: Path) -> None:
    """A consistent copy of a live database (SQLite's online backup API)."""
    src = sqlite3.connect(f"{source.resolve().as_uri()}?mode=ro", uri=True, timeout=30.0)
    try:
        dst = sqlite3.connect(target)
        try:
            src.backup(dst)
            dst.execute("PRAGMA journal_mode=DELETE")  # one self-contained file
        finally:
            dst.close()
    finally:
        src.close()


def _wanted(relative: PurePosixPath) -> bool:
    name = relative.name
    return name != LOCK_FILE and not name.endswith(_SKIPPED_SUFFIXES) and not name.startswith(".")


def _redact(url: str) -> str:
    """A database URL without its user name, password or query (which may hold one)."""
    parts = urlsplit(url)
    try:
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        port = ":?"
    if "@" in url.partition("#")[0] and "@" not in parts.netloc:  # an unencoded '/?#' in it
        return f"{parts.scheme}://(redacted)"
    return f"{parts.scheme}://{parts.hostname or ''}{port}{parts.path}"


def backup(data_dir: Path, out: Path, *, store_url: str | None = None) -> BackupResult:
    """Writes the backup of ``data_dir`` to ``out`` (owner-only, whole or not at all)."""
    try:
        return _backup(data_dir, out, store_url)
    except OSError as exc:
        raise BackupError(f"cannot write the backup {out}: {exc}") from None


def _backup(data_dir: Path, out: Path, store_url: str | None) -> BackupResult:
    if not data_dir.is_dir():
        raise BackupError(f"data dir {data_dir} does not exist")
    if out.resolve().is_relative_to(data_dir.resolve()):
        raise BackupError(f"write the backup outside the data dir, not to {out}")
    notes: list[str] = []
    with tempfile.TemporaryDirectory(prefix=".hub-backup-", dir=out.parent) as staging_name:
        staging = Path(staging_name)
        entries = _stage(data_dir, staging, notes)
        telemetry: dict[str, str] = {"store": "sqlite", "file": "telemetry.sqlite3"}
        if store_url is not None and store_url.startswith(("postgresql://", "postgres://")):
            telemetry = {
                "store": "postgresql",
                "url": _redact(store_url),
                "note": "readings are in PostgreSQL, not in this backup: use pg_dump",
            }
            notes.append(
                f"telemetry is in PostgreSQL ({_redact(store_url)}): not in this backup; "
                "back it up with pg_dump"
            )
        elif not (data_dir / "telemetry.sqlite3").exists():
            telemetry = {"store": "none", "note": "no telemetry.sqlite3 in the data dir"}
            notes.append(
                "no telemetry database in the data dir: if the hub keeps readings in "
                "PostgreSQL (--store), back them up with pg_dump"
            )
        manifest = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "hub_version": __version__,
            "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "data_dir": str(data_dir),
            "telemetry": telemetry,
            "files": entries,
        }
        fd, tmp_name = tempfile.mkstemp(prefix=f".{out.name}.", dir=out.parent)  # 0600
        try:
            with os.fdopen(fd, "wb") as raw, tarfile.open(fileobj=raw, mode="w:gz") as tar:
                _add_bytes(tar, MANIFEST, json.dumps(manifest, indent=2).encode())
                for entry in entries:
                    _add_file(tar, entry["path"], staging / entry["path"])
            with open(tmp_name, "rb") as f:
                os.fsync(f.fileno())
            os.replace(tmp_name, out)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp_name)
            raise
    size = sum(int(e["size"]) for e in entries)
    return BackupResult(out, len(entries), size, tuple(notes))


def _stage(data_dir: Path, staging: Path, notes: list[str]) -> list[dict[str, Any]]:
    """Copies what the backup holds into ``staging``; returns the manifest's file list."""
    entries: list[dict[str, Any]] = []
    for root, dirs, files in os.walk(data_dir):
        dirs.sort()
        for name in sorted(files):
            source = Path(root, name)
            relative = PurePosixPath(source.relative_to(data_dir).as_posix())
            if not _wanted(relative):
                continue
            if source.is_symlink() or not source.is_file():
                notes.append(f"skipped {relative}: not a regular file")
                continue
            target = staging / relative
            target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            kind = "sqlite" if name.endswith(".sqlite3") else "file"
            try:
                if kind == "sqlite":
                    _copy_sqlite(source, target)
                else:
                    shutil.copyfile(source, target)
            except (sqlite3.Error, OSError) as exc:
                raise BackupError(f"cannot copy {source}: {exc}") from exc
            entries.append(
                {
                    "path": str(relative),
                    "kind": kind,
                    "size": target.stat().st_size,
                    "sha256": _sha256(target),
                }
            )
    return entries


def _member(name: str, size: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = size, 0o600, int(time.time())
    return info


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    tar.addfile(_member(name, len(data)), io.BytesIO(data))


def _add_file(tar: tarfile.TarFile, name: str, path: Path) -> None:
    with path.open("rb") as f:
        tar.addfile(_member(name, path.stat().st_size), f)


# --- restore ---------------------------------------------------------------------------------
def _safe_name(name: str) -> PurePosixPath:
    path = PurePosixPath(name)
    if (
        not name
        or name.startswith("/")
        or "\\" in name
        or "\0" in name
        or any(part in ("..", ".", "") for part in name.split("/"))
    ):
        raise BackupError(f"refused: the archive has an unsafe path {name!r}")
    return path


def _read_manifest(tar: tarfile.TarFile) -> dict[str, Any]:
    try:
        info = tar.getmember(MANIFEST)
    except KeyError:
        raise BackupError(f"not a hub backup: no {MANIFEST} in the archive") from None
    if not info.isfile() or info.size > MAX_MANIFEST:
        raise BackupError(f"not a hub backup: {MANIFEST} is not a plain file of sane size")
    f = tar.extractfile(info)
    assert f is not None
    try:
        manifest = json.loads(f.read())
        files = manifest["files"]
        ok = manifest.get("format") == FORMAT and isinstance(files, list)
        ok = ok and all(
            isinstance(e["path"], str)
            and isinstance(e["sha256"], str)
            and isinstance(e["size"], int)
            for e in files
        )
    except (ValueError, KeyError, TypeError) as exc:
        raise BackupError(f"not a hub backup: bad {MANIFEST} ({exc})") from None
    if not ok:
        raise BackupError(f"not a hub backup: {MANIFEST} has the wrong format")
    if manifest.get("format_version") != FORMAT_VERSION:
        raise BackupError(f"backup format {manifest.get('format_version')!r} is not supported")
    if len(files) > MAX_FILES:
        raise BackupError(f"refused: the manifest lists more than {MAX_FILES} files")
    return dict(manifest)


def _extract(tar: tarfile.TarFile, manifest: dict[str, Any], target: Path) -> int:
    """Writes the manifest's files into ``target`` (0600 files, 0700 folders), checking
    every entry against the manifest; returns how many files it wrote."""
    expected = {str(_safe_name(e["path"])): e for e in manifest["files"]}
    if len(expected) != len(manifest["files"]) or MANIFEST in expected:
        raise BackupError(f"not a hub backup: {MANIFEST} lists a file twice")
    total = sum(max(0, int(e["size"])) for e in expected.values())
    if total > shutil.disk_usage(target).free:
        raise BackupError(f"refused: the backup needs {total} bytes, more than the disk has free")
    seen: set[str] = set()
    for info in tar:
        name = info.name
        if name == MANIFEST:
            continue
        _safe_name(name.rstrip("/") if info.isdir() else name)
        if info.isdir():
            continue
        if not info.isfile():
            raise BackupError(f"refused: {name!r} in the archive is a link or a special file")
        entry = expected.get(name)
        if entry is None or name in seen:
            raise BackupError(f"refused: {name!r} in the archive is not in its manifest once")
        if info.size != entry["size"]:
            raise BackupError(
                f"refused: {name!r} has {info.size} bytes, the manifest says {entry['size']}"
            )
        seen.add(name)
        _write_member(tar, info, target / name, entry["sha256"])
    missing = sorted(set(expected) - seen)
    if missing:
        raise BackupError(f"the archive is missing {', '.join(missing[:5])} (truncated?)")
    return len(seen)


def _write_member(tar: tarfile.TarFile, info: tarfile.TarInfo, path: Path, sha256: str) -> None:
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    source = tar.extractfile(info)
    assert source is not None
    digest = hashlib.sha256()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "wb") as out:
        while chunk := source.read(_CHUNK):
            digest.update(chunk)
            out.write(chunk)
        out.flush()
        os.fsync(out.fileno())
    if digest.hexdigest() != sha256:
        raise BackupError(f"refused: {info.name!r} does not match its SHA-256 in the manifest")


def _open_archive(archive: Path) -> tarfile.TarFile:
    try:
        return tarfile.open(archive, mode="r:gz")
    except FileNotFoundError:
        raise BackupError(f"no backup file {archive}") from None
    except (tarfile.TarError, EOFError, zlib.error, OSError) as exc:
        raise BackupError(f"{archive} is not a readable hub backup (tar.gz): {exc}") from None


def _is_empty(data_dir: Path) -> bool:
    return not any(p.name != LOCK_FILE for p in data_dir.iterdir())


def restore(archive: Path, data_dir: Path, *, force: bool = False) -> RestoreResult:
    """Restores ``archive`` into ``data_dir``; see the module's docstring for the rules."""
    if data_dir.exists() and not data_dir.is_dir():
        raise BackupError(f"data dir {data_dir} is not a folder")
    lock = DataDirLock(data_dir) if data_dir.is_dir() else None
    if lock is not None:
        try:
            lock.acquire()  # held until the swap is done: no hub starts on it meanwhile
        except DataDirBusy as exc:
            raise BackupError(f"{exc}: stop it before restoring") from None
    try:
        if lock is not None and not _is_empty(data_dir) and not force:
            raise BackupError(
                f"data dir {data_dir} is not empty: restore into a new one, or use --force "
                "(its files are moved aside, not deleted)"
            )
        data_dir.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{data_dir.name}.restore-", dir=data_dir.parent))
        try:
            os.chmod(staging, 0o700)
            files = _restore_into(archive, staging)
            moved = _swap(staging, data_dir)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
    finally:
        if lock is not None:
            lock.release()
    return RestoreResult(data_dir, files, moved)


def _restore_into(archive: Path, staging: Path) -> int:
    tar = _open_archive(archive)
    try:
        manifest = _read_manifest(tar)
        return _extract(tar, manifest, staging)
    except (tarfile.TarError, EOFError, zlib.error) as exc:
        raise BackupError(f"{archive} is damaged or truncated: {exc}") from None
    except OSError as exc:
        raise BackupError(f"cannot restore {archive}: {exc}") from None
    finally:
        tar.close()


def _swap(staging: Path, data_dir: Path) -> Path | None:
    """Puts the restored folder in the data dir's place; an old one with files is renamed
    to ``<data dir>.old-<time>``."""
    moved: Path | None = None
    if data_dir.exists():
        if _is_empty(data_dir):
            with contextlib.suppress(FileNotFoundError):
                (data_dir / LOCK_FILE).unlink()
            data_dir.rmdir()
        else:
            moved = data_dir.with_name(
                f"{data_dir.name}.old-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}"
            )
            if moved.exists():
                raise BackupError(f"{moved} exists already: try again in a second")
            data_dir.rename(moved)
    staging.rename(data_dir)
    return moved


def describe(result: BackupResult | RestoreResult) -> list[str]:
    """The command's output lines."""
    if isinstance(result, BackupResult):
        head = f"backed up {result.files} files ({result.size} bytes) to {result.path}"
        return [head, *result.notes]
    lines = [f"restored {result.files} files into {result.data_dir}"]
    if result.moved_aside is not None:
        lines.append(f"the previous data dir was moved to {result.moved_aside}")
    return lines
