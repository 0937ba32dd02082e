"""The hub's listening sockets queue the connections hub/server.py's LISTEN_BACKLOG says (sized
for a fleet's reconnect storm), read from the kernel's own socket table with `ss`."""

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
def test_mqtt_and_websocket_listen_queues_are_the_hubs(hub: HubProcess) -> None:
    """The MQTT and WebSocket ports queue LISTEN_BACKLOG connections (capped by the kernel's
    net.core.somaxconn), not Python's default."""
    somaxconn = int(Path("/proc/sys/net/core/somaxconn").read_text())
    assert listen_queue(hub.mqtt_port) == min(somaxconn, LISTEN_BACKLOG)
    assert listen_queue(hub.ws_port) == min(somaxconn, LISTEN_BACKLOG)
