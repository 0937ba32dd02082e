"""The two brokers under test, started on free loopback ports and measured from outside.

- The hub runs as ``python -m hub serve`` with its real configuration: device credentials and
  tokens, topic rules, storage. Its data dir is a fresh copy of a provisioned registry.
- Mosquitto is Debian's package (``/usr/sbin/mosquitto``), started with a generated config:
  anonymous access, ``max_connections -1``, a TCP and a WebSocket listener, no persistence.

Both are pinned to the same CPU (all their threads) when pinning is on.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from hub.endpoints import Endpoints, ReadyLineError

MOSQUITTO = "/usr/sbin/mosquitto"


class BenchError(Exception):
    """The bench cannot run (a broker did not start, Mosquitto is missing)."""


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def pin(pid: int, cpus: set[int] | None) -> None:
    """Pins every thread of a process (threads started later inherit it from theirs)."""
    if not cpus:
        return
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(ProcessLookupError, OSError):
            os.sched_setaffinity(int(task.name), cpus)


@dataclass
class Broker:
    name: str
    proc: subprocess.Popen[str]
    host: str
    port: int
    ws_url: str
    cpus: set[int] | None
    notes: list[str] = field(default_factory=list)

    @property
    def ps(self) -> psutil.Process:
        return psutil.Process(self.proc.pid)

    def rss(self) -> int:
        return int(self.ps.memory_info().rss)

    def cpu(self) -> float:
        times = self.ps.cpu_times()
        return float(times.user + times.system)

    def repin(self) -> None:
        pin(self.proc.pid, self.cpus)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def _wait_port(host: str, port: int, proc: subprocess.Popen[str], what: str) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise BenchError(f"{what} exited with {proc.returncode} at start")
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise BenchError(f"{what} did not listen on {host}:{port}")


def start_mosquitto(work: Path, cpus: set[int] | None) -> Broker:
    if not Path(MOSQUITTO).exists():
        raise BenchError(f"{MOSQUITTO} is missing: run tools/bootstrap.sh (Debian's mosquitto)")
    work.mkdir(parents=True, exist_ok=True)
    for attempt in range(10):  # a free port can be taken by another program before we bind it
        # Free on every address: its WebSocket listener refuses a port another program has on
        # another loopback address (a load generator spread over 127.0.0.0/8).
        port, ws_port = free_port(""), free_port("")
        conf = work / "mosquitto.conf"
        conf.write_text(
            f"per_listener_settings false\nallow_anonymous true\nmax_connections -1\n"
            f"persistence false\nlog_dest stderr\nlog_type error\nlog_type warning\n"
            f"listener {port} 127.0.0.1\n"
            f"listener {ws_port} 127.0.0.1\nprotocol websockets\n"
        )
        log_path = work / "mosquitto.log"
        with log_path.open("w") as log_file:
            proc = subprocess.Popen(
                [MOSQUITTO, "-c", str(conf)],
                stdout=subprocess.DEVNULL,
                stderr=log_file,
                text=True,
                preexec_fn=(lambda: os.sched_setaffinity(0, cpus)) if cpus else None,
            )
        try:
            _wait_port("127.0.0.1", port, proc, "mosquitto")
            _wait_port("127.0.0.1", ws_port, proc, "mosquitto")
            time.sleep(0.1)  # a listener that failed after the first one ends the process
            if proc.poll() is not None:
                raise BenchError(f"mosquitto exited with {proc.returncode} at start")
            break
        except BenchError as exc:
            proc.kill()
            proc.wait()
            said = log_path.read_text(errors="replace").strip().splitlines()[-3:]
            taken = any(w in " ".join(said) for w in ("in use", "Unable to create"))
            if attempt == 9 or not taken:
                raise BenchError(f"{exc}: {' / '.join(said) or 'no output'}") from None
    version = subprocess.run([MOSQUITTO, "-h"], capture_output=True, text=True).stdout
    first = version.splitlines()[0] if version else "mosquitto"
    return Broker(
        "mosquitto",
        proc,
        "127.0.0.1",
        port,
        f"ws://127.0.0.1:{ws_port}",
        cpus,
        [first, "anonymous, max_queued_messages 1000, max_inflight_messages 20"],
    )


def fresh_data_dir(registry_dir: Path, work: Path) -> Path:
    """``work/hub-data``, emptied, holding a copy of the provisioned registry: its database,
    the key of its keyed secret hashes (``registry.key``) and the hub key."""
    data = work / "hub-data"
    if data.exists():
        shutil.rmtree(data)
    data.mkdir(parents=True)
    for name in ("registry.sqlite3", "registry.key", "hub.key"):
        if (registry_dir / name).exists():
            shutil.copy2(registry_dir / name, data / name)
    os.chmod(data / "registry.sqlite3", 0o600)
    return data


def _console_up(address: tuple[str, int], proc: subprocess.Popen[str], limit: float = 60) -> None:
    """Returns once the hub's console answers HTTP: the ready line comes when MQTT is served
    and the console follows (hub/server.py); an idle hub is measured with all of it loaded."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(address, timeout=5) as sock:
                sock.sendall(b"HEAD / HTTP/1.0\r\n\r\n")
                if sock.recv(16).startswith(b"HTTP/"):
                    return
        except OSError:
            pass
        if proc.poll() is not None:
            break
        time.sleep(0.02)  # on purpose: polled until the console answers
    proc.kill()
    raise BenchError("the hub's console did not answer after its ready line")


def start_hub(
    registry_dir: Path,
    work: Path,
    cpus: set[int] | None,
    *extra: str,
    profile: Path | None = None,
    source: Path | None = None,
) -> Broker:
    """Starts the hub on a fresh data dir holding a copy of the provisioned registry; with
    ``source``, the hub package is imported from that folder (an older version, for before and
    after figures)."""
    data = fresh_data_dir(registry_dir, work)
    cmd = [sys.executable]
    if profile is not None:
        cmd += ["-m", "cProfile", "-o", str(profile)]
    cmd += ["-m", "hub", "serve", "--host", "127.0.0.1", "--mqtt-port", "0", "--ws-port", "0"]
    cmd += ["--mqtts-port", "0", "--wss-port", "0", "--data-dir", str(data), *extra]
    log = (work / "hub.log").open("a")
    proc = subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=log,
        text=True,
        preexec_fn=(lambda: os.sched_setaffinity(0, cpus)) if cpus else None,
        cwd=source,
    )
    log.close()
    assert proc.stdout is not None
    line = proc.stdout.readline().strip()
    try:
        ends = Endpoints.parse(line)
    except ReadyLineError:
        proc.kill()
        raise BenchError(f"the hub did not start ({line!r}); see {work / 'hub.log'}") from None
    (host, port), (ws_host, ws_port) = ends.mqtt, ends.ws
    _console_up(ends.http, proc)
    notes = [" ".join(extra) or "defaults"] + ([f"hub code from {source}"] if source else [])
    return Broker(
        "hub",
        proc,
        host,
        port,
        f"ws://{ws_host}:{ws_port}/mqtt",
        cpus,
        notes,
    )
