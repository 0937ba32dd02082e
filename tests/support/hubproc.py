"""Runs the real hub (`python -m hub serve`) as a subprocess on free ports: the suite's one hub
launcher (the ready line is read with hub/endpoints.py's parser, the benches' too)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from hub.endpoints import Endpoints, ReadyLineError

# One factor scales every wait in the suite (slow CI machines: TIMEOUT_FACTOR=3).
TIMEOUT_FACTOR = float(os.environ.get("TIMEOUT_FACTOR", "1"))


def scaled(seconds: float) -> float:
    return seconds * TIMEOUT_FACTOR


def serve_command(data_dir: Path, *extra: str, secure: bool = False) -> list[str]:
    """The `python -m hub serve` command line of a test hub: every port 0 (free), and in
    development mode (anonymous clients, no rate limit) unless ``secure``; later flags in
    ``extra`` win."""
    cmd = [sys.executable, "-m", "hub", "serve", "--mqtt-port", "0", "--ws-port", "0"]
    cmd += ["--mqtts-port", "0", "--wss-port", "0"]
    if not secure:
        cmd += ["--allow-anonymous", "--rate-limit", "0"]
    return [*cmd, "--data-dir", str(data_dir), *extra]


def serve_refused(
    data_dir: Path, *extra: str, secure: bool = True
) -> subprocess.CompletedProcess[str]:
    """Runs a `hub serve` that is expected to exit at once (a bad flag, a taken port, a locked
    data dir) and returns its result."""
    return subprocess.run(
        serve_command(data_dir, *extra, secure=secure),
        capture_output=True,
        text=True,
        timeout=scaled(30),
    )


@dataclass
class HubProcess:
    proc: subprocess.Popen[str]
    host: str
    mqtt_port: int
    ws_port: int
    http_port: int
    ready_line: str
    data_dir: Path
    mqtts_port: int | None = None  # set when the hub has certificates
    wss_port: int | None = None
    endpoints: Endpoints | None = None  # the ready line, parsed

    @property
    def mqtt_url(self) -> str:
        return f"mqtt://{self.host}:{self.mqtt_port}"

    @property
    def ws_url(self) -> str:
        return f"ws://{self.host}:{self.ws_port}/mqtt"

    @property
    def http_url(self) -> str:
        return f"http://{self.host}:{self.http_port}"

    def stop(self, sig: int = signal.SIGTERM) -> float:
        """Sends sig and returns how long the hub took to exit."""
        start = time.monotonic()
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=scaled(10))
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return time.monotonic() - start


def start_hub(
    data_dir: Path, *extra: str, stderr: IO[str] | None = None, secure: bool = False
) -> HubProcess:
    """Starts the hub; stderr (a file) captures its log, otherwise it goes to the test's.

    By default the hub runs in development mode (anonymous clients, no rate limit), as protocol
    conformance runs do; ``secure=True`` runs it with its default security configuration.
    """
    cmd = serve_command(data_dir, *extra, secure=secure)
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=stderr, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline().strip()  # the hub prints exactly one line when it listens
    try:
        ends = Endpoints.parse(line)
    except ReadyLineError:
        proc.kill()
        proc.wait()
        raise AssertionError(f"hub did not print a ready line, got {line!r}") from None
    wait_for_console(ends.http[0], ends.http[1], proc)
    return HubProcess(
        proc,
        ends.mqtt[0],
        ends.mqtt[1],
        ends.ws[1],
        ends.http[1],
        line,
        data_dir,
        ends.mqtts[1] if ends.mqtts else None,
        ends.wss[1] if ends.wss else None,
        ends,
    )


def wait_for_console(host: str, port: int, proc: subprocess.Popen[str]) -> None:
    """Returns once the console answers HTTP: the ready line comes as soon as MQTT is served
    and the console follows (its socket listens already; hub/server.py). A test that attacks
    or limits the console must not start before it serves."""
    deadline = time.monotonic() + scaled(30)
    while True:
        try:
            with socket.create_connection((host, port), timeout=scaled(5)) as sock:
                sock.sendall(b"HEAD / HTTP/1.0\r\n\r\n")
                if sock.recv(16).startswith(b"HTTP/"):
                    return
        except OSError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            raise AssertionError("the hub's console did not answer after its ready line")
        time.sleep(0.02)  # on purpose: polled until the console answers


def hub_cli(data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Runs `python -m hub ARGS --data-dir DATA_DIR` (device and token commands)."""
    return subprocess.run(
        [sys.executable, "-m", "hub", *args, "--data-dir", str(data_dir)],
        capture_output=True,
        text=True,
        timeout=scaled(30),
    )


def add_account(
    data_dir: Path, name: str, role: str = "admin", password: str | None = None
) -> str:
    """Creates a console account with `hub user add` (the password through --password-stdin
    when given) and returns its password."""
    args = ["user", "add", name, "--role", role]
    if password is not None:
        args.append("--password-stdin")
    result = subprocess.run(
        [sys.executable, "-m", "hub", *args, "--data-dir", str(data_dir)],
        input=None if password is None else password + "\n",
        capture_output=True,
        text=True,
        timeout=scaled(30),
    )
    assert result.returncode == 0, result.stderr
    if password is not None:
        return password
    (line,) = [x for x in result.stdout.splitlines() if x.startswith("one-time password: ")]
    return line.split(": ", 1)[1]


def provision(hub: HubProcess, device_id: str, *, allow_insecure: bool = True) -> dict[str, str]:
    """Registers a device with `hub device add` and returns its credentials."""
    args = ["device", "add", device_id] + (["--allow-insecure"] if allow_insecure else [])
    result = hub_cli(hub.data_dir, *args)
    assert result.returncode == 0, result.stderr
    return dict(json.loads(result.stdout))
