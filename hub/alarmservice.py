"""Runs the alarm logic (hub/alarms.py) in the hub: loads rules and alarms at start, feeds it
device state changes and a periodic tick, picks up rules and acknowledgements the CLI wrote to
the store, and reports each change as a hub event and in the device's history."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

from hub.alarms import Alarms
from hub.devicestate import DeviceStates
from hub.recorder import Recorder
from hub.store import SqlHistory

log = logging.getLogger(__name__)

TICK_S = 5.0
Report = Any  # HubEvents: (kind, event) -> None


class AlarmService:
    def __init__(
        self,
        store: SqlHistory,
        recorder: Recorder,
        states: DeviceStates,
        report: Report,
        tick_s: float = TICK_S,
    ) -> None:
        self._store = store
        self._states = states
        self._report = report
        self._tick_s = tick_s
        self.alarms = Alarms(self._emit, recorder.alarm)
        self._task: asyncio.Task[None] | None = None

    def _emit(self, kind: str, alarm: dict[str, Any]) -> None:
        device = alarm["device"]
        event = {
            "kind": kind,
            "identity": "device",
            "name": device,
            "client_id": device,
            "alarm": alarm["id"],
            "rule": alarm["rule"],
            "rule_name": alarm["rule_name"],
            "value": alarm["value"],
            "by": alarm.get("by"),
            "detail": f"{alarm['kind']} {alarm['rule_name']}",
        }
        self._report(kind, event)
        self._states.record_event(device, kind, event, time.time())

    async def start(self) -> None:
        self.alarms.set_rules(await asyncio.to_thread(self._store.alarm_rules))
        self.alarms.load(await asyncio.to_thread(self._store.alarms))
        self._states.observers.append(self.alarms.on_state)
        self._states.reading_observers.append(self.alarms.on_reading)
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def refresh(self) -> None:
        """Rules and acknowledgements as the store has them (the CLI writes there too)."""
        self.alarms.set_rules(await asyncio.to_thread(self._store.alarm_rules))
        waiting = [a["id"] for a in self.alarms.listing(True) if a["acknowledged_by"] is None]
        if waiting:
            for ack in await asyncio.to_thread(self._store.alarm_acks, waiting[:500]):
                with contextlib.suppress(KeyError):  # gone meanwhile
                    self.alarms.acknowledge(*ack)

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._tick_s)
            try:
                await self.refresh()
            except Exception as exc:
                log.warning("could not read alarm rules: %s", str(exc).strip()[:300])
            self.alarms.tick(self._states.states)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
