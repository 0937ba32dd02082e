"""Helpers for the fleet console's tests: raw MQTT devices and API calls with a token."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

from tests.hub.test_api import call, token
from tests.support.hubproc import HubProcess, scaled
from tests.support.mqtt import RawClient

__all__ = ["admin_token", "call", "get", "health", "raw_device", "token", "until"]


def health(**changes: Any) -> bytes:
    body = {
        "fw": "0.1.0",
        "board": "esp32-devkitc",
        "reset": "power-on",
        "up": 5,
        "heap": 50000,
        "rssi": -60,
        "reconnects": 0,
        "queue": 0,
        "dropped": 0,
        "boot": "9fdacacc",
        "seq": 0,
        "error": None,
    }
    body.update(changes)
    return json.dumps(body).encode()


def admin_token(hub: HubProcess) -> str:
    return token(hub, "--admin")


def get(hub: HubProcess, path: str, tok: str) -> Any:
    status, _, body = call(hub, path, tok)
    assert status == 200, (path, status, body[:300])
    return json.loads(body)


async def raw_device(
    hub: HubProcess,
    device: str,
    *,
    status: bytes = b"online",
    meta: bytes | None = None,
    **connect: Any,
) -> RawClient:
    """A device over raw MQTT: connects with its will, publishes its status and health."""
    client = await RawClient.tcp(hub.host, hub.mqtt_port)
    _, code = await client.connect(device, will=(f"d/{device}/s", b"offline", 1, True), **connect)
    assert code == 0
    await client.publish(f"d/{device}/s", status, qos=1, retain=True)
    if meta is not None:
        await client.publish(f"d/{device}/m", meta, qos=1, retain=True)
    return client


def until(predicate: Any, timeout: float = 10.0, what: str = "condition") -> Any:
    """Polls predicate until it returns something truthy; returns it."""
    deadline = time.monotonic() + scaled(timeout)
    while True:
        value = predicate()
        if value:
            return value
        assert time.monotonic() < deadline, f"{what} not met in time"
        time.sleep(0.1)


async def poll(predicate: Any, timeout: float = 10.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + scaled(timeout)
    while True:
        value = await asyncio.to_thread(predicate)
        if value:
            return value
        assert time.monotonic() < deadline, f"{what} not met in time"
        await asyncio.sleep(0.1)
