"""Devices for the bench, registered through hub.registry and cached under build/bench/.

Devices are registered once, in this process (a keyed hash each: microseconds; the commit of
each is most of it, about 3 ms; processes registering side by side only wait for SQLite's
write lock, and past its timeout on a loaded machine they failed with "database is locked"),
and the registry (with the hub key and the secrets) is reused by later runs. Every hub the
bench starts gets a fresh copy of it.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from hub.registry import Registry
from hub.security import TokenClaims, create_token, load_key

CACHE = Path("build/bench")
PREFIX = "bench-"


def device_id(i: int) -> str:
    return f"{PREFIX}{i:05d}"


def _register(args: tuple[str, list[str]]) -> list[list[str]]:
    folder, ids = args
    registry = Registry(Path(folder))
    try:
        return [[i, registry.add(i, allow_insecure=True)] for i in ids]
    finally:
        registry.close()


def registry_dir(count: int, cache: Path = CACHE) -> tuple[Path, list[list[str]], float]:
    """A registry of at least ``count`` devices: (folder, [[id, secret]], seconds spent now)."""
    folder = cache / "registry"
    creds_file = folder / "devices.json"
    creds: list[list[str]] = json.loads(creds_file.read_text()) if creds_file.exists() else []
    if len(creds) >= count:
        return folder, creds[:count], 0.0
    start = time.monotonic()
    folder.mkdir(parents=True, exist_ok=True)
    load_key(folder)
    Registry(folder).close()  # creates the schema before the workers race for it
    missing = [device_id(i) for i in range(len(creds), count)]
    creds += _register((str(folder), missing))
    creds.sort()
    creds_file.write_text(json.dumps(creds))
    return folder, creds[:count], time.monotonic() - start


def token(folder: Path) -> str:
    """A browser token that may read every device's telemetry."""
    claims = TokenClaims(subscribe=("d/+/t/+",), expires=time.time() + 24 * 3600)
    return create_token(load_key(folder), claims)
