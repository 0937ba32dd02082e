"""tools/pgserver.py: the one PostgreSQL starter of the tests and the cluster bench."""

from __future__ import annotations

import socket
from pathlib import Path

import psycopg
import pytest

from tools.pgserver import PgServerError, postgres_server


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _settings(url: str) -> tuple[str, int]:
    with psycopg.connect(url) as db:
        row = db.execute("SELECT current_setting('fsync'), inet_server_port()").fetchone()
    assert row is not None
    return str(row[0]), int(row[1])


def test_fsync_and_port_as_asked_and_nothing_left_after() -> None:
    """The bench's form (fsync on, its own port) and the tests' (fsync off, a free port) each
    serve on the port named in their URL, and their folders are gone once stopped."""
    port = _port()
    with postgres_server(port=port, fsync=True, prefix="pgserver-test-") as url:
        assert url == f"postgresql://hub@127.0.0.1:{port}/postgres"
        assert _settings(url) == ("on", port)
        folders = list(Path("/tmp").glob("pgserver-test-*"))
        assert folders
    with postgres_server(fsync=False, prefix="pgserver-test-") as url:
        setting, chosen = _settings(url)
        assert setting == "off" and url.endswith(f":{chosen}/postgres")
    assert not any(folder.exists() for folder in folders)
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(url, connect_timeout=2)


def test_a_taken_port_is_a_clear_error() -> None:
    """A port another process holds: PgServerError naming pg_ctl's failure, folder removed."""
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        before = set(Path("/tmp").glob("pgserver-taken-*"))
        with (
            pytest.raises(PgServerError, match="failed"),
            postgres_server(port=port, fsync=False, prefix="pgserver-taken-"),
        ):
            pass
        assert set(Path("/tmp").glob("pgserver-taken-*")) == before
