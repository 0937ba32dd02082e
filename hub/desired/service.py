"""Sends each device the difference between its desired state and what it reported.

The delta goes when the device comes online (a sleeping device's wake is an ``online`` after
``asleep``), once its health has named its board (board groups), and when its desired state
changes while it is online. Settings go as the existing ``settings`` command (hub/commands.py,
``by`` "desired"), which the firmware applies with its trial and rollback and answers after
its reboot: ``ok`` makes those values the device's reported settings (``desired_applied``);
an error (refused, or rolled back) is ``desired_failed`` with the device's reason, and the
same values are not sent again until the desired state changes (no retry loop). One settings
command per device is in flight at a time; one sent on an earlier connection and still
unanswered ``REPLY_WAIT_S`` after the device is back was lost, and goes again.

``app`` becomes an app update through ``OtaStore.assign`` (its own connection: the running
transfer, hub/ota/transfer.py, picks it up within a second), unless an update of the device is
in progress, or one to that version failed or rolled back (``desired_failed`` once, never
assigned again for the same desired version). The device's health ``fw`` is its reported
app; ``desired_applied`` once it matches.

The documents live in hub/desired/store.py; this service keeps a snapshot in memory, read
again when another process (the CLI) changes the file (``PRAGMA data_version``) or the API
wrote it (``refresh``). Each device whose effective desired state changed is a
``desired_changed`` event. Database work runs in threads, one write at a time.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hub.commands import CommandRefused, Commands
from hub.desired.document import delta
from hub.desired.store import DesiredStore, Snapshot, empty_reported
from hub.ota.store import TERMINAL, OtaStore
from hub.topics import reply_device

log = logging.getLogger(__name__)

POLL_S = 1.0
REPLY_WAIT_S = 10.0  # after the device is back, for the answer to a settings command
COMMAND_TTL_S = 86400.0  # a sleeping device answers at its next wake
MAX_REPLY = 4096
APP_FAILED = ("failed", "rolled_back")

Emit = Callable[[str, dict[str, Any]], None]


class DesiredService:
    def __init__(
        self, data_dir: Path, states: Any, commands: Commands, transfer: Any, emit: Emit
    ) -> None:
        self._data_dir = data_dir
        self._states = states
        self._commands = commands
        self._transfer = transfer
        self._emit = emit
        self.store: DesiredStore | None = None
        self._ota: OtaStore | None = None
        self.snap = Snapshot([], {}, {}, {})
        self._effective: dict[str, dict[str, Any]] = {}
        self._online_at: dict[str, float] = {}  # device -> when its current connection began
        self._assigning: set[str] = set()
        self._sent_on: dict[str, float] = {}  # device -> _online_at when its command went
        self._open: set[str] = set()  # devices with a settings command or an update open
        self._task: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._refresh_lock = asyncio.Lock()
        self._write_lock = asyncio.Lock()  # rows stored in the order they changed

    # --- life -------------------------------------------------------------------------------
    async def start(self) -> None:
        self.store = await asyncio.to_thread(DesiredStore, self._data_dir)
        self._ota = await asyncio.to_thread(OtaStore, self._data_dir)
        self.snap = await asyncio.to_thread(self.store.snapshot)
        self._open = {
            d
            for d, r in self.snap.reported.items()
            if r["outcome"].get("state") == "pending" or r["outcome"].get("app_pending")
        }
        # The boards and firmware the hub knew before (the device-state table) seed the rows.
        seeded = []
        for device, state in self._states.states.items():
            row = self.snap.reported.get(device) or empty_reported(device)
            if state.get("board") and (row["board"], row["fw"]) != (state["board"], state["fw"]):
                row.update(board=state["board"], fw=state["fw"], updated_at=time.time())
                self.snap.reported[device] = row
                seeded.append(dict(row))
        if seeded:
            await asyncio.to_thread(self.store.save_reported, seeded)
        self._effective = {d: self.snap.effective(d)[0] for d in self._devices()}
        self._task = asyncio.get_running_loop().create_task(self._poll())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        for one in (self.store, self._ota):
            if one is not None:
                one.close()

    def _devices(self) -> set[str]:
        """Every device a document or a group may reach."""
        found = {name for scope, name in self.snap.docs if scope == "device"}
        found.update(self.snap.labels)
        found.update(self.snap.reported)
        for group in self.snap.groups:
            if group.kind == "devices":
                found.update(group.value)
        return found

    async def _poll(self) -> None:
        assert self.store is not None
        version = await asyncio.to_thread(self.store.data_version)
        while True:
            await asyncio.sleep(POLL_S)
            try:
                latest = await asyncio.to_thread(self.store.data_version)
                if latest != version:
                    version = latest
                    await self.refresh("cli")
            except Exception as exc:  # a locked or broken database: next time
                log.warning("cannot read the desired state: %s", exc)
            self._check_pending(time.monotonic())

    async def refresh(self, by: str) -> None:
        """Reads the documents again; each device whose desired state changed gets an event
        and, if online, its delta."""
        assert self.store is not None
        async with self._refresh_lock:
            fresh = await asyncio.to_thread(self.store.snapshot)
            # What devices reported is this service's own (only it writes those rows, some
            # perhaps not yet): the rows in memory stay.
            fresh.reported.update(self.snap.reported)
            before_docs, self.snap = self.snap.docs, fresh
            moved = {k: d for k, d in fresh.docs.items() if before_docs.get(k) != d}
            for device in sorted(self._devices() | self._effective.keys()):
                desired, _ = self.snap.effective(device)
                before = self._effective.get(device, {})
                if desired == before:
                    continue
                self._effective[device] = desired
                changed = sorted(
                    k for k in desired.keys() | before.keys() if desired.get(k) != before.get(k)
                )
                own = self.snap.docs.get(("device", device))
                self._emit(
                    "desired_changed",
                    {
                        "identity": "device",
                        "name": device,
                        "keys": ",".join(changed)[:300],
                        "version": own.version if own else 0,
                        "by": _who(device, fresh, moved, by)[:64],
                    },
                )
                row = self._row(device)
                outcome = row["outcome"]
                if "app" in changed and outcome.get("app_failed"):
                    outcome.pop("app_failed", None)  # a new desired app: it may be tried
                    self._save(row)
                failed = outcome.get("state") == "failed"
                if failed and set(changed) & set(outcome.get("sent") or {}):
                    outcome["state"] = "superseded"  # new values: they may be tried
                    self._save(row)
                self.evaluate(device)

    # --- the state of one device ------------------------------------------------------------
    def _row(self, device: str) -> dict[str, Any]:
        row = self.snap.reported.get(device)
        if row is None:
            row = self.snap.reported[device] = empty_reported(device)
        return row

    def state(self, device: str) -> dict[str, Any]:
        """Desired (with where each key comes from), reported and the delta, for the API."""
        desired, sources = self.snap.effective(device)
        row = self.snap.reported.get(device) or empty_reported(device)
        own = self.snap.docs.get(("device", device))
        return {
            "device": device,
            "desired": desired,
            "sources": sources,
            "version": own.version if own else 0,
            "groups": [g.name for g in self.snap.groups_of(device)],
            "reported": {
                "fw": row["fw"],
                "board": row["board"],
                "settings": row["settings"],
                "updated_at": row["updated_at"],
            },
            "outcome": row["outcome"],
            "delta": delta(desired, row["settings"], row["fw"]),
        }

    def _online(self, device: str) -> bool:
        state = self._states.states.get(device)
        return state is not None and state.get("status") == "online"

    def evaluate(self, device: str) -> None:
        """Sends what the device lacks, if it is online and nothing is in flight."""
        if not self._online(device):
            return
        row = self._row(device)
        if row["board"] is None:
            return  # board groups need its health's board: evaluated again when it comes
        desired = self._effective.get(device)
        if desired is None:
            desired = self._effective[device] = self.snap.effective(device)[0]
        wanted = delta(desired, row["settings"], row["fw"])
        app = wanted.pop("app", None)
        outcome = row["outcome"]
        if wanted and outcome.get("state") != "pending":
            if outcome.get("state") == "failed" and outcome.get("sent") == wanted:
                pass  # failed with exactly these values: not again until they change
            else:
                self._send(device, row, wanted)
        if app is not None:
            self._update_app(device, row, app)

    def _send(self, device: str, row: dict[str, Any], wanted: dict[str, Any]) -> None:
        try:
            record = self._commands.create(
                device, {"op": "settings", "set": wanted}, "desired", COMMAND_TTL_S, True
            )
        except CommandRefused as exc:
            log.warning("desired settings for %s not sent: %s", device, exc)
            return
        row["outcome"] = {
            **{k: v for k, v in row["outcome"].items() if k.startswith("app_")},
            "state": "pending",
            "command": record["id"],
            "sent": wanted,
            "sent_at": time.time(),
        }
        self._sent_on[device] = self._online_at.get(device, 0.0)
        self._save(row)
        log.info("desired settings sent to %s: %s", device, ", ".join(sorted(wanted)))

    def _update_app(self, device: str, row: dict[str, Any], app: str) -> None:
        outcome = row["outcome"]
        if outcome.get("app_failed") == app or device in self._assigning:
            return
        update = self._transfer.rows.get(device)
        if update is not None and update["state"] not in TERMINAL:
            return  # an update is under way (this one, or a rollout's): not another
        if update is not None and update["version"] == app and update["state"] in APP_FAILED:
            self._app_failed(device, row, app, update)
            return
        if outcome.get("app_pending") == app and update is not None and update["version"] == app:
            return  # assigned, and the device has not reported it yet
        self._assigning.add(device)
        outcome["app_pending"] = app
        self._save(row)
        self._spawn(self._assign(device, app))

    async def _assign(self, device: str, app: str) -> None:
        assert self._ota is not None
        try:
            if await asyncio.to_thread(self._assign_if_free, device, app):
                log.info("desired app %s assigned to %s", app, device)
        except Exception as exc:
            log.warning("cannot assign app %s to %s: %s", app, device, exc)
        finally:
            self._assigning.discard(device)

    def _assign_if_free(self, device: str, app: str) -> bool:
        """Assigns unless the stored update (which the transfer may not have read yet: a
        rollout's, say) is under way, or is this version already (blocking)."""
        assert self._ota is not None
        current = self._ota.get(device)
        if current is not None and (
            current["state"] not in TERMINAL
            or (current["version"] == app and current["state"] != "cancelled")
        ):
            return False
        self._ota.assign(device, app)
        return True

    def _app_failed(
        self, device: str, row: dict[str, Any], app: str, update: dict[str, Any]
    ) -> None:
        outcome = row["outcome"]
        outcome.pop("app_pending", None)
        outcome["app_failed"] = app
        self._save(row)
        reason = f"app {app}: {update['state']}"
        if update.get("error"):
            reason += f": {update['error']}"
        self._emit(
            "desired_failed",
            {"identity": "device", "name": device, "keys": "app", "reason": reason[:300]},
        )

    def _check_pending(self, now: float) -> None:
        """Answers the hub recorded but this service missed are taken; lost settings
        commands go again; app updates that failed are reported."""
        for device in list(self._open):
            row = self._row(device)
            outcome = row["outcome"]
            if outcome.get("state") == "pending" and self._online(device):
                command = self._commands.get(outcome.get("command", -1))
                if command is not None and command["status"] == "replied":
                    self._answered(device, row, command["reply"])
                    continue
                back = self._online_at.get(device, now)
                lost = command is None or command["status"] != "pending"
                earlier = self._sent_on.get(device, -1.0) < back
                if lost or (earlier and now - back >= REPLY_WAIT_S):
                    outcome["state"] = "lost"
                    self._save(row)
                    self.evaluate(device)
            self._settle_app(device, row)

    def _settle_app(self, device: str, row: dict[str, Any]) -> None:
        """An assigned app is applied once its update is ``updated`` and the device's health
        names it (a trial may still roll back), failed once the update failed or rolled back."""
        outcome = row["outcome"]
        app = outcome.get("app_pending")
        if app is None or device in self._assigning:
            return
        update = self._transfer.rows.get(device)
        mine = update is not None and update["version"] == app
        if mine and update["state"] in APP_FAILED:
            self._app_failed(device, row, app, update)
        elif row["fw"] == app and (not mine or update["state"] == "updated"):
            outcome.pop("app_pending", None)
            self._save(row)
            self._emit(
                "desired_applied",
                {"identity": "device", "name": device, "keys": "app", "app": app},
            )

    def _lost_unless_answered(self, device: str, back: float) -> None:
        """A sleeping device answers a settings command right after the ``online`` of the
        wake that follows it: one sent before this wake and still unanswered when the
        device sleeps again never arrived (it goes at the next wake)."""
        row = self.snap.reported.get(device)
        if row is None or row["outcome"].get("state") != "pending":
            return
        if self._sent_on.get(device, -1.0) < back:
            row["outcome"]["state"] = "lost"
            self._save(row)

    # --- what the device says ---------------------------------------------------------------
    def on_state(self, device: str, what: str, state: dict[str, Any]) -> None:
        """DeviceStates observer: a connection's ``online``, and health (board and fw)."""
        if what == "status":
            if state.get("status") == "online":
                self._online_at[device] = time.monotonic()
                row = self.snap.reported.get(device)
                if row is not None and row["board"] is not None:
                    self.evaluate(device)  # board groups known; else at its health
            else:
                back = self._online_at.pop(device, None)
                if state.get("status") == "asleep" and back is not None:
                    self._lost_unless_answered(device, back)
            return
        if what != "health":
            return
        row = self._row(device)
        board, fw = state.get("board"), state.get("fw")
        if (row["board"], row["fw"]) != (board, fw):
            board_changed = row["board"] != board
            row.update(board=board, fw=fw)
            self._save(row)
            self._settle_app(device, row)
            if board_changed:
                self._effective[device] = self.snap.effective(device)[0]
        self.evaluate(device)

    def on_message(self, topic: str, payload: bytes) -> None:
        """The answer to a settings command this service sent (on d/<id>/r)."""
        device = reply_device(topic)
        if device is None or len(payload) > MAX_REPLY:
            return None
        row = self.snap.reported.get(device)
        if row is None or row["outcome"].get("state") != "pending":
            return None
        try:
            reply = json.loads(payload)
        except (ValueError, RecursionError):
            return None
        if not isinstance(reply, dict) or reply.get("id") != row["outcome"].get("command"):
            return None
        self._answered(device, row, reply)
        return None

    def _answered(self, device: str, row: dict[str, Any], reply: dict[str, Any]) -> None:
        outcome = row["outcome"]
        sent = outcome.get("sent") or {}
        keys = ",".join(sorted(sent))[:300]
        if reply.get("ok") is True:
            row["settings"] = {**row["settings"], **sent}
            outcome.update(state="applied", at=time.time())
            outcome.pop("error", None)
            self._emit("desired_applied", {"identity": "device", "name": device, "keys": keys})
        else:
            reason = str(reply.get("error") or "refused")[:300]
            outcome.update(state="failed", error=reason, at=time.time())
            self._emit(
                "desired_failed",
                {"identity": "device", "name": device, "keys": keys, "reason": reason},
            )
        self._save(row)
        self.evaluate(device)

    # --- writes -----------------------------------------------------------------------------
    def _save(self, row: dict[str, Any]) -> None:
        row["updated_at"] = time.time()
        outcome = row["outcome"]
        if outcome.get("state") == "pending" or outcome.get("app_pending"):
            self._open.add(row["device"])
        else:
            self._open.discard(row["device"])
        if self.store is not None:
            self._spawn(self._write(json.loads(json.dumps(row))))

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _write(self, row: dict[str, Any]) -> None:
        assert self.store is not None
        async with self._write_lock:
            try:
                await asyncio.to_thread(self.store.save_reported, [row])
            except Exception as exc:
                log.warning("cannot store the reported state of %s: %s", row["device"], exc)


def _who(device: str, snap: Snapshot, moved: dict[tuple[str, str], Any], by: str) -> str:
    """Who changed the device's desired state: the writer of its own document or of one of its
    groups' documents that changed, else ``by``."""
    own = moved.get(("device", device))
    if own is not None and own.updated_by:
        return str(own.updated_by)
    for group in snap.groups_of(device):
        doc = moved.get(("group", group.name))
        if doc is not None and doc.updated_by:
            return str(doc.updated_by)
    return by
