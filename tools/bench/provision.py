"""Devices for the bench, registered through hub.registry and cached under build/bench/.

Each registration hashes a secret with scrypt (~8 ms), so 10,000 devices take ~80 s of CPU:
they are registered once, in a process pool, and the registry (with the hub key and the
secrets) is reused by later runs. Every hub the bench starts gets a fresh copy of it.
"""

from __future__ import annotations

import json
import os
import time
from concurrent.futures import ProcessPoolExecutor
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
    workers = max(1, os.cpu_count() or 1)
    chunks = [missing[k::workers] for k in range(workers)]
    with ProcessPoolExecutor(workers) as pool:
        for part in pool.map(_register, [(str(folder), c) for c in chunks if c]):
            creds += part
    creds.sort()
    creds_file.write_text(json.dumps(creds))
    return folder, creds[:count], time.monotonic() - start


def token(folder: Path) -> str:
    """A browser token that may read every device's telemetry."""
    claims = TokenClaims(subscribe=("d/+/t/+",), expires=time.time() + 24 * 3600)
    return create_token(load_key(folder), claims)
