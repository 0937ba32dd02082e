"""Device secrets: the keyed hash, its key file, constant-time checks and the upgrade of
scrypt hashes written by older hubs, without the hub running."""

from __future__ import annotations

import asyncio
import hmac
import json
import sqlite3
import stat
from pathlib import Path

import pytest

from hub import device_secrets
from hub.device_secrets import KEY_FILE, KEYED_PREFIX, SCRYPT_PREFIX, scrypt_hash
from hub.registry import SLOW, Registry, RegistryError
from hub.security import Gatekeeper
from tests.support.hubproc import hub_cli, scaled, start_hub
from tests.support.mqtt import RawClient
from tests.support.waits import eventually_async


def stored_hash(data: Path, device_id: str) -> str:
    db = sqlite3.connect(data / Registry.FILE)
    try:
        return str(
            db.execute("SELECT secret_hash FROM devices WHERE id = ?", (device_id,)).fetchone()[0]
        )
    finally:
        db.close()


def make_legacy(data: Path, device_id: str, secret: str) -> None:
    """Rewrites a device's hash in the form hubs before the keyed hash wrote (salted scrypt)."""
    db = sqlite3.connect(data / Registry.FILE)
    with db:
        db.execute(
            "UPDATE devices SET secret_hash = ? WHERE id = ?", (scrypt_hash(secret), device_id)
        )
    db.close()


def test_new_secrets_are_stored_as_keyed_hashes_checked_without_scrypt(tmp_path: Path) -> None:
    """A new device's hash is HMAC-SHA-256 under the registry key; the fast path decides both
    right and wrong secrets without ever deferring to scrypt."""
    registry = Registry(tmp_path)
    secret = registry.add("dev-1")
    assert stored_hash(tmp_path, "dev-1").startswith(KEYED_PREFIX)
    assert registry.is_cheap("dev-1")
    device = registry.verify_fast("dev-1", secret)
    assert device is not SLOW and device is not None and device.id == "dev-1"
    assert registry.verify_fast("dev-1", secret[:-1]) is None
    assert registry.verify_fast("dev-1", "") is None
    assert registry.verify_fast("nobody", secret) is None
    registry.close()


def test_the_registry_key_is_owner_only_and_kept(tmp_path: Path) -> None:
    """registry.key is made 0600 with 32 random bytes, survives reopening, and a secret made
    under it verifies in another process's registry object."""
    first = Registry(tmp_path)
    secret = first.add("dev-1")
    key_path = tmp_path / KEY_FILE
    assert stat.S_IMODE(key_path.stat().st_mode) == 0o600
    assert len(key_path.read_bytes()) == 32
    key = key_path.read_bytes()
    second = Registry(tmp_path)
    assert second.verify("dev-1", secret) is not None
    assert key_path.read_bytes() == key
    first.close()
    second.close()


def test_a_missing_key_is_refused_rather_than_replaced(tmp_path: Path) -> None:
    """With keyed hashes in the registry, a missing registry.key is a clear error (a new key
    would silently lock every device out), and no new key appears."""
    Registry(tmp_path).add("dev-1")
    (tmp_path / KEY_FILE).unlink()
    with pytest.raises(RegistryError, match=r"registry\.key is missing but 1 device secret"):
        Registry(tmp_path)
    assert not (tmp_path / KEY_FILE).exists()


def test_a_broken_key_file_is_a_clear_error(tmp_path: Path) -> None:
    """A registry.key that is not 32 bytes is refused with a message naming it."""
    Registry(tmp_path).close()
    (tmp_path / KEY_FILE).write_bytes(b"short")
    with pytest.raises(RegistryError, match="is not a registry key"):
        Registry(tmp_path)


