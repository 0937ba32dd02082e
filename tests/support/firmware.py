"""What firmware tests share: a subscriber that records everything, and reading checks."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import time
from collections.abc import Callable
from typing import Any

from hub import topics
from tests.support.hubproc import HubProcess
from tests.support.mqtt import Message, RawClient, publish_packet
from tests.support.waits import eventually_async

# Short timings so faults heal in seconds; every bound below is derived from these.
FAST = {
    "keepalive_s": 2,
    "io_timeout_s": 2,
    "ack_timeout_s": 2,
    "backoff_min_ms": 200,
    "backoff_max_ms": 2000,
}


class Subscriber:
    """A raw MQTT client on the hub that records every message on d/<device>/#."""

    def __init__(self, client: RawClient, device: str) -> None:
        self.client = client
        self.device = device
        self.messages: list[tuple[float, Message]] = []
        self._task: asyncio.Task[None] | None = None

    @classmethod
    async def start(cls, hub: HubProcess, device: str, name: str = "watcher") -> Subscriber:
        client = await RawClient.tcp(hub.host, hub.mqtt_port)
        assert await client.connect(f"{name}-{device}") == (False, 0)
        assert await client.subscribe([(f"d/{device}/#", 1)]) == [1]
        sub = cls(client, device)
        sub._task = asyncio.create_task(sub._run())
        return sub

    async def _run(self) -> None:
        with contextlib.suppress(Exception):
            while True:
                msg = await self.client.next_message(timeout=3600)
                self.messages.append((time.monotonic(), msg))

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.client.close()

    def readings(self, sensor: str = "temp") -> list[topics.Reading]:
        """Every reading received, duplicates included, in arrival order."""
        topic = topics.telemetry_topic(self.device, sensor)
        return [topics.parse_reading(m.payload) for _, m in self.messages if m.topic == topic]

    def on(self, topic: str) -> list[Message]:
        return [m for _, m in self.messages if m.topic == topic]

    def online(self) -> list[Message]:
        """The device's `online` status messages (one per connect, after its SUBACK)."""
        status = topics.status_topic(self.device)
        return [m for m in self.on(status) if m.payload == topics.STATUS_ONLINE]

    async def wait_until(
        self, check: Callable[[], Any], timeout: float, what: str, *, poll: float = 0.05
    ) -> Any:
        """Polls check() until it returns something truthy; fails naming what was awaited."""
        return await eventually_async(check, timeout, what, poll=poll)

    async def wait_readings(self, count: int, timeout: float, sensor: str = "temp") -> None:
        await self.wait_until(
            lambda: len(unique(self.readings(sensor))) >= count, timeout, f"{count} readings"
        )

    async def command(self, command: dict[str, Any], timeout: float = 10) -> dict[str, Any]:
        """Sends a command to the device and returns its reply (matched by id)."""
        await self.client.send(
            publish_packet(topics.command_topic(self.device), json.dumps(command).encode(), qos=1)
        )

        def reply() -> dict[str, Any] | None:
            for msg in self.on(topics.reply_topic(self.device)):
                data: dict[str, Any] = json.loads(msg.payload)
                if data.get("id") == command["id"]:
                    return data
            return None

        result: dict[str, Any] = await self.wait_until(reply, timeout, f"a reply to {command}")
        return result


def unique(readings: list[topics.Reading]) -> list[topics.Reading]:
    """Drops duplicates by (boot, seq), keeping the first arrival: what the hub stores."""
    seen: set[tuple[str, int]] = set()
    out = []
    for r in readings:
        if (r.boot, r.seq) not in seen:
            seen.add((r.boot, r.seq))
            out.append(r)
    return out


def assert_complete(readings: list[topics.Reading]) -> dict[str, list[int]]:
    """Each boot's readings, deduplicated, are 0, 1, 2, ... in arrival order: none missing."""
    by_boot: dict[str, list[int]] = {}
    for r in unique(readings):
        by_boot.setdefault(r.boot, []).append(r.seq)
    for boot, seqs in by_boot.items():
        assert seqs == list(range(len(seqs))), f"boot {boot}: gaps or disorder in {seqs}"
    return by_boot


_RETRY_RE = re.compile(r"link down \((.*?)\), retry in (\d+) ms")


def retry_delays(log: str) -> list[tuple[str, int]]:
    """(error, milliseconds) of each ``link down (...), retry in N ms`` line the firmware
    (node/session.py) printed in ``log``, in order: the backoff it chose, exactly."""
    return [(m.group(1), int(m.group(2))) for m in _RETRY_RE.finditer(log)]


def assert_backoff(delays: list[int], first: int, steps: list[int]) -> None:
    """A lost working session's first retry waited 0 to ``first`` ms, and each failed attempt
    after it half to all of its step in ``steps`` (node/session.py's schedule)."""
    assert len(delays) >= len(steps) + 1, delays
    assert 0 <= delays[0] <= first, (delays, first)
    for delay, step in zip(delays[1:], steps, strict=False):
        assert step // 2 <= delay <= step, (delays, steps)
