"""The registry's credentials in memory (hub/registry.py) and the logins that use them
(hub/broker/login.py): every change to a device's access, made by any connection, is seen
from the next pass of the event loop on, without a registry read per CONNECT."""

import asyncio
import sqlite3
from pathlib import Path

import pytest

from hub.broker.login import Login
from hub.registry import Registry
from hub.security import Gatekeeper, load_key


@pytest.fixture
def two(tmp_path: Path) -> tuple[Registry, Registry]:
    """The hub's login registry and another connection (the CLI, the console's API)."""
    data = tmp_path / "data"
    hub, other = Registry(data), Registry(data)
    yield hub, other
    hub.close()
    other.close()


def _reads(registry: Registry) -> list[str]:
    """Records each statement the registry's own connection runs from now on."""
    seen: list[str] = []
    registry._db.conn.set_trace_callback(seen.append)
    return seen


def test_checks_use_memory_until_another_connection_changes_access(
    two: tuple[Registry, Registry],
) -> None:
    """Once loaded and current, a check reads nothing; last-seen writes keep it current; an
    access change elsewhere makes checks read the registry until the copy is loaded again."""
    hub, other = two
    secret = other.add("dev-1")
    assert hub.access_changed()  # nothing loaded yet
    assert hub.load_credentials() == 1
    assert not hub.access_changed()
    statements = _reads(hub)
    assert hub.verify_fast("dev-1", secret) is not None
    assert hub.verify_fast("dev-1", secret + "x") is None
    assert hub.verify_fast("nobody", secret) is None
    assert statements == []  # answered from memory
    other.touch({"dev-1": 1.0})  # last seen: not an access change
    assert not hub.access_changed()
    other.set_enabled("dev-1", False)
    assert hub.access_changed()
    device = hub.verify_fast("dev-1", secret)
    assert device is not None and not device.enabled  # read from the registry: disabled
    assert any("FROM devices" in s for s in statements)
    hub.load_credentials()
    assert not hub.access_changed()
    device = hub.verify_fast("dev-1", secret)
    assert device is not None and not device.enabled


@pytest.mark.parametrize("change", ["disable", "rotate", "remove", "tls"])
def test_a_changed_device_is_refused_from_the_next_pass(
    two: tuple[Registry, Registry], tmp_path: Path, change: str
) -> None:
    """A device disabled, rotated, removed or made TLS-only by another connection after its
    credentials were cached is refused on its next CONNECT (the next pass of the loop)."""
    hub, other = two
    secret = other.add("dev-2", allow_insecure=True)
    login = Login(Gatekeeper(hub, load_key(tmp_path / "data"), allow_anonymous=False), 0)

    async def check() -> bool:
        verdict = await login.check("dev-2", secret.encode(), "dev-2", False, None)
        return verdict.identity is not None

    async def scenario() -> None:
        assert await check()  # the first check starts the load
        for _ in range(100):  # the copy loads in the login's thread
            if not hub.access_changed() and hub._creds is not None:
                break
            await asyncio.sleep(0.01)
        assert await check()
        assert hub._creds is not None and "dev-2" in hub._creds.records  # admitted from memory
        if change == "disable":
            other.set_enabled("dev-2", False)
        elif change == "rotate":
            other.rotate("dev-2")
        elif change == "remove":
            other.remove("dev-2")
        else:
            other.set_tls_policy("dev-2", allow_insecure=False)
        await asyncio.sleep(0)  # the next pass of the loop
        assert not await check()

    try:
        asyncio.run(scenario())
    finally:
        login.close()


def test_a_rotated_secret_logs_in_at_once(two: tuple[Registry, Registry], tmp_path: Path) -> None:
    """The new secret of a device rotated elsewhere works on the next pass, before the copy
    in memory is loaded again."""
    hub, other = two
    other.add("dev-3", allow_insecure=True)
    hub.access_changed()
    hub.load_credentials()
    new = other.rotate("dev-3")
    assert hub.access_changed()
    assert hub.verify_fast("dev-3", new) is not None


def test_each_device_from_memory_is_the_registrys_and_odd_hashes_stay_odd(
    two: tuple[Registry, Registry], tmp_path: Path
) -> None:
    """The compact copy in memory gives back each device as the registry has it (access,
    times, certificate; devices of one kind share it), a device whose secret was dropped is
    refused, one with a legacy scrypt hash still goes to scrypt, and a wrong secret fails."""
    from hub.device_secrets import scrypt_hash
    from hub.registry import SLOW

    hub, other = two
    secrets = {name: other.add(name) for name in ("dev-1", "dev-2", "dev-3", "dev-4")}
    other.set_tls_policy("dev-2", True)
    other.set_cert("dev-2", "ab" * 32)
    other.set_enabled("dev-3", False)
    other.touch({"dev-1": 12345.5})
    other.drop_secret("dev-4")
    with sqlite3.connect(tmp_path / "data" / Registry.FILE) as db:  # from before keyed hashes
        db.execute("UPDATE devices SET secret_hash = ? WHERE id = 'dev-3'", (scrypt_hash("old"),))
    assert hub.access_changed()
    assert hub.load_credentials() == 4
    assert not hub.access_changed()
    statements = _reads(hub)
    for name in ("dev-1", "dev-2"):
        assert hub.verify_fast(name, secrets[name]) == other.get(name)
        assert hub.verify_fast(name, secrets[name][:-1] + "x") is None
    assert hub.verify_fast("dev-1", secrets["dev-1"]).last_seen_at == 12345.5
    assert hub.verify_fast("dev-3", "old") is SLOW  # scrypt decides, off the loop
    assert hub.verify_fast("dev-4", secrets["dev-4"]) is None  # no secret any more
    assert hub.verify_fast("dev-4", "") is None
    assert statements == []  # every answer from memory
