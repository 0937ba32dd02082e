"""The device registry: identities, hashed secrets, TLS policy and topic rules, in SQLite.

No sockets here. The file lives in the hub's data dir and is shared by the running hub and the
``hub device`` commands; the hub notices changes through SQLite's data_version.

Secrets are 128-bit random tokens made by the hub, shown once, and stored only as a keyed hash:
HMAC-SHA-256 under the registry key (``registry.key`` beside the registry, owner-only) of the
device id and the secret. A hash of a 128-bit random secret cannot be brute-forced however
cheap the hash, so a check costs microseconds and needs no worker thread (passwords chosen by
people, the console's accounts, keep argon2id). Registries written before keep their salted
scrypt hashes: such a hash is checked once (about 8 ms) and replaced by the keyed form on the
device's next successful login. Losing ``registry.key`` invalidates every device secret.

The running hub checks secrets against a copy of the registry's credentials in memory (no
SQLite read per CONNECT): triggers count every change to a device's access (added, removed,
secret, enabled, TLS policy, topics, certificate; not ``last_seen_at``) in ``access_version``;
the broker's logins read that one row once per pass of the event loop (``access_changed``) and,
when it moved, check against the registry itself until a fresh copy is loaded in a thread
(``load_credentials``). So a device disabled, rotated or removed by any process is refused
from the next pass on, as it was when every check read the registry.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import logging
import math
import secrets
import sqlite3
import struct
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

from hub.config import DataDirError, prepare_data_dir
from hub.device_secrets import (
    KEYED_PREFIX,
    SCRYPT_PREFIX,
    KeyFileError,
    check_keyed,
    check_scrypt,
    keyed_digest,
    keyed_hash,
    load_registry_key,
)
from hub.sqlitefile import SqliteFile
from hub.topics import (
    DEVICE_ID_RE,
    DEVICE_PUBLISH_TEMPLATES,
    DEVICE_SUBSCRIBE_TEMPLATES,
    fill_template,
)

TLS_REQUIRED = "tls-required"
ALLOW_INSECURE = "allow-insecure"
DEFAULT_PUBLISH = DEVICE_PUBLISH_TEMPLATES  # the topic grammar lives in hub/topics.py
DEFAULT_SUBSCRIBE = DEVICE_SUBSCRIBE_TEMPLATES
NO_SECRET = "none"  # a secret hash no secret matches (neither scheme reads it)

log = logging.getLogger(__name__)


class Slow(Enum):
    """``Registry.verify_fast``'s answer when only the slow path (a scrypt hash, in a worker
    thread) can decide."""

    SLOW = "slow"


SLOW = Slow.SLOW

SCHEMA = """
CREATE TABLE IF NOT EXISTS devices (
    id TEXT PRIMARY KEY,
    secret_hash TEXT NOT NULL,
    enabled INTEGER NOT NULL DEFAULT 1,
    tls_policy TEXT NOT NULL,
    publish TEXT NOT NULL,
    subscribe TEXT NOT NULL,
    created_at REAL NOT NULL,
    last_seen_at REAL,
    cert_fingerprint TEXT,
    secret_serial INTEGER NOT NULL DEFAULT 0
);
"""
# Counts changes to what decides a login (applied after MIGRATIONS: it names their columns).
ACCESS_SCHEMA = """
CREATE TABLE IF NOT EXISTS access_version (n INTEGER NOT NULL);
INSERT INTO access_version SELECT 0 WHERE NOT EXISTS (SELECT 1 FROM access_version);
CREATE TRIGGER IF NOT EXISTS access_added AFTER INSERT ON devices
    BEGIN UPDATE access_version SET n = n + 1; END;
CREATE TRIGGER IF NOT EXISTS access_removed AFTER DELETE ON devices
    BEGIN UPDATE access_version SET n = n + 1; END;
CREATE TRIGGER IF NOT EXISTS access_changed AFTER UPDATE OF
    id, secret_hash, enabled, tls_policy, publish, subscribe, cert_fingerprint, secret_serial
    ON devices BEGIN UPDATE access_version SET n = n + 1; END;
