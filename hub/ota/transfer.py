"""Serves app updates to devices over MQTT, as the hub itself, one chunk per request.

The device's own messages drive it (``firmware/node/ota.py``): on its reply topic the device
reports ``{"ota": STATE, "v", "tag", "n", "of", "error"}``, and ``downloading`` with ``n`` asks
for chunk ``n``, which the hub publishes (QoS 1) on the device's command topic as
``0x01 | tag (4 bytes) | n (4 bytes, big-endian) | data``. So the hub never sends more than the
device asked for, and a download resumes where the device's staging file ends. The offer (a
JSON ``ota`` command with the manifest) goes when the device comes online with an update that
has not finished, and when one is assigned while it is online. Before anything is sent the
bundle's board must be the one the device reports in its health; the device's first request
names its board and MicroPython (``mp``: release/.mpy), and a mismatch ends the update as
``failed`` before any chunk goes. Each state change is stored (``hub/ota/store.py``) and is a
hub event (``ota_state``).
"""

from __future__ import annotations

import asyncio
import json
import logging
import struct
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hub.ota.bundles import Bundle, BundleError, Bundles, read_chunk
from hub.ota.store import STATES, TERMINAL, OtaStore
from hub.topics import command_topic, reply_device

log = logging.getLogger(__name__)

CHUNK = 1024  # bytes of app per chunk: a few ESP32 heap blocks, one MQTT packet under 1.1 KB
CHUNK_MARK = 0x01
POLL_S = 1.0
OFFER_AGAIN_S = 10.0  # at most one offer per device this often
SAVE_EVERY = 16  # progress is stored every this many chunks (and at every state change)
MAX_REPORT = 512  # bytes of a device's report
# Offered (again) only before the device has the whole download: once it installs, it reports
# by itself (trial, then updated; or rolled_back, failed). A device that is downloading asks for
# its next chunk on every connect by itself; it is offered again only after SILENT_S without a
# request (its staging lost), as an offer costs a device's heap more than a request.
OFFER_STATES = ("offered", "downloading")
SILENT_S = 60.0

Emit = Callable[[str, dict[str, Any]], None]


def chunk_packet(tag: str, index: int, data: bytes) -> bytes:
    return bytes((CHUNK_MARK,)) + bytes.fromhex(tag) + struct.pack(">I", index) + data


def offer_command(bundle: Bundle, tag: str, chunk: int = CHUNK) -> dict[str, Any]:
    return {
        "id": 0,
        "op": "ota",
        "v": bundle.version,
        "tag": tag,
        "board": bundle.board,
        "micropython": bundle.micropython,
        "mpy": bundle.mpy,
        "size": bundle.download_size,
        "msize": len(bundle.manifest_lines()),
        "chunk": chunk,
    }


def parse_report(payload: bytes) -> dict[str, Any] | None:
    """A device's update report, checked, or None (not one, or malformed)."""
    if len(payload) > MAX_REPORT or b'"ota"' not in payload:
        return None
    try:
        raw = json.loads(payload)
    except (ValueError, RecursionError):
        return None
    if not isinstance(raw, dict) or raw.get("ota") not in STATES:
        return None
    tag = raw.get("tag")
    if not isinstance(tag, str) or len(tag) != 8:
        return None
    for key in ("n", "of"):
        value = raw.get(key, 0)
        if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < 1 << 20:
            return None
    error = raw.get("error")
    return {
        "state": raw["ota"],
        "tag": tag,
        "n": raw.get("n", 0),
        "of": raw.get("of", 0),
        "error": str(error)[:200] if error is not None else None,
        "mp": str(raw.get("mp", ""))[:32],
        "board": str(raw.get("board", ""))[:64],
    }


