"""A throwaway PostgreSQL server from Debian's package: initdb in a temp dir, a free port."""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg


def _bin(name: str) -> str:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    if not found:
        raise RuntimeError(f"PostgreSQL's {name} is missing: run tools/bootstrap.sh")
    return found[-1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _run(cmd: list[str]) -> None:
    result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"{Path(cmd[-1]).name} failed: {result.stdout}{result.stderr}")


@contextmanager
def postgres_server() -> Iterator[str]:
    """Yields the URL of a running server (trust auth on loopback) and stops it after. Its
    folder is a fresh one under /tmp: pytest's own temp folders are closed to other users."""
    folder = Path(tempfile.mkdtemp(prefix="hub-postgres-"))
    run_as: list[str] = []
    if os.geteuid() == 0:  # PostgreSQL refuses to run as root
        user = pwd.getpwnam("postgres")
        os.chown(folder, user.pw_uid, user.pw_gid)
        run_as = ["runuser", "-u", "postgres", "--"]
    data = folder / "data"
    _run([*run_as, _bin("initdb"), "-D", str(data), "-A", "trust", "-U", "hub", "--no-sync"])
    for attempt in range(3):
        # A port free a moment ago may be taken by another test worker before the server
        # binds it: then the server does not start, and a new port is tried.
        port = _free_port()
        options = f"-p {port} -k {folder} -c listen_addresses=127.0.0.1 -c fsync=off"
        start = [*run_as, _bin("pg_ctl"), "-D", str(data), "-o", options]
        try:
            _run([*start, "-l", str(folder / "log"), "-w", "-t", "30", "start"])
            break
        except RuntimeError:
            if attempt == 2:
                raise
    try:
        yield f"postgresql://hub@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run(
            [*run_as, _bin("pg_ctl"), "-D", str(data), "-m", "immediate", "stop"],
            capture_output=True,
        )
        shutil.rmtree(folder, ignore_errors=True)


def fresh_database(server_url: str) -> str:
    """A new empty database on the server; returns its URL."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(server_url, autocommit=True) as db:
        db.execute(f"CREATE DATABASE {name}")
    return server_url.rsplit("/", 1)[0] + f"/{name}"
