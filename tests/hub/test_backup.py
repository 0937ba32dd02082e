"""`hub backup` and `hub restore` against the real hub: a snapshot taken while a device
publishes, restored into a new data dir where the device logs in; the data dir's lock; hostile
archives."""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import stat
import subprocess
import tarfile
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from hub.backup import MANIFEST, BackupError, restore
from tests.support.hubproc import (
    HubProcess,
    hub_cli,
    provision,
    scaled,
    serve_refused,
    start_hub,
)
from tests.support.mqtt import RawClient
from tests.support.waits import eventually


def token(data: Path) -> str:
    result = hub_cli(data, "token", "create", "--admin", "--subscribe", "d/+/t/+")
    assert result.returncode == 0, result.stderr
    return result.stdout.strip().splitlines()[-1]


def telemetry(hub: HubProcess, device: str) -> list[dict[str, Any]]:
    request = urllib.request.Request(
        f"{hub.http_url}/api/devices/{device}/telemetry?limit=10000",
        headers={"Authorization": f"Bearer {token(hub.data_dir)}"},
    )
    with urllib.request.urlopen(request, timeout=scaled(30)) as response:
        return list(json.loads(response.read()))


async def publish_readings(hub: HubProcess, creds: dict[str, str], seqs: range) -> None:
    client = await RawClient.tcp(hub.host, hub.mqtt_port)
    _, code = await client.connect("bk-1", username="bk-1", password=creds["password"])
    assert code == 0
    for seq in seqs:
        await client.publish(
            "d/bk-1/t/temp", b"b00f,%d,21.5" % seq, qos=1, pid=seq % 60000 + 1, timeout=scaled(5)
        )
    await client.disconnect()


def test_a_backup_of_a_running_hub_restores_into_a_new_data_dir(tmp_path: Path) -> None:
    """While a hub runs and a device publishes, `hub backup` writes an owner-only archive with
    a manifest; restored into a new data dir, a hub starts there, the device logs in with its
    old secret and its readings are there; restoring over that running hub is refused."""
    old = start_hub(tmp_path / "old", "--rate-limit", "0", secure=True)
    try:
        creds = provision(old, "bk-1")
        asyncio.run(publish_readings(old, creds, range(0, 20)))
        eventually(lambda: len(telemetry(old, "bk-1")) == 20, 15, "20 readings stored")
        archive = tmp_path / "hub-backup.tar.gz"

        async def publish_during_backup() -> subprocess.CompletedProcess[str]:
            publishing = asyncio.create_task(publish_readings(old, creds, range(20, 220)))
            result = await asyncio.to_thread(hub_cli, old.data_dir, "backup", str(archive))
            await publishing
            return result

        result = asyncio.run(publish_during_backup())
        assert result.returncode == 0, result.stderr
        assert f"to {archive}" in result.stdout
    finally:
        old.stop()
    assert stat.S_IMODE(archive.stat().st_mode) == 0o600
    with tarfile.open(archive) as tar:
        names = set(tar.getnames())
        manifest = json.loads(tar.extractfile(MANIFEST).read())  # type: ignore[union-attr]
        for entry in manifest["files"]:
            data = tar.extractfile(entry["path"]).read()  # type: ignore[union-attr]
            assert hashlib.sha256(data).hexdigest() == entry["sha256"]
    assert manifest["hub_version"] and manifest["created_at"]
    listed = {e["path"] for e in manifest["files"]}
    assert {"registry.sqlite3", "registry.key", "hub.key", "telemetry.sqlite3"} <= listed
    assert names == listed | {MANIFEST}
    assert not any(n.endswith(("-wal", "-shm", "hub.lock")) for n in names)

    new_dir = tmp_path / "restored" / "data"
    result = hub_cli(new_dir, "restore", str(archive))
    assert result.returncode == 0, result.stderr
    assert stat.S_IMODE(new_dir.stat().st_mode) == 0o700
    assert all(stat.S_IMODE(p.stat().st_mode) & 0o077 == 0 for p in new_dir.rglob("*"))
    new = start_hub(new_dir, secure=True)
    try:

        async def login() -> int:
            client = await RawClient.tcp(new.host, new.mqtt_port)
            _, code = await client.connect("bk-1", username="bk-1", password=creds["password"])
            await client.close()
            return code

        assert asyncio.run(login()) == 0
        seqs = {r["seq"] for r in telemetry(new, "bk-1")}
        assert set(range(20)) <= seqs  # stored before the backup began: all there
        refused = hub_cli(new_dir, "restore", str(archive), "--force")
        assert refused.returncode == 2
        assert f"hub: error: another hub is running on {new_dir}" in refused.stderr
    finally:
        new.stop()