"""
# Columns added after the first release, for registries made before them.
MIGRATIONS = {
    "cert_fingerprint": "ALTER TABLE devices ADD COLUMN cert_fingerprint TEXT",
    # Counts secret changes (rotate, drop): the hub kicks a device when it moves, and not when
    # a login merely upgrades the form of its hash.
    "secret_serial": "ALTER TABLE devices ADD COLUMN secret_serial INTEGER NOT NULL DEFAULT 0",
}


class RegistryError(Exception):
    """A registry operation a user asked for cannot be done (the message says why)."""


@dataclass(frozen=True)
class Fingerprint:
    """What the running hub watches to disconnect a device the moment its access changes."""

    enabled: bool
    secret_hash: str  # names the current secret: changes on rotate or drop, not on an upgrade
    tls_policy: str
    cert_fingerprint: str | None = None


@dataclass(frozen=True, slots=True)  # slots: the hub keeps one per device in memory
class Device:
    id: str
    enabled: bool
    tls_policy: str
    publish: tuple[str, ...]
    subscribe: tuple[str, ...]
    created_at: float
    last_seen_at: float | None
    cert_fingerprint: str | None = None  # SHA-256 of its client certificate, if it has one

    def publish_filters(self) -> list[str]:
        return [fill_template(f, self.id) for f in self.publish]

    def subscribe_filters(self) -> list[str]:
        return [fill_template(f, self.id) for f in self.subscribe]

    def public(self) -> dict[str, object]:
        """Everything about the device except its secret hash."""
        return {
            "id": self.id,
            "enabled": self.enabled,
            "tls_policy": self.tls_policy,
            "publish": list(self.publish),
            "subscribe": list(self.subscribe),
            "created_at": self.created_at,
            "last_seen_at": self.last_seen_at,
            "cert_fingerprint": self.cert_fingerprint,
        }


def _policy(allow_insecure: bool) -> str:
    return ALLOW_INSECURE if allow_insecure else TLS_REQUIRED


# keyed digest, created_at, last_seen_at (NaN: none), access index: 52 bytes, an 88-byte object
_RECORD = struct.Struct("<32sddI")
_NO_DIGEST = bytes(32)


class _Credentials:
    """Every device's credentials as the logins need them, in about 190 bytes a device (a
    dict of tuples and Device objects took about 450; the hub holds one for every device
    registered, connected or not): per device one bytes record, its keyed digest, times and
    the index of its access (enabled, TLS policy, topic rules, certificate), which devices
    share; the rare hash not in the keyed form (scrypt, none) is kept as text beside."""

    __slots__ = ("_access", "_index", "other", "records", "version")

    def __init__(self, version: int) -> None:
        self.version = version
        self.records: dict[str, bytes] = {}
        self.other: dict[str, str] = {}  # device id -> a hash not in the keyed form
        self._access: list[tuple[bool, str, tuple[str, ...], tuple[str, ...], str | None]] = []
        self._index: dict[tuple[object, ...], int] = {}

    def add(self, row: sqlite3.Row) -> None:
        key = (
            bool(row["enabled"]),
            row["tls_policy"],
            row["publish"],
            row["subscribe"],
            row["cert_fingerprint"],
        )
        index = self._index.get(key)
        if index is None:
            index = self._index[key] = len(self._access)
            enabled, policy, publish, subscribe, cert = key
            self._access.append(
                (
                    bool(enabled),
                    str(policy),
                    tuple(json.loads(str(publish))),
                    tuple(json.loads(str(subscribe))),
                    None if cert is None else str(cert),
                )
            )
        stored: str = row["secret_hash"]
        digest = _keyed_digest_of(stored)
        if digest is None:
            self.other[row["id"]] = stored
            digest = _NO_DIGEST
        seen = row["last_seen_at"]
        self.records[row["id"]] = _RECORD.pack(
            digest, row["created_at"], math.nan if seen is None else seen, index
        )

    def get(self, device_id: str) -> tuple[str | bytes, Device | None]:
        record = self.records.get(device_id)
        if record is None:
            return NO_SECRET, None
        digest, created, seen, index = _RECORD.unpack(record)
        enabled, policy, publish, subscribe, cert = self._access[index]
        device = Device(
            device_id,
            enabled,
            policy,
            publish,
            subscribe,
            created,
            None if math.isnan(seen) else seen,
            cert,
        )
        return self.other.get(device_id, digest), device


def _keyed_digest_of(stored: str) -> bytes | None:
    """The digest of a hash in the keyed form; None for any other value."""
    if not stored.startswith(KEYED_PREFIX):
        return None
    try:
        digest = base64.b64decode(stored[len(KEYED_PREFIX) :], validate=True)
    except (binascii.Error, ValueError):
        return None
    return digest if len(digest) == len(_NO_DIGEST) else None


def _row_to_device(row: sqlite3.Row) -> Device:
    return Device(
        id=row["id"],
        enabled=bool(row["enabled"]),
        tls_policy=row["tls_policy"],
        publish=tuple(json.loads(row["publish"])),
        subscribe=tuple(json.loads(row["subscribe"])),
        created_at=row["created_at"],
        last_seen_at=row["last_seen_at"],
        cert_fingerprint=row["cert_fingerprint"],
    )


class Registry:
    FILE = "registry.sqlite3"

    def __init__(self, data_dir: Path, *, create: bool = True) -> None:
        try:
            prepare_data_dir(data_dir, create=create)
        except DataDirError as exc:
            raise RegistryError(str(exc)) from None
        self.path = data_dir / self.FILE
        try:
            # Secret checks run on the event loop (verify_fast) and in executor threads
            # (verify): one connection whose lock is held only for a statement, never while
            # scrypt runs or while a write waits for SQLite's lock (hub/sqlitefile.py).
            self._db = SqliteFile(self.path, SCHEMA)
            columns = {r["name"] for r in self._db.rows("PRAGMA table_info(devices)")}
            for column, statement in MIGRATIONS.items():
                if column not in columns:
                    self._db.write(statement)
            if not self._db.rows("SELECT name FROM sqlite_master WHERE name = 'access_changed'"):
                with self._db.lock:
                    self._db.conn.executescript(f"BEGIN IMMEDIATE;{ACCESS_SCHEMA}COMMIT;")
            self._key = load_registry_key(data_dir, self._db.conn)
            # Devices whose hash is still scrypt: only their first check needs a thread.
            legacy = self._db.rows(
                "SELECT id FROM devices WHERE secret_hash LIKE ?", (SCRYPT_PREFIX + "%",)
            )
            self._legacy = {r["id"] for r in legacy}
        except KeyFileError as exc:
            self._db.close()
            raise RegistryError(str(exc)) from None
        except (sqlite3.DatabaseError, OSError) as exc:
            raise RegistryError(f"cannot open the registry {self.path}: {exc}") from exc
        # Legacy devices whose checked scrypt hash could not be upgraded (say, a locked
        # database): device id -> keyed digest of the secret and its hash, so scrypt runs once.
        self._verified: dict[str, bytes] = {}
        # Upgrades of scrypt hashes write through a connection of their own, so a write
        # waiting for SQLite's lock never holds up the reads of verify_fast.
        self._upgrader: sqlite3.Connection | None = None
        self._upgrade_lock = threading.Lock()
        # The credentials in memory (``_Credentials``), used while their access_version is
        # still what ``access_changed`` last read.
        self._creds: _Credentials | None = None
        self._access_seen: int | None = None

    def close(self) -> None:
        with self._upgrade_lock:
            if self._upgrader is not None:
                self._upgrader.close()
                self._upgrader = None
        self._db.close()

    def data_version(self) -> int:
        """Changes whenever another connection (the CLI) commits to the registry."""
        return int(self._db.rows("PRAGMA data_version")[0][0])

    # --- reading ---------------------------------------------------------------------------
    def get(self, device_id: str) -> Device | None:
        rows = self._db.rows("SELECT * FROM devices WHERE id = ?", (device_id,))
        return _row_to_device(rows[0]) if rows else None

    def require(self, device_id: str) -> Device:
        device = self.get(device_id)
        if device is None:
            raise RegistryError(f"no device {device_id!r} in the registry")
        return device

    def list(self) -> list[Device]:
        return [_row_to_device(r) for r in self._db.rows("SELECT * FROM devices ORDER BY id")]

    def access_digest(self) -> str:
        """Every device as ``id,enabled,tls_policy``, joined by ``;`` in id order, in one
        string SQLite builds: the fleet console compares it with the last one to tell a change
        of who is registered from a last-seen write, without a Python object per device."""
        rows = self._db.rows(
            "SELECT group_concat(id || ',' || enabled || ',' || tls_policy, ';') "
            "FROM (SELECT id, enabled, tls_policy FROM devices ORDER BY id)"
        )
        return str(rows[0][0] or "")

    def fingerprints(self) -> dict[str, Fingerprint]:
        rows = self._db.rows(
            "SELECT id, enabled, secret_serial, tls_policy, cert_fingerprint FROM devices"
        )
        return {
            r["id"]: Fingerprint(
                bool(r["enabled"]),
                f"secret-{r['secret_serial']}",
                r["tls_policy"],
                r["cert_fingerprint"],
            )
            for r in rows
        }

    # --- the credentials in memory ------------------------------------------------------------
    def access_changed(self) -> bool:
        """Reads ``access_version`` (one row; the broker's logins do once per pass of the event
        loop): True when the credentials in memory are not the registry's now, so checks read
        the registry until ``load_credentials`` has run."""
        seen = int(self._db.rows("SELECT n FROM access_version")[0][0])
        self._access_seen = seen
        creds = self._creds
        return creds is None or creds.version != seen

    def load_credentials(self) -> int:
        """Loads every device's credentials into memory, as one snapshot with its
        access_version, through a connection of its own (the loop's reads never wait for it).
        Blocks for a while on a large registry: call it off the event loop. Returns how many."""
        conn = sqlite3.connect(self.path, timeout=5.0, isolation_level=None)
        conn.row_factory = sqlite3.Row
        try:
            conn.execute("BEGIN")
            version = int(conn.execute("SELECT n FROM access_version").fetchone()[0])
            rows = conn.execute("SELECT * FROM devices").fetchall()
            conn.execute("COMMIT")
        finally:
            conn.close()
        creds = _Credentials(version)
        for row in rows:
            creds.add(row)
        self._creds = creds
        return len(creds.records)

    def _cached(self, device_id: str) -> tuple[str | bytes, Device | None] | None:
        """(secret hash or keyed digest, device) from memory while it is current (an unknown
        device: no secret, no device); None when only the registry can tell."""
        creds = self._creds
        if creds is None or creds.version != self._access_seen:
            return None
        return creds.get(device_id)

    # --- checking secrets --------------------------------------------------------------------
    def is_cheap(self, device_id: str) -> bool:
        """True when checking this device's secret costs microseconds (a keyed hash, or an
        unknown device); False while its hash is still scrypt (its next good login upgrades
        it). Answered from memory, without the database."""
        return device_id not in self._legacy

    def verify_fast(self, device_id: str, secret: str) -> Device | Slow | None:
        """The device if the secret is right (enabled or not), None if not, or ``SLOW`` when
        only ``verify`` (scrypt, in a worker thread) can tell. Never hashes with scrypt: one
        primary-key read of the registry (WAL: writers never block it) and one HMAC. A wrong
        secret for an unknown device costs the same as for a known one. With the credentials
        in memory current (see ``access_changed``), no read at all."""
        cached = self._cached(device_id)
        if cached is not None:
            stored, device = cached
        else:
            rows = self._db.rows("SELECT * FROM devices WHERE id = ?", (device_id,))
            stored = rows[0]["secret_hash"] if rows else NO_SECRET
            device = _row_to_device(rows[0]) if rows else None
        if isinstance(stored, bytes):  # a keyed digest from memory
            ok = hmac.compare_digest(keyed_digest(self._key, device_id, secret), stored)
        elif stored.startswith(SCRYPT_PREFIX):
            self._legacy.add(device_id)
            return SLOW
        else:
            ok = check_keyed(self._key, device_id, secret, stored)
        if not ok or device is None:
            return None
        return device

    def verify(self, device_id: str, secret: str) -> Device | None:
        """The device if the secret is right (enabled or not); None otherwise. May hash with
        scrypt (a registry from before the keyed hash): call it off the event loop. A good
        scrypt check replaces the hash with the keyed form."""
        answer = self.verify_fast(device_id, secret)
        if not isinstance(answer, Slow):
            return answer
        rows = self._db.rows("SELECT * FROM devices WHERE id = ?", (device_id,))
        if not rows:
            return None
        row = rows[0]
        stored = row["secret_hash"]
        if not stored.startswith(SCRYPT_PREFIX):  # upgraded or rotated meanwhile
            again = self.verify_fast(device_id, secret)
            return None if isinstance(again, Slow) else again
        memo = hmac.new(
            self._key,
            b"memo\0" + secret.encode(errors="surrogateescape") + b"\0" + stored.encode(),
            hashlib.sha256,
        ).digest()
        cached = self._verified.get(device_id)
        if cached is not None and hmac.compare_digest(cached, memo):
            return _row_to_device(row)
        if not check_scrypt(secret, stored):
            return None
        self._upgrade(device_id, secret, stored, memo)
        return _row_to_device(row)

    def _upgrade(self, device_id: str, secret: str, stored: str, memo: bytes) -> None:
        """Replaces a checked scrypt hash with the keyed form, unless the secret changed
        meanwhile (rotate); if the write fails, the check is remembered instead."""
        try:
            with self._upgrade_lock:
                if self._upgrader is None:
                    self._upgrader = sqlite3.connect(
                        self.path, timeout=5.0, isolation_level=None, check_same_thread=False
                    )
                self._upgrader.execute(
                    "UPDATE devices SET secret_hash = ? WHERE id = ? AND secret_hash = ?",
                    (keyed_hash(self._key, device_id, secret), device_id, stored),
                )
        except sqlite3.Error as exc:
            log.warning("could not upgrade the secret hash of %r: %s", device_id, exc)
            self._verified[device_id] = memo
            return
        self._legacy.discard(device_id)
        self._verified.pop(device_id, None)

    # --- writing ---------------------------------------------------------------------------
    def add(self, device_id: str, *, allow_insecure: bool = False) -> str:
        """Registers a device and returns its secret (shown once, stored hashed)."""
        if not DEVICE_ID_RE.match(device_id):
            raise RegistryError(
                f"bad device id {device_id!r}: use 1 to 32 of a-z, 0-9, '-' and '_', "
                "starting with a letter or digit"
            )
        secret = secrets.token_urlsafe(16)
        try:
            self._db.write(
                "INSERT INTO devices (id, secret_hash, enabled, tls_policy, publish, subscribe,"
                " created_at) VALUES (?, ?, 1, ?, ?, ?, ?)",
                (
                    device_id,
                    keyed_hash(self._key, device_id, secret),
                    _policy(allow_insecure),
                    json.dumps(DEFAULT_PUBLISH),
                    json.dumps(DEFAULT_SUBSCRIBE),
                    time.time(),
                ),
            )
        except sqlite3.IntegrityError:
            raise RegistryError(f"device {device_id!r} already exists") from None
        return secret

    def set_enabled(self, device_id: str, enabled: bool) -> Device:
        self._update(device_id, "enabled = ?", int(enabled))
        return self.require(device_id)

    def set_tls_policy(self, device_id: str, allow_insecure: bool) -> Device:
        self._update(
            device_id, "tls_policy = ?", ALLOW_INSECURE if allow_insecure else TLS_REQUIRED
        )
        return self.require(device_id)

    def drop_secret(self, device_id: str) -> Device:
        """No secret logs the device in any more (only its client certificate), until the
        next ``rotate``."""
        self._set_secret_hash(device_id, NO_SECRET)
        return self.require(device_id)

    def set_cert(self, device_id: str, fingerprint: str | None) -> Device:
        """Records the device's client certificate (its SHA-256, hex); None revokes it."""
        self._update(device_id, "cert_fingerprint = ?", fingerprint)
        return self.require(device_id)

    def rotate(self, device_id: str) -> str:
        secret = secrets.token_urlsafe(16)
        self._set_secret_hash(device_id, keyed_hash(self._key, device_id, secret))
        return secret

    def _set_secret_hash(self, device_id: str, secret_hash: str) -> None:
        self._update(device_id, "secret_hash = ?, secret_serial = secret_serial + 1", secret_hash)
        self._verified.pop(device_id, None)
        self._legacy.discard(device_id)

    def remove(self, device_id: str) -> None:
        if self._db.write("DELETE FROM devices WHERE id = ?", (device_id,)) == 0:
            raise RegistryError(f"no device {device_id!r} in the registry")
        self._verified.pop(device_id, None)
        self._legacy.discard(device_id)

    def touch(self, seen: Mapping[str, float]) -> None:
        """Records when devices were last seen (device id -> time), in one transaction."""
        if not seen:
            return
        self._db.write_many(
            "UPDATE devices SET last_seen_at = ? WHERE id = ?",
            [(when, device_id) for device_id, when in seen.items()],
        )

    def _update(self, device_id: str, assignment: str, value: object) -> None:
        changed = self._db.write(
            f"UPDATE devices SET {assignment} WHERE id = ?", (value, device_id)
        )
        if changed == 0:
            raise RegistryError(f"no device {device_id!r} in the registry")
