"""Accounts, sessions and the login throttle as plain logic, without sockets."""

from __future__ import annotations

import contextlib
import sqlite3
import stat
from pathlib import Path

import pytest

from hub.accounts import AccountError, Accounts, Throttle
from hub.web.auth import role_claims
from hub.web.session import MAX_PER_ACCOUNT, Sessions

PASSWORD = "a long enough password"


@pytest.fixture
def accounts(tmp_path: Path) -> Accounts:
    store = Accounts(tmp_path / "data")
    yield store
    store.close()


def test_add_verify_and_stored_hash(accounts: Accounts) -> None:
    """A password checks out only for its account; the store holds an argon2id hash, and the
    file is its owner's only."""
    generated = accounts.add("ada", "admin")
    assert len(generated) >= 16
    accounts.add("bob", "viewer", PASSWORD)
    assert accounts.verify("ada", generated) is not None
    assert accounts.verify("bob", PASSWORD).role == "viewer"  # type: ignore[union-attr]
    assert accounts.verify("bob", generated) is None
    assert accounts.verify("nobody", PASSWORD) is None
    assert accounts.verify("", PASSWORD) is None
    with contextlib.closing(sqlite3.connect(accounts.path)) as db:
        hashes = [r[0] for r in db.execute("SELECT password_hash FROM accounts")]
    assert all(h.startswith("$argon2id$") for h in hashes) and len(hashes) == 2
    on_disk = b"".join(p.read_bytes() for p in accounts.path.parent.glob("accounts.*"))
    assert PASSWORD.encode() not in on_disk and generated.encode() not in on_disk
    assert stat.S_IMODE(accounts.path.stat().st_mode) & 0o077 == 0


def test_disabled_and_removed_accounts_cannot_log_in(accounts: Accounts) -> None:
    """A disabled account fails verification until enabled; a removed one is gone."""
    accounts.add("carl", "operator", PASSWORD)
    accounts.set_enabled("carl", False)
    assert accounts.verify("carl", PASSWORD) is None
    accounts.set_enabled("carl", True)
    assert accounts.verify("carl", PASSWORD) is not None
    new = accounts.set_password("carl")
    assert accounts.verify("carl", PASSWORD) is None and accounts.verify("carl", new)
    accounts.remove("carl")
    assert accounts.get("carl") is None
    with pytest.raises(AccountError, match="no account"):
        accounts.remove("carl")


@pytest.mark.parametrize(
    ("name", "role", "password", "message"),
    [
        ("Ada", "admin", None, "bad account name"),
        ("a/b", "admin", None, "bad account name"),
        ("x" * 33, "admin", None, "bad account name"),
        ("ok", "root", None, "bad role"),
        ("ok", "viewer", "short", "10 to 1024"),
        ("ok", "viewer", "x" * 1025, "10 to 1024"),
    ],
)
def test_bad_accounts_are_refused(
    accounts: Accounts, name: str, role: str, password: str | None, message: str
) -> None:
    """Bad names, roles and passwords are refused with a message saying why."""
    with pytest.raises(AccountError, match=message):
        accounts.add(name, role, password)
    assert accounts.count() == 0


def test_duplicate_account_is_refused(accounts: Accounts) -> None:
    """Adding an existing name fails and keeps the first account's password."""
    accounts.add("dup", "viewer", PASSWORD)
    with pytest.raises(AccountError, match="already exists"):
        accounts.add("dup", "admin")
    assert accounts.verify("dup", PASSWORD).role == "viewer"  # type: ignore[union-attr]


def test_role_scopes() -> None:
    """A viewer reads the fleet, an operator also publishes commands, an admin token is an
    admin token."""
    viewer, operator, admin = (role_claims(r, 0) for r in ("viewer", "operator", "admin"))
    assert set(viewer.subscribe) == {"d/+/t/+", "d/+/s", "d/+/m", "d/+/r"}
    assert viewer.publish == () and not viewer.admin
    assert operator.publish == ("d/+/c",) and operator.subscribe == viewer.subscribe
    assert admin.admin


def test_throttle_grows_the_delay_and_forgets() -> None:
    """Five failures are free; then each one doubles the wait, up to the cap; a success or a
    quiet window resets the key; the table is bounded."""
    throttle = Throttle(free=5, window=100, base=1, cap=8, max_keys=3)
    for i in range(5):
        assert throttle.retry_after("k", now=i) == 0
        throttle.failed("k", now=i)
    assert throttle.retry_after("k", now=4) == 1
    assert throttle.retry_after("k", now=5) == 0
    throttle.failed("k", now=5)
    assert throttle.retry_after("k", now=5) == 2
    for _ in range(10):
        throttle.failed("k", now=5)
    assert throttle.retry_after("k", now=5) == 8  # capped
    assert throttle.retry_after("k", now=200) == 0  # the window passed
    throttle.failed("k", now=200)
    throttle.succeeded("k")
    assert throttle.retry_after("k", now=200) == 0
    for key in ("a", "b", "c", "d"):
        for _ in range(6):
            throttle.failed(key, now=300)
    assert throttle.retry_after("a", now=300) == 0  # the oldest key was forgotten
    assert throttle.retry_after("d", now=300) > 0


def test_sessions_expire_idle_and_absolute() -> None:
    """A session lives while used within the idle limit, never past its maximum."""
    sessions = Sessions(idle_s=10, max_s=25)
    cookie, session = sessions.create("ada", "admin", now=0)
    assert sessions.get(cookie, now=9) is session
    assert sessions.get(cookie, now=18) is session  # used at 9: idle until 19
    assert session.idle_expires(10, 25) == 25 and session.expires(25) == 25
    assert sessions.get(cookie, now=24) is session
    assert sessions.get(cookie, now=25) is None  # the maximum, though used a second ago
    idle, _ = sessions.create("ada", "admin", now=100)
    assert sessions.get(idle, now=110) is None
    assert len(sessions) == 0


def test_sessions_keep_only_hashes_and_check_csrf() -> None:
    """The table never holds a cookie value; logout and account removal end sessions; the
    CSRF token must match exactly."""
    sessions = Sessions()
    cookie, session = sessions.create("ada", "admin")
    other, _ = sessions.create("ada", "admin")
    assert cookie not in repr(sessions.__dict__)
    assert session.csrf_matches(session.csrf)
    assert not session.csrf_matches(None) and not session.csrf_matches(session.csrf[:-1])
    assert sessions.get("forged") is None and sessions.get("x" * 1000) is None
    assert sessions.end(cookie) and sessions.get(cookie) is None
    assert sessions.end_account("ada") == 1 and sessions.get(other) is None


def test_sessions_per_account_are_bounded() -> None:
    """An account holds at most MAX_PER_ACCOUNT sessions; the oldest go first."""
    sessions = Sessions()
    cookies = [sessions.create("ada", "admin")[0] for _ in range(MAX_PER_ACCOUNT + 3)]
    assert len(sessions) == MAX_PER_ACCOUNT
    assert sessions.get(cookies[0]) is None and sessions.get(cookies[-1]) is not None
