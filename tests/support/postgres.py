"""A throwaway PostgreSQL server for tests (tools/pgserver.py without fsync, a free port)
and fresh databases on it."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg

from tools.pgserver import postgres_server as _server


@contextmanager
def postgres_server() -> Iterator[str]:
    """Yields the URL of a running server (trust auth on loopback) and stops it after. Its
    folder is a fresh one under /tmp: pytest's own temp folders are closed to other users."""
    with _server(fsync=False, prefix="hub-postgres-") as url:
        yield url


def fresh_database(server_url: str) -> str:
    """A new empty database on the server; returns its URL."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(server_url, autocommit=True) as db:
        db.execute(f"CREATE DATABASE {name}")
    return server_url.rsplit("/", 1)[0] + f"/{name}"