def test_a_hash_copied_to_another_device_logs_nobody_in(tmp_path: Path) -> None:
    """The device id is part of the keyed hash: dev-1's hash in dev-2's row does not admit
    dev-2 with dev-1's secret."""
    registry = Registry(tmp_path)
    secret = registry.add("dev-1")
    registry.add("dev-2")
    db = sqlite3.connect(tmp_path / Registry.FILE)
    with db:
        db.execute(
            "UPDATE devices SET secret_hash = ? WHERE id = 'dev-2'",
            (stored_hash(tmp_path, "dev-1"),),
        )
    db.close()
    assert registry.verify("dev-2", secret) is None
    registry.close()


def test_an_old_scrypt_hash_verifies_once_and_is_upgraded(tmp_path: Path) -> None:
    """A scrypt hash from an older hub defers the fast path, verifies on the slow one, is
    replaced by the keyed form on that login, and the device's fingerprint (what makes the
    hub kick it) stays the same."""
    registry = Registry(tmp_path)
    secret = registry.add("old-1")
    registry.close()
    make_legacy(tmp_path, "old-1", secret)
    registry = Registry(tmp_path)
    assert not registry.is_cheap("old-1")
    assert registry.verify_fast("old-1", secret) is SLOW
    before = registry.fingerprints()["old-1"]
    assert registry.verify("old-1", "wrong") is None
    assert stored_hash(tmp_path, "old-1").startswith(SCRYPT_PREFIX)  # no upgrade on failure
    assert registry.verify("old-1", secret) is not None
    assert stored_hash(tmp_path, "old-1").startswith(KEYED_PREFIX)
    assert registry.is_cheap("old-1")
    answer = registry.verify_fast("old-1", secret)
    assert answer is not SLOW and answer is not None
    assert registry.fingerprints()["old-1"] == before
    registry.close()


def test_rotating_changes_the_fingerprint_and_the_secret(tmp_path: Path) -> None:
    """Rotate and drop_secret move the fingerprint's secret field (the hub kicks the device);
    the old secret stops working, on the fast path too."""
    registry = Registry(tmp_path)
    old = registry.add("dev-1")
    first = registry.fingerprints()["dev-1"].secret_hash
    new = registry.rotate("dev-1")
    second = registry.fingerprints()["dev-1"].secret_hash
    assert first != second
    assert registry.verify_fast("dev-1", old) is None
    assert registry.verify_fast("dev-1", new) not in (None, SLOW)
    registry.drop_secret("dev-1")
    assert registry.fingerprints()["dev-1"].secret_hash != second
    assert registry.verify_fast("dev-1", new) is None
    registry.close()