def test_a_second_hub_on_a_locked_data_dir_is_refused(tmp_path: Path) -> None:
    """`hub serve` on a data dir another hub serves from exits 2 with a clear error."""
    hub = start_hub(tmp_path / "data", secure=True)
    try:
        second = serve_refused(hub.data_dir)
        assert second.returncode == 2
        assert f"hub: error: another hub is running on {hub.data_dir}" in second.stderr
        assert second.stdout == ""
    finally:
        hub.stop()
    again = start_hub(tmp_path / "data", secure=True)  # the lock goes with its hub
    again.stop()


def test_restore_refuses_a_data_dir_with_files_and_force_moves_it_aside(tmp_path: Path) -> None:
    """Without --force a data dir with files is left alone; with it, the old files are moved
    to DATA_DIR.old-TIME, not deleted."""
    source = tmp_path / "source"
    assert hub_cli(source, "device", "add", "dev-1").returncode == 0
    archive = tmp_path / "b.tar.gz"
    assert hub_cli(source, "backup", str(archive)).returncode == 0
    target = tmp_path / "target"
    assert hub_cli(target, "device", "add", "other").returncode == 0
    before = (target / "registry.sqlite3").read_bytes()
    refused = hub_cli(target, "restore", str(archive))
    assert refused.returncode == 2 and "is not empty" in refused.stderr
    assert (target / "registry.sqlite3").read_bytes() == before
    done = hub_cli(target, "restore", str(archive), "--force")
    assert done.returncode == 0, done.stderr
    (aside,) = tmp_path.glob("target.old-*")
    assert (aside / "registry.sqlite3").read_bytes() == before
    assert str(aside) in done.stdout
    listing = hub_cli(target, "device", "list", "--json")
    assert [d["id"] for d in json.loads(listing.stdout)] == ["dev-1"]


def hostile(entries: list[tuple[tarfile.TarInfo, bytes]], manifest: Any = None) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz") as tar:
        if manifest is not None:
            body = json.dumps(manifest).encode()
            info = tarfile.TarInfo(MANIFEST)
            info.size = len(body)
            tar.addfile(info, io.BytesIO(body))
        for info, data in entries:
            tar.addfile(info, io.BytesIO(data) if info.isfile() else None)
    return out.getvalue()


def file_entry(name: str, data: bytes = b"x") -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    return info, data


def link_entry(
    name: str, target: str, kind: bytes = tarfile.SYMTYPE
) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, target
    return info, b""


def manifest_for(*names: str, data: bytes = b"x") -> dict[str, Any]:
    digest = hashlib.sha256(data).hexdigest()
    files = [{"path": n, "kind": "file", "size": len(data), "sha256": digest} for n in names]
    return {"format": "mpy-hub-backup", "format_version": 1, "hub_version": "0", "files": files}


def good_archive(tmp_path: Path) -> bytes:
    source = tmp_path / "good-source"
    assert hub_cli(source, "device", "add", "dev-1").returncode == 0
    archive = tmp_path / "good.tar.gz"
    assert hub_cli(source, "backup", str(archive)).returncode == 0
    return archive.read_bytes()


