"""Accounts for people: names, roles and argon2id password hashes, in SQLite. No sockets here.

The store is ``<data dir>/accounts.sqlite3``, created readable by its owner only (with its
-wal and -shm files). Roles: ``viewer`` (the fleet, telemetry, health and replies),
``operator`` (a viewer who may also command devices) and ``admin`` (an operator who may also
manage devices and accounts and read hub events). The running hub and the ``hub user``
commands share the file.

Passwords are hashed with argon2id (argon2-cffi's defaults: RFC 9106's second recommended
profile, 64 MiB and 3 passes): people choose guessable passwords, so each check is slow on
purpose. Checks run in the caller's thread; the web side runs them in a small executor of its
own. ``Throttle`` refuses logins for a growing delay after repeated failures.
"""

from __future__ import annotations

import functools
import re
import secrets
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from hub.config import prepare_data_dir
from hub.sqlitefile import SqliteFile

ROLES = ("viewer", "operator", "admin")
NAME_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,31}$")
MIN_PASSWORD = 10
MAX_PASSWORD = 1024
FILE = "accounts.sqlite3"

SCHEMA = """
CREATE TABLE IF NOT EXISTS accounts (
    name TEXT PRIMARY KEY,
    password_hash TEXT NOT NULL,
    role TEXT NOT NULL,
    enabled INTEGER NOT NULL DEFAULT 1,
    created_at REAL NOT NULL,
    password_changed_at REAL NOT NULL DEFAULT 0
);
"""

_HASHER = PasswordHasher()


@functools.cache
def _dummy_hash() -> str:
    """Verified for unknown names, so a wrong name costs as long as a wrong password."""
    return _HASHER.hash(secrets.token_urlsafe(16))


class AccountError(Exception):
    """An account operation a user asked for cannot be done (the message says why)."""


@dataclass(frozen=True)
class Account:
    name: str
    role: str
    enabled: bool
    created_at: float
    password_changed_at: float = 0.0  # sessions from before it end

    def public(self) -> dict[str, object]:
        """Everything about the account except its password hash."""
        return {
            "name": self.name,
            "role": self.role,
            "enabled": self.enabled,
            "created_at": self.created_at,
        }


def check_name(name: str) -> str:
    if not NAME_RE.match(name):
        raise AccountError(
            f"bad account name {name[:40]!r}: use 1 to 32 of a-z, 0-9, '.', '-' and '_', "
            "starting with a letter or digit"
        )
    return name


def check_role(role: str) -> str:
    if role not in ROLES:
        raise AccountError(f"bad role {role[:40]!r}: use one of {', '.join(ROLES)}")
    return role


def check_password(password: str) -> str:
    if not MIN_PASSWORD <= len(password) <= MAX_PASSWORD:
        raise AccountError(f"a password must have {MIN_PASSWORD} to {MAX_PASSWORD} characters")
    return password


def new_password() -> str:
    """A generated one-time password (128 bits)."""
    return secrets.token_urlsafe(16)


def _row_to_account(row: sqlite3.Row) -> Account:
    return Account(
        row["name"],
        row["role"],
        bool(row["enabled"]),
        row["created_at"],
        row["password_changed_at"],
    )


