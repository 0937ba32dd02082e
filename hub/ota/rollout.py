"""The rollout engine, in the hub: once a second it reads the active rollouts
(``hub/ota/rollout_store.py``) and each device's update (``hub/ota/store.py``), lets
``hub/ota/rollout_core.decide`` say what happens next, assigns the devices it names through
``OtaStore.assign`` (the transfer, ``hub/ota/transfer.py``, picks each up within a second and
does the rest), stores what changed and publishes each transition as a hub event. Every
database call runs off the event loop. The state is all in the data dir: after a restart the
engine carries on from it (a device's timeout counts from its stored assignment time).

Events (``$hub/events/client/rollout-<id>/info`` for the rollout's own, the device's events
topic for ``rollout_device``): ``rollout_started``, ``rollout_step``, ``rollout_paused``,
``rollout_resumed``, ``rollout_cancelled``, ``rollout_aborted`` (with ``reason``),
``rollout_completed``, and ``rollout_device`` with the device's ``state`` (and ``error``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hub.desired.store import DesiredError, DesiredStore
from hub.ota.bundles import BundleError, Bundles
from hub.ota.rollout_core import (
    ACTIVE,
    PENDING,
    RUNNING,
    Member,
    Rollout,
    decide,
    stage_name,
    stage_sizes,
)
from hub.ota.rollout_store import RolloutStore, as_member, as_rollout
from hub.ota.store import OtaStore

log = logging.getLogger(__name__)

TICK_S = 1.0
Emit = Callable[[str, dict[str, Any]], None]
ANNOUNCE = {
    "running": "rollout_started",
    "paused": "rollout_paused",
    "cancelled": "rollout_cancelled",
    "completed": "rollout_completed",
    "aborted": "rollout_aborted",
}


class RolloutEngine:
    def __init__(self, data_dir: Path, states: Any, emit: Emit) -> None:
        self._data_dir = data_dir
        self._states = states  # hub.devicestate.DeviceStates: each device's reported board
        self._emit = emit
        self._bundles = Bundles(data_dir)
        self.db: RolloutStore | None = None
        self._ota: OtaStore | None = None
        self._registry: Any = None
        self._desired: Any = None  # hub.desired.store.DesiredStore
        self._known: set[str] = set()  # the registry's device ids, as last read
        self._registry_version: int | None = None
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        from hub.registry import Registry

        self.db = await asyncio.to_thread(RolloutStore, self._data_dir)
        self._ota = await asyncio.to_thread(OtaStore, self._data_dir)
        self._registry = await asyncio.to_thread(Registry, self._data_dir)
        try:
            self._desired = await asyncio.to_thread(DesiredStore, self._data_dir)
        except DesiredError as exc:  # rollouts go on; desired state may then fight them
            log.warning("rollouts cannot set the devices' desired app: %s", exc)
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        for part in (self.db, self._ota, self._registry, self._desired):
            if part is not None:
                part.close()

    def wake(self) -> None:
        """Looks at the rollouts now (a user created or changed one)."""
        self._wake.set()

    async def _run(self) -> None:
        while True:
            try:
                await self.tick()
            except Exception:  # a locked database, a bug: logged, tried again next tick
                log.exception("the rollout engine's pass failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), TICK_S)
            self._wake.clear()

    async def tick(self) -> None:
        assert self.db is not None and self._ota is not None
        rows = await asyncio.to_thread(self.db.active)
        if not rows:
            return
        ota = {r["device"]: r for r in await asyncio.to_thread(self._ota.all)}
        for row in rows:
            try:
                await self._advance(row, ota)
            except Exception:  # one rollout's trouble never holds up the others
                log.exception("rollout %s: the engine's pass failed", row.get("id"))

    # --- one rollout --------------------------------------------------------------------------
    async def _advance(self, row: dict[str, Any], ota: dict[str, dict[str, Any]]) -> None:
        assert self.db is not None and self._ota is not None
        rollout = as_rollout(row)
        members = [as_member(m) for m in row["devices"]]
        if row["announced"] != row["status"]:
            self._announce(row, members)
            await asyncio.to_thread(self.db.announce, rollout.id, rollout.status)
        if rollout.status not in ACTIVE:
            return
        try:
            board = (await asyncio.to_thread(self._bundles.get, rollout.version)).board
        except BundleError as exc:
            await self._finish(rollout, "aborted", str(exc))
            return
        refusals = await self._refusals(rollout, members, board)
        states = self._states.states
        current = {
            m.device
            for m in members
            if m.state == PENDING and (states.get(m.device) or {}).get("fw") == rollout.version
        }
        before = {m.device: (m.state, m.error, m.tag) for m in members}
        decision = decide(rollout, members, ota, refusals, time.time(), current)
        by_device = {m.device: m for m in members}
        for device, state, error in decision.changes:
            self._device_event(rollout, device, state, error)
        if decision.step is not None:
            sizes = stage_sizes(len(members), rollout.canary, rollout.steps)
            rollout.step = decision.step
            await asyncio.to_thread(self.db.set_step, rollout.id, decision.step)
            self._emit(
                "rollout_step",
                self._about(
                    rollout,
                    step=decision.step,
                    stage=stage_name(rollout, decision.step),
                    devices=sizes[decision.step],
                ),
            )
        changed = [m for m in members if (m.state, m.error, m.tag) != before[m.device]]
        if changed:
            await asyncio.to_thread(self.db.set_members, rollout.id, changed)
        for device in decision.assign:
            await self._assign(rollout, by_device[device])
        if decision.status is not None:
            await self._finish(rollout, decision.status, decision.reason)

    async def _refusals(
        self, rollout: Rollout, members: list[Member], board: str
    ) -> dict[str, str]:
        """Why a device still pending may not be assigned: another board than the bundle's
        (the board in its health), or a device the hub does not know: neither in its device
        states nor in the registry (whose ids are read again whenever it changes)."""
        pending = [m.device for m in members if m.state == PENDING]
        known: set[str] = set()
        if any(d not in self._states.states for d in pending):
            known = await self._registered()
        out = {}
        for device in pending:
            state = self._states.states.get(device)
            reported = state.get("board") if state is not None else None
            if state is None and device not in known:
                out[device] = "unknown device: not registered and never seen by the hub"
            elif reported is not None and reported != board:
                out[device] = f"wrong board: the bundle is for {board}, {device} is {reported}"
        return out

    async def _registered(self) -> set[str]:
        """The registry's device ids, read again only when the registry has changed."""
        registry = self._registry
        version = await asyncio.to_thread(registry.data_version)
        if version != self._registry_version:
            self._known = await asyncio.to_thread(lambda: {d.id for d in registry.list()})
            self._registry_version = version
        return self._known

    async def _assign(self, rollout: Rollout, member: Member) -> None:
        assert self.db is not None and self._ota is not None
        ota, db, desired = self._ota, self.db, self._desired

        def assign() -> bool:
            if db.status(rollout.id) != RUNNING:  # paused or cancelled since this pass began
                return False
            row = ota.assign(member.device, rollout.version)
            member.state, member.error = str(row["state"]), None
            member.tag, member.assigned_at = str(row["tag"]), float(row["created_at"])
            db.set_members(rollout.id, [member])
            if desired is not None:  # desired state's app for the device: no fight with it
                try:
                    desired.set_device_app(member.device, rollout.version, f"rollout {rollout.id}")
                except Exception as exc:
                    log.warning("cannot set the desired app of %s: %s", member.device, exc)
            return True

        if await asyncio.to_thread(assign):
            self._device_event(rollout, member.device, member.state, None)

    async def _finish(self, rollout: Rollout, status: str, reason: str | None) -> None:
        assert self.db is not None
        if await asyncio.to_thread(self.db.finish, rollout.id, status, reason):
            rollout.status, rollout.reason = status, reason
            self._emit(ANNOUNCE[status], self._about(rollout, reason=reason))
            log.info(
                "rollout %d of %s %s%s",
                rollout.id,
                rollout.version,
                status,
                f": {reason}" if reason else "",
            )

    # --- events -------------------------------------------------------------------------------
    def _about(self, rollout: Rollout, **fields: Any) -> dict[str, Any]:
        return {
            "client_id": f"rollout-{rollout.id}",
            "rollout": rollout.id,
            "version": rollout.version,
            **fields,
        }

    def _announce(self, row: dict[str, Any], members: list[Member]) -> None:
        """A status someone else set (created, paused, resumed, cancelled), or one whose event
        a stopped hub did not publish; a rollout never announced is started first."""
        status, announced = row["status"], row["announced"]
        rollout = as_rollout(row)
        kinds = []
        if announced is None:
            kinds.append("rollout_started")
        if status == "running" and announced is not None:
            kinds.append("rollout_resumed")
        elif status != "running" and status in ANNOUNCE:
            kinds.append(ANNOUNCE[status])
        for kind in kinds:
            fields: dict[str, Any] = {"by": row["by"], "reason": row["reason"]}
            if kind == "rollout_started":
                fields.update(
                    target=row["target"],
                    devices=len(members),
                    canary=rollout.canary,
                    steps=",".join(f"{s}%" for s in rollout.steps),
                    max_per_minute=rollout.max_per_minute,
                    abort_failed_pct=rollout.abort_failed_pct,
                    timeout_per_device=rollout.timeout_s,
                )
            self._emit(kind, self._about(rollout, **fields))
            log.info("rollout %d of %s: %s", rollout.id, rollout.version, kind)

    def _device_event(self, rollout: Rollout, device: str, state: str, error: str | None) -> None:
        self._emit(
            "rollout_device",
            {
                "identity": "device",
                "name": device,
                "rollout": rollout.id,
                "version": rollout.version,
                "state": state,
                "error": error,
            },
        )
