"""Health probes: a bare connect and close is routine, not an error in the hub's log."""

import asyncio
import re
import socket
import struct
from pathlib import Path

import pytest
import websockets

from tests.support.hubproc import HubProcess, start_hub
from tests.support.networks import QUIET, Network, assert_serving

LOUD = re.compile(r"\b(WARNING|ERROR|CRITICAL)\b|Traceback")


def _tcp_probe(hub: HubProcess, *, reset: bool) -> None:
    """Opens a TCP connection to the MQTT port and closes it (with a RST if reset)."""
    with socket.create_connection((hub.host, hub.mqtt_port)) as sock:
        if reset:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


async def _ws_probe(hub: HubProcess) -> None:
    """Opens the MQTT WebSocket (upgrade and all) and closes it without a byte of MQTT."""
    ws = await websockets.connect(hub.ws_url, subprotocols=[websockets.Subprotocol("mqtt")])
    await ws.close()


@pytest.mark.parametrize("probe", ["tcp-close", "tcp-reset", "ws-close"])
def test_bare_connect_and_close_logs_nothing_loud(tmp_path: Path, tag: str, probe: str) -> None:
    """A load balancer's connect-and-close probe leaves no warning, error or traceback."""
    log_path = tmp_path / "hub.log"
    with log_path.open("w") as log:
        hub = start_hub(tmp_path / "hub-data", stderr=log)
    try:
        start = log_path.stat().st_size  # what the hub logged while starting is not ours

        async def scenario() -> None:
            for _ in range(3):
                if probe == "ws-close":
                    await _ws_probe(hub)
                else:
                    _tcp_probe(hub, reset=probe == "tcp-reset")
            await assert_serving(Network(hub, "tcp"), tag)
            await asyncio.sleep(QUIET)  # let the hub write whatever it had to say

        asyncio.run(scenario())
        with log_path.open() as log:
            log.seek(start)
            loud = [line for line in log.read().splitlines() if LOUD.search(line)]
        assert not loud, "\n".join(loud)
    finally:
        hub.stop()
