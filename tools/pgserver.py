"""A throwaway PostgreSQL server from Debian's package, for tests and benches: initdb in a
fresh folder under /tmp (pytest's and the bench's own folders are closed to other users), the
server on 127.0.0.1, trust authentication for the user ``hub``, stopped and removed after.

``fsync=False`` (the tests) skips initdb's syncs and the server's: fast, and lost with the
machine. ``fsync=True`` (the benches) makes "stored" mean on disk, and stops the server
cleanly. ``port=None`` picks a free one (and another if some other process took it before
the server bound it).
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

HOST = "127.0.0.1"
START_TIMEOUT_S = 60
PORT_ATTEMPTS = 3


class PgServerError(RuntimeError):
    """PostgreSQL is missing, or initdb or the server did not start (the message says why)."""


def pg_bin(name: str) -> str:
    """Debian's newest installed PostgreSQL program ``name``."""
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    if not found:
        raise PgServerError(f"PostgreSQL's {name} is missing: run tools/bootstrap.sh")
    return found[-1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def _run(cmd: list[str]) -> None:
    result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode != 0:
        raise PgServerError(f"{Path(cmd[-1]).name} failed: {result.stdout}{result.stderr}")


@contextlib.contextmanager
def postgres_server(
    *, port: int | None = None, fsync: bool = True, prefix: str = "pgserver-"
) -> Iterator[str]:
    """Yields the URL of a running server (``postgresql://hub@127.0.0.1:PORT/postgres``) and
    stops it after, its folder removed."""
    folder = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        run_as: list[str] = []
        if os.geteuid() == 0:  # PostgreSQL refuses to run as root
            user = pwd.getpwnam("postgres")
            os.chown(folder, user.pw_uid, user.pw_gid)
            run_as = ["runuser", "-u", "postgres", "--"]
        data = folder / "data"
        sync = [] if fsync else ["--no-sync"]
        _run([*run_as, pg_bin("initdb"), "-D", str(data), "-A", "trust", "-U", "hub", *sync])
        ctl = [*run_as, pg_bin("pg_ctl"), "-D", str(data)]
        attempts = PORT_ATTEMPTS if port is None else 1
        for attempt in range(attempts):
            # A port free a moment ago may be taken by another process before the server
            # binds it: then the server does not start, and a new port is tried.
            chosen = _free_port() if port is None else port
            options = f"-p {chosen} -k {folder} -c listen_addresses={HOST}"
            if not fsync:
                options += " -c fsync=off"
            start = [*ctl, "-o", options, "-l", str(folder / "log")]
            try:
                _run([*start, "-w", "-t", str(START_TIMEOUT_S), "start"])
                break
            except PgServerError:
                # A server still starting when pg_ctl gave up must not outlive its folder.
                subprocess.run([*ctl, "-m", "immediate", "stop"], capture_output=True)
                if attempt == attempts - 1:
                    raise
        try:
            yield f"postgresql://hub@{HOST}:{chosen}/postgres"
        finally:
            # Without fsync nothing is worth a clean shutdown's checkpoint.
            mode = "fast" if fsync else "immediate"
            subprocess.run([*ctl, "-m", mode, "stop"], capture_output=True)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