def test_checks_compare_in_constant_time_for_known_and_unknown_devices(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every check, right or wrong, known device or not, or one without a secret, ends in
    one hmac.compare_digest of a full-length digest (no early exit that tells which ids
    exist)."""
    registry = Registry(tmp_path)
    secret = registry.add("dev-1")
    registry.add("dev-2")
    registry.drop_secret("dev-2")
    calls: list[tuple[int, int]] = []
    real = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        calls.append((len(a), len(b)))
        return real(a, b)

    monkeypatch.setattr(device_secrets.hmac, "compare_digest", spy)
    for device_id, given in [
        ("dev-1", secret),
        ("dev-1", "wrong"),
        ("ghost", "wrong"),
        ("dev-2", secret),
    ]:
        calls.clear()
        registry.verify_fast(device_id, given)
        assert calls == [(32, 32)], (device_id, calls)
    registry.close()


def test_the_gatekeeper_decides_on_the_fast_path_unless_scrypt_is_needed(tmp_path: Path) -> None:
    """Gatekeeper.is_cheap and authenticate_fast: tokens, unknown and keyed devices are
    decided at once; a device with a scrypt hash gets None (run authenticate in a thread),
    which admits and upgrades it, after which the fast path admits it."""
    registry = Registry(tmp_path)
    keyed = registry.add("new-1", allow_insecure=True)
    legacy = registry.add("old-1", allow_insecure=True)
    registry.close()
    make_legacy(tmp_path, "old-1", legacy)
    registry = Registry(tmp_path)
    gate = Gatekeeper(registry, bytes(32), allow_anonymous=False)
    assert gate.is_cheap("token") and gate.is_cheap(None) and gate.is_cheap("new-1")
    assert gate.is_cheap("ghost") and not gate.is_cheap("old-1")
    fast = gate.authenticate_fast("new-1", keyed.encode(), "new-1", False)
    assert fast is not None and fast.identity is not None
    wrong = gate.authenticate_fast("ghost", b"x", "ghost", False)
    assert wrong is not None and wrong.identity is None and wrong.bad_credentials
    assert gate.authenticate_fast("old-1", legacy.encode(), "old-1", False) is None
    slow = gate.authenticate("old-1", legacy.encode(), "old-1", False)
    assert slow.identity is not None and slow.identity.name == "old-1"
    assert gate.is_cheap("old-1")
    again = gate.authenticate_fast("old-1", legacy.encode(), "old-1", False)
    assert again is not None and again.identity is not None
    registry.close()


def test_a_hub_admits_a_device_of_an_old_registry_and_upgrades_it_in_place(
    tmp_path: Path,
) -> None:
    """A real hub on a registry whose device hash is scrypt (as older hubs wrote it) admits
    the device, replaces the hash with the keyed form without kicking it, refuses a wrong
    secret, and admits it again on the keyed form."""
    data = tmp_path / "data"
    added = hub_cli(data, "device", "add", "old-1", "--allow-insecure")
    assert added.returncode == 0, added.stderr
    secret = json.loads(added.stdout)["password"]
    make_legacy(data, "old-1", secret)
    hub = start_hub(data, secure=True)
    try:

        async def scenario() -> None:
            client = await RawClient.tcp(hub.host, hub.mqtt_port)
            _, code = await client.connect("old-1", username="old-1", password=secret)
            assert code == 0
            await eventually_async(
                lambda: stored_hash(data, "old-1").startswith(KEYED_PREFIX),
                10,
                "the hash to be upgraded",
            )
            await client.recv_nothing(scaled(1.5))  # three registry polls: no kick
            await client.ping()
            wrong = await RawClient.tcp(hub.host, hub.mqtt_port)
            _, code = await wrong.connect("old-1", username="old-1", password=secret + "x")
            assert code == 4
            await wrong.close()
            await client.disconnect()
            again = await RawClient.tcp(hub.host, hub.mqtt_port)
            _, code = await again.connect("old-1", username="old-1", password=secret)
            assert code == 0
            await again.disconnect()

        asyncio.run(scenario())
    finally:
        hub.stop()


def test_rotating_a_connected_device_still_disconnects_it(tmp_path: Path) -> None:
    """`hub device rotate` moves the secret's serial, so the running hub kicks the device at
    once, and only the new secret logs it in."""
    data = tmp_path / "data"
    added = hub_cli(data, "device", "add", "rot-1", "--allow-insecure")
    assert added.returncode == 0, added.stderr
    old = json.loads(added.stdout)["password"]
    hub = start_hub(data, secure=True)
    try:

        async def scenario() -> None:
            client = await RawClient.tcp(hub.host, hub.mqtt_port)
            _, code = await client.connect("rot-1", username="rot-1", password=old)
            assert code == 0
            rotated = await asyncio.to_thread(hub_cli, data, "device", "rotate", "rot-1")
            assert rotated.returncode == 0, rotated.stderr
            await client.expect_closed(scaled(3))
            new = json.loads(rotated.stdout)["password"]
            for password, expected in ((old, 4), (new, 0)):
                again = await RawClient.tcp(hub.host, hub.mqtt_port)
                _, code = await again.connect("rot-1", username="rot-1", password=password)
                assert code == expected
                await again.close()

        asyncio.run(scenario())
    finally:
        hub.stop()
