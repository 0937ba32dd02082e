"""`python -m tools.cluster --hub --data-dir D`: a hub in cluster mode against the local cluster.

The hub's auth listener port is chosen first (the nodes' config names it); the nodes ask it
only when a client logs in, so the hub may start after them.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

from tools.cluster.launcher import Cluster
from tools.cluster.nodes import HOST, ClusterError, free_ports

HUB_START_TIMEOUT = 60.0


def auth_port() -> int:
    (port,) = free_ports(1)
    return port


def auth_url(port: int) -> str:
    return f"http://{HOST}:{port}"


def hub_command(cluster: Cluster, data_dir: Path, port: int, *extra: str) -> list[str]:
    """`python -m hub serve` in cluster mode against every node of ``cluster``."""
    return [
        sys.executable,
        "-m",
        "hub",
        "serve",
        "--broker",
        "rabbitmq",
        "--rabbitmq-amqp",
        ",".join(f"amqp://{HOST}:{p}" for p in cluster.amqp_ports),
        "--rabbitmq-mgmt",
        ",".join(f"http://{HOST}:{p}" for p in cluster.mgmt_ports),
        "--rabbitmq-credentials",
        str(cluster.credentials_file),
        "--auth-http-host",
        HOST,
        "--auth-http-port",
        str(port),
        "--host",
        HOST,
        "--ws-port",
        "0",
        "--data-dir",
        str(data_dir),
        *extra,
    ]


class HubRun:
    """The hub subprocess; ``http`` is its console's HOST:PORT once it is ready."""

    def __init__(self, cluster: Cluster, data_dir: Path, port: int, *extra: str) -> None:
        self.proc = subprocess.Popen(
            hub_command(cluster, data_dir, port, *extra),
            stdout=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            text=True,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().strip()
        if not line.startswith("ready "):
            self.stop()
            raise ClusterError(f"the hub did not start (exit {self.proc.returncode}): {line!r}")
        fields = dict(part.split("=", 1) for part in line.split()[1:] if "=" in part)
        self.http = fields.get("http", "")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
