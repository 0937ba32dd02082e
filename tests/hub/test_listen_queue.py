"""The hub's listening sockets queue as many connections as the kernel allows (a fleet's
reconnect storm after a restart), read from the kernel's own socket table with `ss`."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from hub.server import LISTEN_BACKLOG
from tests.support.hubproc import HubProcess


def listen_queue(port: int) -> int:
    """The accept queue's length of the socket listening on 127.0.0.1:port (ss's Send-Q)."""
    out = subprocess.run(
        ["ss", "-Hltn", f"sport = :{port}"], capture_output=True, text=True, check=True
    ).stdout.split()
    assert out and out[0] == "LISTEN", out
    return int(out[2])


@pytest.mark.skipif(shutil.which("ss") is None, reason="needs ss (iproute2)")
def test_mqtt_and_websocket_listen_queues_are_the_kernels_largest(hub: HubProcess) -> None:
    """The MQTT and WebSocket ports queue net.core.somaxconn connections, not a smaller
    number of the hub's choosing."""
    somaxconn = int(Path("/proc/sys/net/core/somaxconn").read_text())
    assert LISTEN_BACKLOG >= 4096
    assert listen_queue(hub.mqtt_port) == min(somaxconn, LISTEN_BACKLOG)
    assert listen_queue(hub.ws_port) == min(somaxconn, LISTEN_BACKLOG)