class Transfer:
    def __init__(self, broker: Any, data_dir: Path, states: Any, emit: Emit) -> None:
        self._broker = broker
        self._bundles = Bundles(data_dir)
        self._data_dir = data_dir
        self._states = states
        self._emit = emit
        self.store: OtaStore | None = None
        self.rows: dict[str, dict[str, Any]] = {}
        self._offered: dict[str, float] = {}
        self._asked: dict[str, float] = {}  # device -> when it last asked for a chunk
        self._serving: set[str] = set()
        self._task: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._save_lock = asyncio.Lock()  # stored in the order the states changed

    async def start(self) -> None:
        self.store = await asyncio.to_thread(OtaStore, self._data_dir)
        self.rows = {r["device"]: r for r in await asyncio.to_thread(self.store.all)}
        now = time.monotonic()  # a device that was downloading asks again when it reconnects
        self._asked = {d: now for d, r in self.rows.items() if r["state"] == "downloading"}
        self._task = asyncio.get_running_loop().create_task(self._poll())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.store is not None:
            self.store.close()

    async def _poll(self) -> None:
        """Picks up updates the CLI (or desired state) assigned."""
        assert self.store is not None
        version = await asyncio.to_thread(self.store.data_version)
        while True:
            await asyncio.sleep(POLL_S)
            try:
                latest = await asyncio.to_thread(self.store.data_version)
                if latest == version:
                    continue
                version = latest
                rows = await asyncio.to_thread(self.store.all)
            except Exception as exc:  # a locked or broken database: try again next time
                log.warning("cannot read the update table: %s", exc)
                continue
            for row in rows:
                old = self.rows.get(row["device"])
                if old is None or old["tag"] != row["tag"]:
                    self.rows[row["device"]] = row
                    self._offered.pop(row["device"], None)
                    self._maybe_offer(row["device"])

    def assign(self, device: str, version: str) -> None:
        """A new update for device (from the running hub: rollouts, desired state)."""
        assert self.store is not None
        row = self.store.assign(device, version)
        self.rows[device] = row
        self._offered.pop(device, None)
        self._maybe_offer(device)

    # --- offers ---------------------------------------------------------------------------
    def _online(self, device: str) -> dict[str, Any] | None:
        state = self._states.states.get(device)
        return state if state is not None and state.get("status") == "online" else None

    def _maybe_offer(self, device: str) -> None:
        row = self.rows.get(device)
        state = self._online(device)
        if row is None or row["state"] not in OFFER_STATES or state is None:
            return
        now = time.monotonic()
        if now - self._offered.get(device, -OFFER_AGAIN_S) < OFFER_AGAIN_S:
            return
        if row["state"] == "downloading" and now - self._asked.get(device, -SILENT_S) < SILENT_S:
            return
        try:
            bundle = self._bundles.get(row["version"])
        except BundleError as exc:
            self._set(row, "failed", str(exc))
            return
        board = state.get("board")
        if board is not None and board != bundle.board:
            self._set(
                row,
                "failed",
                f"wrong board: the bundle is for {bundle.board}, {device} is {board}",
            )
            return
        self._offered[device] = now
        payload = json.dumps(offer_command(bundle, row["tag"])).encode()
        self._broker.publish(command_topic(device), payload, qos=1)

    def on_state(self, device: str, what: str, state: dict[str, Any]) -> None:
        """DeviceStates observer: a device's health (sent on every connect) brings the offer."""
        if what in ("health", "status") and device in self.rows:
            if what == "status":
                self._offered.pop(device, None)  # a new connection: offer again (if due)
            self._maybe_offer(device)

    # --- the device's reports ---------------------------------------------------------------
    def on_message(self, topic: str, payload: bytes) -> None:
        device = reply_device(topic)
        if device is None:
            return None
        report = parse_report(payload)
        if report is None:
            return None
        row = self.rows.get(device)
        if row is None or report["tag"] != row["tag"]:
            if report["state"] == "downloading":  # an update the hub no longer serves
                self._cancel(device, report["tag"])
            return None
        if row["state"] in TERMINAL:
            return None
        state = report["state"]
        if state == "downloading":
            self._download(device, row, report)
        else:
            self._set(row, state, report["error"])
        return None

    def _download(self, device: str, row: dict[str, Any], report: dict[str, Any]) -> None:
        try:
            bundle = self._bundles.get(row["version"])
        except BundleError as exc:
            self._set(row, "failed", str(exc))
            return
        if report["mp"] and report["mp"] != f"{bundle.micropython}/{bundle.mpy}":
            self._set(
                row,
                "failed",
                f"wrong MicroPython: the bundle is for {bundle.micropython}"
                f"/{bundle.mpy}, {device} runs {report['mp']}",
            )
            self._cancel(device, row["tag"])
            return
        if report["board"] and report["board"] != bundle.board:
            self._set(
                row,
                "failed",
                f"wrong board: the bundle is for {bundle.board}, {device} is {report['board']}",
            )
            self._cancel(device, row["tag"])
            return
        self._asked[device] = time.monotonic()
        count = (bundle.download_size + CHUNK - 1) // CHUNK
        n = report["n"]
        if n >= count:
            return
        save = row["state"] != "downloading" or n % SAVE_EVERY == 0
        row.update(n=n, of=count)
        if row["state"] != "downloading":
            self._set(row, "downloading", None)
        elif save:
            self._save(row)
        if device in self._serving:
            return  # one chunk at a time per device; it asks again if this one is lost
        self._serving.add(device)
        task = asyncio.get_running_loop().create_task(self._send(device, bundle, row["tag"], n))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _send(self, device: str, bundle: Bundle, tag: str, n: int) -> None:
        try:
            data = await asyncio.to_thread(read_chunk, bundle, n, CHUNK)
            self._broker.publish(command_topic(device), chunk_packet(tag, n, data), qos=1)
        except OSError as exc:
            log.warning("cannot read chunk %d of %s for %s: %s", n, bundle.version, device, exc)
        finally:
            self._serving.discard(device)

    def _cancel(self, device: str, tag: str) -> None:
        payload = json.dumps({"id": 0, "op": "ota", "cancel": True, "tag": tag}).encode()
        self._broker.publish(command_topic(device), payload, qos=1)

    def _set(self, row: dict[str, Any], state: str, error: str | None) -> None:
        if row["state"] == state and row["error"] == error:
            return
        row.update(state=state, error=error)
        self._save(row)
        event = {
            "identity": "device",
            "name": row["device"],
            "version": row["version"],
            "state": state,
            "error": error,
        }
        if state == "downloading":
            event.update(n=row["n"], of=row["of"])
        self._emit("ota_state", event)
        log.info(
            "update of %s to %s: %s%s",
            row["device"],
            row["version"],
            state,
            f" ({error})" if error else "",
        )

    def _save(self, row: dict[str, Any]) -> None:
        row["updated_at"] = time.time()
        if self.store is None:
            return
        task = asyncio.get_running_loop().create_task(self._write(dict(row)))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _write(self, row: dict[str, Any]) -> None:
        assert self.store is not None
        async with self._save_lock:
            try:
                await asyncio.to_thread(self.store.save, row)
            except Exception as exc:
                log.warning("cannot store the update of %s: %s", row["device"], exc)

    def status(self) -> list[dict[str, Any]]:
        return [dict(r) for r in sorted(self.rows.values(), key=lambda r: r["device"])]
