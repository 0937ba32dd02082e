"""The data dir's lock: a serving hub holds an exclusive ``fcntl.flock`` on
``<data dir>/hub.lock``, so a second hub, or ``hub restore``, on the same data dir is refused.

The kernel drops the lock when its holder exits, however it exits: a crashed hub leaves no
stale lock behind.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

LOCK_FILE = "hub.lock"


class DataDirBusy(Exception):
    """Another hub serves from this data dir."""


class DataDirLock:
    """An exclusive lock on a data dir, held from ``acquire`` until ``release``."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self._fd: int | None = None

    def acquire(self) -> None:
        """Takes the lock without waiting; DataDirBusy if someone holds it."""
        fd = os.open(self.data_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise DataDirBusy(f"another hub is running on {self.data_dir}") from None
        except OSError:
            os.close(fd)
            raise
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor drops the flock
            self._fd = None
