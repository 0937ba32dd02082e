"""Processes by PID: is one still running, stop a group we started, read a log's tail."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import time
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Proc:
    """A process by PID and start time, so that a PID reused by another process is not it."""

    pid: int
    started: int  # clock ticks after boot


def _stat(pid: int) -> list[str] | None:
    """The fields of /proc/PID/stat after the command name (state, ppid, ...), or None."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return None


def identify(pid: int) -> Proc | None:
    fields = _stat(pid)
    return Proc(pid, int(fields[19])) if fields is not None else None


def alive(proc: Proc) -> bool:
    """True while the process runs (a zombie waiting for its parent counts as ended)."""
    fields = _stat(proc.pid)
    return fields is not None and fields[0] not in ("Z", "X") and int(fields[19]) == proc.started


def tree(root: int) -> list[Proc]:
    """root and its descendants as they run now (the Erlang VM's helpers, erl_child_setup and
    inet_gethost, make their own sessions, so a process group does not hold them)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (fields := _stat(int(entry.name))) is not None:
            children.setdefault(int(fields[1]), []).append(int(entry.name))
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        if (proc := identify(pid)) is not None and alive(proc):
            found.append(proc)
        todo += children.get(pid, [])
    return found


def sharing_home(home: Path) -> list[Proc]:
    """Running processes whose environment has HOME=home: with a cluster's private HOME, every
    process of that cluster, even a helper whose parent died before we saw it."""
    marker = f"HOME={home}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and marker in (entry / "environ").read_bytes().split(b"\0"):
                proc = identify(int(entry.name))
                if proc is not None and alive(proc):
                    found.append(proc)
        except OSError:  # ended meanwhile, or another user's
            continue
    return found


def wait_ended(known: list[Proc], timeout: float) -> list[Proc]:
    """Waits until every process has ended or the timeout passes; returns those still running."""
    deadline = time.monotonic() + timeout
    while (left := [p for p in known if alive(p)]) and time.monotonic() < deadline:
        time.sleep(0.1)
    return left


def kill(proc: Proc) -> None:
    """SIGKILL by PID, unless the PID now belongs to another process."""
    if alive(proc):
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGKILL)


def kill_group(pgid: int) -> None:
    """SIGKILL to a process group this module's caller started (its leader's PID)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


def accepts(host: str, port: int) -> bool:
    """True if something listens on host:port."""
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def tail(path: Path, lines: int = 15) -> str:
    """The last lines of a log file ('' if it does not exist)."""
    try:
        with path.open("rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 16384))
            text = f.read().decode(errors="replace")
    except FileNotFoundError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def text_since(path: Path, offset: int) -> str:
    """What a log file gained after byte offset."""
    try:
        with path.open("rb") as f:
            f.seek(offset)
            return f.read().decode(errors="replace")
    except FileNotFoundError:
        return ""


def size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0
