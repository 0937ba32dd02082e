"""Device secrets' hashes: the keyed form (HMAC-SHA-256 under the registry key) and the salted
scrypt form registries written before it used; the registry key file.

Device secrets are 128 bits from the hub's CSPRNG: a hash of one cannot be brute-forced however
cheap the hash is (the reasoning that lets services store API tokens as SHA-256), so a check
costs one HMAC (microseconds) instead of scrypt's milliseconds. The key stops a stolen registry
file alone from being checked against anything, and binding the device id into the message
stops a hash copied to another row from logging that device in. Losing the key invalidates
every secret hashed with it.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import os
import secrets
import sqlite3
import stat
import tempfile
from pathlib import Path

KEY_FILE = "registry.key"
KEYED_PREFIX = "hmac-sha256$"  # the current form: HMAC-SHA-256(registry key, id NUL secret)
SCRYPT_PREFIX = "scrypt$"  # the form registries written before used (salted scrypt)
_SCRYPT = {"n": 2**12, "r": 8, "p": 1, "dklen": 32}
_DUMMY_DIGEST = bytes(32)  # compared against when there is nothing to compare, for even timing


class KeyFileError(Exception):
    """The registry key is missing while hashes need it, or is not a key."""


def scrypt_hash(secret: str) -> str:
    """The salted scrypt form registries written before the keyed hash used (kept to verify
    them, and for tests to write such a registry)."""
    salt = os.urandom(16)
    digest = hashlib.scrypt(secret.encode(), salt=salt, **_SCRYPT)
    params = f"{_SCRYPT['n']}${_SCRYPT['r']}${_SCRYPT['p']}"
    return f"scrypt${params}${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}"


def keyed_digest(key: bytes, device_id: str, secret: str) -> bytes:
    message = device_id.encode() + b"\0" + secret.encode(errors="surrogateescape")
    return hmac.new(key, message, hashlib.sha256).digest()


def keyed_hash(key: bytes, device_id: str, secret: str) -> str:
    """The stored form of a device secret: bound to the device id, so a hash copied to
    another device's row logs nobody in."""
    return KEYED_PREFIX + base64.b64encode(keyed_digest(key, device_id, secret)).decode()


def check_keyed(key: bytes, device_id: str, secret: str, stored: str) -> bool:
    """Checks a secret against a keyed hash in constant time. Anything else (no secret, a
    malformed value) costs the same HMAC and compare, and fails."""
    actual = keyed_digest(key, device_id, secret)
    expected, ok = _DUMMY_DIGEST, False
    if stored.startswith(KEYED_PREFIX):
        try:
            decoded = base64.b64decode(stored[len(KEYED_PREFIX) :], validate=True)
        except ValueError:
            decoded = b""
        if len(decoded) == len(_DUMMY_DIGEST):
            expected, ok = decoded, True
    return hmac.compare_digest(actual, expected) and ok


def check_scrypt(secret: str, stored: str) -> bool:
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        if scheme != "scrypt":
            return False
        expected = base64.b64decode(digest)
        actual = hashlib.scrypt(
            secret.encode(errors="surrogateescape"),
            salt=base64.b64decode(salt),
            n=int(n),
            r=int(r),
            p=int(p),
            dklen=len(expected),
        )
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(actual, expected)


def load_registry_key(data_dir: Path, db: sqlite3.Connection) -> bytes:
    """The registry key, made (owner-only, whole or not at all) on first use. A missing key
    is never replaced while keyed hashes exist: a new one would silently invalidate them."""
    path = data_dir / KEY_FILE
    if not path.exists():
        keyed = db.execute(
            "SELECT COUNT(*) FROM devices WHERE secret_hash LIKE ?", (KEYED_PREFIX + "%",)
        ).fetchone()[0]
        if keyed:
            raise KeyFileError(
                f"{path} is missing but {keyed} device secret(s) are hashed with it: restore "
                "it from a backup (`hub restore`), or rotate every device's secret after "
                "moving the registry aside"
            )
        fd, tmp = tempfile.mkstemp(dir=data_dir, prefix=".registry.key.")  # mode 0600
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(secrets.token_bytes(32))
                f.flush()
                os.fsync(f.fileno())
            with contextlib.suppress(FileExistsError):  # never replace another process's key
                os.link(tmp, path)
        finally:
            os.unlink(tmp)
    if stat.S_IMODE(path.stat().st_mode) & 0o077:
        os.chmod(path, 0o600)
    key = path.read_bytes()
    if len(key) != 32:
        raise KeyFileError(f"{path} is not a registry key (32 bytes): restore it from a backup")
    return key