class Accounts:
    """The account store. Thread-safe: one connection, serialised by a lock that is never
    held while argon2 runs."""

    def __init__(self, data_dir: Path, *, create: bool = True) -> None:
        prepare_data_dir(data_dir, create=create)
        self.path = data_dir / FILE
        try:
            self._db = SqliteFile(self.path, SCHEMA)
        except (sqlite3.DatabaseError, OSError) as exc:
            raise AccountError(f"cannot open the account store {self.path}: {exc}") from exc

    def close(self) -> None:
        self._db.close()

    # --- reading ---------------------------------------------------------------------------
    def get(self, name: str) -> Account | None:
        rows = self._db.rows("SELECT * FROM accounts WHERE name = ?", (name,))
        return _row_to_account(rows[0]) if rows else None

    def require(self, name: str) -> Account:
        account = self.get(name)
        if account is None:
            raise AccountError(f"no account {name[:40]!r}")
        return account

    def list(self) -> list[Account]:
        return [_row_to_account(r) for r in self._db.rows("SELECT * FROM accounts ORDER BY name")]

    def count(self) -> int:
        return int(self._db.rows("SELECT COUNT(*) FROM accounts")[0][0])

    def verify(self, name: str, password: str) -> Account | None:
        """The account if it exists, is enabled and the password is right; None otherwise.
        Slow on purpose (argon2id), and as slow for an unknown name."""
        rows = self._db.rows("SELECT * FROM accounts WHERE name = ?", (name,)) if name else []
        stored = rows[0]["password_hash"] if rows else _dummy_hash()
        try:
            _HASHER.verify(stored, password)
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return None
        if not rows:
            return None
        account = _row_to_account(rows[0])
        return account if account.enabled else None

    # --- writing ---------------------------------------------------------------------------
    def add(self, name: str, role: str, password: str | None = None) -> str:
        """Creates an account; returns its password (generated unless given)."""
        check_name(name)
        check_role(role)
        password = check_password(password) if password is not None else new_password()
        hashed = _HASHER.hash(password)
        now = time.time()
        try:
            self._db.write(
                "INSERT INTO accounts (name, password_hash, role, enabled, created_at,"
                " password_changed_at) VALUES (?, ?, ?, 1, ?, ?)",
                (name, hashed, role, now, now),
            )
        except sqlite3.IntegrityError:
            raise AccountError(f"account {name!r} already exists") from None
        return password

    def set_password(self, name: str, password: str | None = None) -> str:
        """A new password (generated unless given); the account's older sessions end."""
        password = check_password(password) if password is not None else new_password()
        hashed = _HASHER.hash(password)
        changed = self._db.write(
            "UPDATE accounts SET password_hash = ?, password_changed_at = ? WHERE name = ?",
            (hashed, time.time(), name),
        )
        if changed == 0:
            raise AccountError(f"no account {name[:40]!r}")
        return password

    def set_enabled(self, name: str, enabled: bool) -> Account:
        self._update(name, "enabled = ?", int(enabled))
        return self.require(name)

    def set_role(self, name: str, role: str) -> Account:
        self._update(name, "role = ?", check_role(role))
        return self.require(name)

    def remove(self, name: str) -> None:
        if self._db.write("DELETE FROM accounts WHERE name = ?", (name,)) == 0:
            raise AccountError(f"no account {name[:40]!r}")

    def _update(self, name: str, assignment: str, value: object) -> None:
        if self._db.write(f"UPDATE accounts SET {assignment} WHERE name = ?", (value, name)) == 0:
            raise AccountError(f"no account {name[:40]!r}")


@dataclass
class _Failures:
    count: int
    first: float
    last: float


class Throttle:
    """Refuses logins for a growing delay after repeated failures, per key (an account name
    or a peer address): after ``free`` failures within ``window`` seconds, each further
    failure doubles the wait (``base`` seconds first, at most ``cap``). Holds at most
    ``max_keys`` keys, forgetting the oldest first."""

    def __init__(
        self,
        free: int = 5,
        window: float = 900.0,
        base: float = 1.0,
        cap: float = 900.0,
        max_keys: int = 10_000,
    ) -> None:
        self.free = free
        self.window = window
        self.base = base
        self.cap = cap
        self.max_keys = max_keys
        self._keys: dict[str, _Failures] = {}

    def retry_after(self, key: str, now: float | None = None) -> float:
        """Seconds until this key may try again (0: now)."""
        now = time.time() if now is None else now
        entry = self._keys.get(key)
        if entry is None:
            return 0.0
        if now - entry.last > self.window:
            del self._keys[key]
            return 0.0
        if entry.count < self.free:
            return 0.0
        delay = min(self.cap, self.base * 2 ** (entry.count - self.free))
        return max(0.0, entry.last + delay - now)

    def failed(self, key: str, now: float | None = None) -> None:
        now = time.time() if now is None else now
        entry = self._keys.pop(key, None)  # re-inserted last: dict order is age order
        if entry is None or now - entry.last > self.window:
            entry = _Failures(0, now, now)
        entry.count += 1
        entry.last = now
        self._keys[key] = entry
        while len(self._keys) > self.max_keys:
            del self._keys[next(iter(self._keys))]

    def succeeded(self, key: str) -> None:
        self._keys.pop(key, None)
