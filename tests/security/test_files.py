"""Secrets on disk: the data dir and everything secret in it are their owner's only from the
first write, and `hub token create` never mints a key of its own."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.console import PASSWORD
from tests.support.hubproc import add_account, hub_cli, provision, start_hub


@pytest.fixture
def loose_umask() -> Iterator[None]:
    """The commands run under the common 022 umask, as a user's shell would."""
    old = os.umask(0o022)
    yield
    os.umask(old)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_secret_files_are_owner_only_after_a_first_run(tmp_path: Path, loose_umask: None) -> None:
    """After certs init, an account, a device with a client certificate and a run of the hub,
    the data dir is 0700 and the registry, accounts (with -wal and -shm), hub.key and every
    private key are 0600 or stricter; no file there is readable by others."""
    data = tmp_path / "data"
    assert hub_cli(data, "certs", "init").returncode == 0
    add_account(data, "ada", "admin", PASSWORD)
    hub = start_hub(data, secure=True)
    try:
        provision(hub, "f-1")
        assert hub_cli(data, "device", "cert", "f-1").returncode == 0
        secrets = [
            data / "hub.key",
            data / "registry.sqlite3",
            data / "registry.sqlite3-wal",
            data / "registry.sqlite3-shm",
            data / "accounts.sqlite3",
            data / "accounts.sqlite3-wal",
            data / "accounts.sqlite3-shm",
            data / "certs" / "ca.key",
            data / "certs" / "server.key",
            data / "certs" / "devices" / "f-1.key.der",
        ]
        for path in secrets:  # the hub holds the databases open: -wal and -shm exist
            assert path.exists() and _mode(path) & 0o077 == 0, (path, oct(_mode(path)))
    finally:
        hub.stop()
    assert _mode(data) == 0o700
    for path in data.rglob("*"):
        assert _mode(path) & 0o007 == 0, (path, oct(_mode(path)))


def test_an_open_data_dir_and_old_files_are_tightened(tmp_path: Path, loose_umask: None) -> None:
    """A data dir others may read, with a registry left 0644 by an older hub, is tightened
    to 0700 and 0600 (with a warning) before the registry is opened."""
    data = tmp_path / "data"
    assert hub_cli(data, "device", "add", "old-1").returncode == 0
    os.chmod(data, 0o755)
    os.chmod(data / "registry.sqlite3", 0o644)
    result = hub_cli(data, "device", "list")
    assert result.returncode == 0 and "old-1" in result.stdout
    assert "was open to others (755): tightened to 700" in result.stderr
    assert _mode(data) == 0o700 and _mode(data / "registry.sqlite3") == 0o600


def test_token_create_refuses_a_data_dir_without_a_key(tmp_path: Path) -> None:
    """`hub token create --data-dir <typo>` fails with exit 2 and creates nothing."""
    typo = tmp_path / "dta"
    result = hub_cli(typo, "token", "create", "--admin")
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.startswith("hub: error: ") and "no hub key" in result.stderr
    assert "hub serve" in result.stderr and "hub certs init" in result.stderr
    assert not typo.exists()
    data = tmp_path / "data"
    assert hub_cli(data, "certs", "init").returncode == 0
    assert hub_cli(data, "token", "create", "--admin").returncode == 0