HOSTILE = {
    "parent path": (lambda: hostile([file_entry("../evil")], manifest_for("../evil")), "unsafe"),
    "nested parent": (
        lambda: hostile([file_entry("certs/../../evil")], manifest_for("certs/../../evil")),
        "unsafe",
    ),
    "absolute path": (
        lambda: hostile([file_entry("/tmp/evil")], manifest_for("/tmp/evil")),
        "unsafe",
    ),
    "symlink": (
        lambda: hostile([link_entry("hub.key", "/etc/passwd")], manifest_for()),
        "link or a special file",
    ),
    "hard link": (
        lambda: hostile([link_entry("hub.key", "/etc/passwd", tarfile.LNKTYPE)], manifest_for()),
        "link or a special file",
    ),
    "no manifest": (lambda: hostile([file_entry("hub.key")]), "no MANIFEST.json"),
    "unlisted file": (lambda: hostile([file_entry("hub.key")], manifest_for()), "not in its"),
    "wrong hash": (
        lambda: hostile([file_entry("hub.key", b"y")], manifest_for("hub.key")),
        "SHA-256",
    ),
    "missing file": (lambda: hostile([], manifest_for("hub.key")), "missing hub.key"),
    "bad manifest": (lambda: hostile([], {"format": "zip"}), "not a hub backup"),
    "not gzip": (lambda: b"PK\x03\x04 not a tar at all" * 10, "not a readable hub backup"),
    "empty file": (lambda: b"", "not a readable hub backup"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_archives_are_refused_and_write_nothing(tmp_path: Path, case: str) -> None:
    """Path traversal, links, a missing or lying manifest and non-archives are refused with a
    clear error; no data dir appears and nothing is written beside it."""
    make, message = HOSTILE[case]
    archive = tmp_path / "hostile.tar.gz"
    archive.write_bytes(make())
    target = tmp_path / "inside" / "data"
    with pytest.raises(BackupError, match=message):
        restore(archive, target)
    assert not target.exists()
    assert sorted(p.name for p in (tmp_path / "inside").iterdir()) == []
    assert not (tmp_path / "evil").exists() and not Path("/tmp/evil").exists()


def test_a_truncated_backup_is_refused_by_the_command(tmp_path: Path) -> None:
    """A backup cut short is refused by `hub restore` with `hub: error:` and exit 2, and no
    data dir is made."""
    data = good_archive(tmp_path)
    archive = tmp_path / "cut.tar.gz"
    archive.write_bytes(data[: len(data) * 2 // 3])
    target = tmp_path / "data"
    result = hub_cli(target, "restore", str(archive))
    assert result.returncode == 2
    assert result.stderr.startswith("hub: error: ") and "Traceback" not in result.stderr
    assert not target.exists()


def test_a_backup_says_when_telemetry_lives_in_postgresql(tmp_path: Path) -> None:
    """With the hub's --store pointing at PostgreSQL, the output and the manifest say the
    readings are not in the backup (pg_dump's job), and neither holds the URL's password."""
    data = tmp_path / "data"
    assert hub_cli(data, "device", "add", "dev-1").returncode == 0
    archive = tmp_path / "b.tar.gz"
    url = "postgresql://hub:s3cretpw@db.example:5432/hub"
    result = hub_cli(data, "backup", str(archive), "--store", url)
    assert result.returncode == 0, result.stderr
    assert "PostgreSQL (postgresql://db.example:5432/hub)" in result.stdout
    assert "pg_dump" in result.stdout and "s3cretpw" not in result.stdout
    with tarfile.open(archive) as tar:
        raw = tar.extractfile(MANIFEST).read()  # type: ignore[union-attr]
    manifest = json.loads(raw)
    assert manifest["telemetry"]["store"] == "postgresql"
    assert "pg_dump" in manifest["telemetry"]["note"] and b"s3cretpw" not in raw
