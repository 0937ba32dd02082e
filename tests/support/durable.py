"""What the durability tests observe: a device's flash ring, a publisher that records its PUBACKs,
hub events, and what the telemetry store holds."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
import struct
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.support.mqtt import (
    CONNACK,
    PUBACK,
    RawClient,
    connect_packet,
    decode_publish,
    publish_packet,
)
from tests.support.waits import eventually_async

RING_HEAD = 20
RING_RECORD = 52  # marker, channel, length, 0, index, CRC32, payload


@dataclass
class Ring:
    """A device's queue.bin (firmware/node/ring.py): readings below ``first`` were acknowledged
    and deleted; ``payloads`` are the records still in the file, by index."""

    first: int
    next: int
    dropped: int
    payloads: dict[int, bytes]

    def acknowledged(self) -> set[tuple[str, int]]:
        """(boot, seq) of the readings the device deleted (acknowledged) still in the file."""
        out = set()
        for index, payload in self.payloads.items():
            if index < self.first:
                boot, seq, _ = payload.decode().split(",")
                out.add((boot, int(seq)))
        return out

    def boots(self) -> set[str]:
        return {p.decode().split(",")[0] for p in self.payloads.values()}


def read_ring(folder: Path) -> Ring:
    data = (folder / "queue.bin").read_bytes()
    assert data[:3] == b"RQ2", "not a ring file"
    capacity, first, nxt, dropped = struct.unpack_from("<HxxIII", data, 4)
    payloads: dict[int, bytes] = {}
    for slot in range(capacity):
        rec = data[RING_HEAD + slot * RING_RECORD : RING_HEAD + (slot + 1) * RING_RECORD]
        if len(rec) == RING_RECORD and rec[0] == 0xA5:
            index, crc = struct.unpack_from("<II", rec, 4)
            payload = bytes(rec[12 : 12 + rec[2]])
            if crc == zlib.crc32(payload, zlib.crc32(rec[:8])):
                payloads[index] = payload
    nxt = max([nxt, *(i + 1 for i in payloads)])  # the header's next is only a hint
    return Ring(first, nxt, dropped, payloads)


def stored(data_dir: Path, device: str) -> list[tuple[str, int]]:
    """(boot, seq) of every stored reading of a device, duplicates included (read-only)."""
    db = sqlite3.connect(f"file:{data_dir / 'telemetry.sqlite3'}?mode=ro", uri=True, timeout=10)
    try:
        rows = db.execute("SELECT boot, seq FROM readings WHERE device = ?", (device,))
        return [(str(b), int(s)) for b, s in rows.fetchall()]
    finally:
        db.close()


@dataclass
class Publisher:
    """A raw MQTT client flooding QoS 1 readings of one boot; records which were PUBACKed."""

    device: str
    boot: str = "b0a7"
    rate: float = 500.0  # readings a second
    window: int = 50
    acked: set[tuple[str, int]] = field(default_factory=set)
    seq: int = 0

    async def run(self, host: str, port: int) -> None:
        """Publishes until the connection dies (the hub is killed) or the task is cancelled."""
        reader, writer = await asyncio.open_connection(host, port)
        inflight: dict[int, int] = {}
        try:
            writer.write(connect_packet(f"pub-{self.device}"))
            head = await reader.readexactly(4)
            assert head[0] >> 4 == CONNACK and head[3] == 0
            topic = f"d/{self.device}/t/temp"
            acks = asyncio.create_task(self._acks(reader, inflight))
            try:
                started, sent = time.monotonic(), 0
                while not acks.done():
                    ahead = sent - (time.monotonic() - started) * self.rate
                    if len(inflight) >= self.window or ahead > 0:
                        await asyncio.sleep(0.002)  # on purpose: the publisher's pace
                        continue
                    pid = self.seq % 65535 + 1
                    payload = f"{self.boot},{self.seq},{self.seq % 100 / 10:.1f}".encode()
                    inflight[pid] = self.seq
                    writer.write(publish_packet(topic, payload, qos=1, pid=pid))
                    self.seq += 1
                    sent += 1
            finally:
                acks.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await acks
        finally:
            writer.transport.abort()

    async def _acks(self, reader: asyncio.StreamReader, inflight: dict[int, int]) -> None:
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
            while True:
                head = await reader.readexactly(4)
                if head[0] >> 4 == PUBACK:
                    seq = inflight.pop(int.from_bytes(head[2:4], "big"), None)
                    if seq is not None:
                        self.acked.add((self.boot, seq))


class Events:
    """Hub events seen by a client subscribed to $hub/events/# (development mode admits it)."""

    def __init__(self, client: RawClient) -> None:
        self.client = client
        self.seen: list[dict[str, Any]] = []
        self._task = asyncio.create_task(self._run())

    @classmethod
    async def watch(cls, host: str, port: int) -> Events:
        client = await RawClient.tcp(host, port)
        await client.connect("events-watcher")
        assert await client.subscribe([("$hub/events/#", 0)]) == [0]
        return cls(client)

    async def _run(self) -> None:
        with contextlib.suppress(Exception):
            while True:
                p = await self.client.recv(timeout=3600)
                if p.kind == 3:
                    self.seen.append(json.loads(decode_publish(p).payload))

    def kinds(self) -> list[str]:
        return [str(e["event"]) for e in self.seen]

    async def wait_for(self, kind: str, timeout: float) -> dict[str, Any]:
        """The first event of this kind, once it has come."""

        def first() -> dict[str, Any] | None:
            found = [event for event in self.seen if event["event"] == kind]
            assert found, f"events so far: {self.kinds()}"
            return found[0]

        event: dict[str, Any] = await eventually_async(first, timeout, f"a {kind} event")
        return event

    async def close(self) -> None:
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        await self.client.close()
