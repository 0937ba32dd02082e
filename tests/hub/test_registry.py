"""The device registry in SQLite, without the hub running."""

import sqlite3
from pathlib import Path

import pytest

from hub.device_secrets import scrypt_hash
from hub.registry import ALLOW_INSECURE, TLS_REQUIRED, Registry, RegistryError


@pytest.fixture
def registry(tmp_path: Path) -> Registry:
    return Registry(tmp_path / "data")


def test_add_returns_a_secret_that_verifies_and_is_stored_hashed(registry: Registry) -> None:
    """The secret is shown once, verifies, and never appears in the registry file."""
    secret = registry.add("dev-1")
    device = registry.verify("dev-1", secret)
    assert device is not None and device.enabled and device.tls_policy == TLS_REQUIRED
    assert registry.verify("dev-1", secret + "x") is None
    assert registry.verify("nobody", secret) is None
    registry.close()
    assert secret.encode() not in registry.path.read_bytes()
    assert registry.path.stat().st_mode & 0o077 == 0  # owner only


def test_default_topic_rules_are_templated_per_device(registry: Registry) -> None:
    """Default filters publish under the device's own topics and subscribe to its commands."""
    registry.add("dev-2", allow_insecure=True)
    device = registry.require("dev-2")
    assert device.tls_policy == ALLOW_INSECURE
    assert device.publish_filters() == ["d/dev-2/t/+", "d/dev-2/s", "d/dev-2/m", "d/dev-2/r"]
    assert device.subscribe_filters() == ["d/dev-2/c"]


def test_rotate_invalidates_the_old_secret(registry: Registry) -> None:
    """After rotate only the new secret verifies (the verified-secret cache included)."""
    old = registry.add("dev-3")
    assert registry.verify("dev-3", old) is not None  # now cached
    new = registry.rotate("dev-3")
    assert registry.verify("dev-3", old) is None
    assert registry.verify("dev-3", new) is not None


@pytest.mark.parametrize(
    ("action", "message"),
    [
        (lambda r: r.add("dup"), "already exists"),
        (lambda r: r.add("Bad/Id"), "bad device id"),
        (lambda r: r.rotate("ghost"), "no device 'ghost'"),
        (lambda r: r.remove("ghost"), "no device 'ghost'"),
        (lambda r: r.set_enabled("ghost", False), "no device 'ghost'"),
    ],
)
def test_bad_requests_raise_clear_errors(registry: Registry, action, message: str) -> None:
    """Duplicates, bad ids and unknown devices raise RegistryError naming the problem."""
    registry.add("dup")
    with pytest.raises(RegistryError, match=message):
        action(registry)


def test_missing_data_dir_is_an_error_unless_creating(tmp_path: Path) -> None:
    """Commands other than add refuse a data dir that does not exist."""
    with pytest.raises(RegistryError, match="does not exist"):
        Registry(tmp_path / "missing", create=False)


def test_broken_registry_file_is_a_clear_error_and_is_not_overwritten(tmp_path: Path) -> None:
    """A file that is not SQLite is reported, and left as it was."""
    (tmp_path / Registry.FILE).write_bytes(b"not a database" * 100)
    with pytest.raises(RegistryError, match="cannot open the registry"):
        Registry(tmp_path)
    assert (tmp_path / Registry.FILE).read_bytes() == b"not a database" * 100


def test_data_version_moves_when_another_connection_writes(tmp_path: Path) -> None:
    """The hub notices CLI changes through data_version."""
    hub_side, cli_side = Registry(tmp_path), Registry(tmp_path)
    before = hub_side.data_version()
    cli_side.add("dev-4")
    assert hub_side.data_version() != before
    assert set(hub_side.fingerprints()) == {"dev-4"}


def test_a_registry_from_before_client_certificates_is_upgraded_in_place(tmp_path: Path) -> None:
    """A registry made before the cert_fingerprint column gains it on open; its devices and
    their secrets are kept."""
    old = sqlite3.connect(tmp_path / Registry.FILE)
    old.executescript(
        "CREATE TABLE devices (id TEXT PRIMARY KEY, secret_hash TEXT NOT NULL, enabled INTEGER "
        "NOT NULL DEFAULT 1, tls_policy TEXT NOT NULL, publish TEXT NOT NULL, subscribe TEXT "
        "NOT NULL, created_at REAL NOT NULL, last_seen_at REAL);"
    )
    old.execute(
        "INSERT INTO devices VALUES ('old-1', ?, 1, 'tls-required', '[]', '[]', 1.0, NULL)",
        (scrypt_hash("s3cret"),),
    )
    old.commit()
    old.close()
    registry = Registry(tmp_path)
    try:
        device = registry.verify("old-1", "s3cret")
        assert device is not None and device.cert_fingerprint is None
        assert registry.set_cert("old-1", "ab" * 32).cert_fingerprint == "ab" * 32
        assert registry.fingerprints()["old-1"].cert_fingerprint == "ab" * 32
    finally:
        registry.close()
