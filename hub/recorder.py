"""Writes the console's records (device state, health, events, commands, alarms) to the store
in batches, off the event loop: whatever was noted during one write goes into the next.

A batch that fails is kept and merged into the next one (device state and commands by key, so
only the newest counts), within a bound on the rows it holds; the log says so once a minute.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Protocol

from hub.history import Records

log = logging.getLogger(__name__)

FLUSH_EVERY_S = 1.0
MAX_HELD = 200_000  # health and event rows held while the store fails; older ones are dropped
WARN_EVERY_S = 60.0


class RecordsStore(Protocol):
    def save_records(self, records: Records) -> None: ...


class Recorder:
    def __init__(self, store: RecordsStore, every_s: float = FLUSH_EVERY_S) -> None:
        self._store = store
        self._every_s = every_s
        self.pending = Records()
        self._task: asyncio.Task[None] | None = None
        self._warned = -WARN_EVERY_S
        self.dropped = 0

    # --- noting (on the event loop, cheap) ---------------------------------------------------
    def state(self, device: str, state: dict[str, Any] | None) -> None:
        self.pending.states[device] = state

    def health(self, row: tuple[str, float, Any, Any, Any, Any]) -> None:
        if self._room():
            self.pending.health.append(row)

    def event(self, device: str, at: float, event: str, detail: str) -> None:
        if self._room():
            self.pending.events.append((device, at, event, detail))

    def command(self, command: dict[str, Any]) -> None:
        self.pending.commands[command["id"]] = dict(command)

    def alarm(self, alarm: dict[str, Any]) -> None:
        self.pending.alarms[alarm["id"]] = dict(alarm)

    def _room(self) -> bool:
        if len(self.pending.health) + len(self.pending.events) < MAX_HELD:
            return True
        self.dropped += 1
        return False

    # --- writing ----------------------------------------------------------------------------
    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._every_s)
            await self.flush()

    async def flush(self) -> None:
        batch, self.pending = self.pending, Records()
        if not batch:
            return
        try:
            await asyncio.to_thread(self._store.save_records, batch)
        except Exception as exc:  # a store failure: keep the batch and retry
            batch.merge(self.pending)
            held = len(batch.health) + len(batch.events)
            if held > MAX_HELD:  # the oldest history rows go first
                self.dropped += held - MAX_HELD
                del batch.health[: max(0, len(batch.health) - MAX_HELD // 2)]
                del batch.events[: max(0, len(batch.events) - MAX_HELD // 2)]
            self.pending = batch
            now = time.monotonic()
            if now - self._warned >= WARN_EVERY_S:
                self._warned = now
                log.warning(
                    "could not write device state and history (kept for a retry): %s",
                    str(exc).strip()[:300],
                )

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        await self.flush()
