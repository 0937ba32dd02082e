"""Ingest: readings routed by the broker go to storage, in batches written off the event loop."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass

from hub.store import Row, Store
from hub.topics import ContractError, Kind, parse_reading, parse_topic

log = logging.getLogger(__name__)

FLUSH_INTERVAL_S = 0.2
MAX_BATCH = 5000
PRUNE_EVERY_S = 3600.0
TOPIC_CACHE = 100_000  # telemetry topics whose parse is remembered


@dataclass
class IngestStats:
    received: int = 0
    stored: int = 0
    duplicates: int = 0
    malformed: int = 0


class Ingest:
    def __init__(self, store: Store, retention_s: float | None = None) -> None:
        self.store = store
        self.retention_s = retention_s
        self.stats = IngestStats()
        self._pending: list[Row] = []
        self._task: asyncio.Task[None] | None = None
        self._flushed = asyncio.Event()
        self._last_prune = 0.0
        self._last_warning = 0.0
        self._topics: dict[str, tuple[str, str]] = {}  # telemetry topic -> (device, sensor)

    def on_message(self, topic: str, payload: bytes) -> None:
        """Called by the broker for every routed message; cheap, never blocks."""
        key = self._topics.get(topic)
        if key is None:
            if not topic.startswith("d/") or "/t/" not in topic:
                return
            try:
                parsed = parse_topic(topic)
            except ContractError as exc:
                self._malformed(topic, exc)
                return
            if parsed.kind is not Kind.TELEMETRY or parsed.sensor is None:
                return
            if len(self._topics) >= TOPIC_CACHE:
                self._topics.clear()
            key = self._topics[topic] = (parsed.device, parsed.sensor)
        try:
            reading = parse_reading(payload)
        except ContractError as exc:
            self._malformed(topic, exc)
            return
        self.stats.received += 1
        self._pending.append(
            Row(key[0], key[1], reading.boot, reading.seq, reading.value, time.time())
        )

    def _malformed(self, topic: str, exc: ContractError) -> None:
        self.stats.malformed += 1
        now = time.monotonic()
        if now - self._last_warning > 1.0:  # at most one warning a second
            self._last_warning = now
            log.warning("reading on %s not stored: %s", topic, exc)

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(FLUSH_INTERVAL_S)
            await self.flush()
            if self.retention_s and time.monotonic() - self._last_prune > PRUNE_EVERY_S:
                self._last_prune = time.monotonic()
                pruned = await asyncio.to_thread(self.store.prune, self.retention_s)
                if pruned:
                    log.info("pruned %d readings older than the retention period", pruned)

    async def flush(self) -> None:
        while self._pending:
            batch, self._pending = self._pending[:MAX_BATCH], self._pending[MAX_BATCH:]
            new = await asyncio.to_thread(self.store.add, batch)
            self.stats.stored += new
            self.stats.duplicates += len(batch) - new

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        await self.flush()
