"""Ingest: readings routed by the broker go to storage through a group-commit log.

``on_message`` returns the commit handle of a reading it will store (hub/commitlog.py), and
the broker acknowledges the reading once that handle has committed: acknowledged means stored.
When the store fails the log refuses readings (not acknowledged, so devices keep them and
resend), a ``store_failure`` hub event goes out (then at most every FAILURE_EVENT_EVERY_S while
it lasts) and ``store_recovered`` when it ends. Free space of the data dir's filesystem is
checked every DISK_CHECK_S; below the threshold a ``disk_low`` event warns before it is full.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hub.commitlog import REFUSED, Batch, CommitLog
from hub.config import parse_disk_threshold
from hub.store import RowTuple, Store, row_error
from hub.topics import ContractError, Kind, maybe_telemetry, parse_reading, parse_topic

log = logging.getLogger(__name__)
_time = time.time  # stamps every reading

PRUNE_EVERY_S = 3600.0
TOPIC_CACHE = 100_000  # telemetry topics whose parse is remembered
ROW_OVERHEAD = 200  # bytes a pending row costs beyond its strings (tuple, float, ints)
MAX_PENDING_BYTES = 64 * 1024 * 1024
FAILURE_EVENT_EVERY_S = 60.0
# Readings nobody waits on (QoS 0: no acknowledgement) are committed together, up to this long
# after they arrive; a QoS 1/2 reading's commit starts at once (hub/commitlog.py, quiet_s).
QUIET_COMMIT_S = 0.1
# Readings someone waits on (QoS 1/2) are committed at most every COMMIT_LINGER_S under load,
# or once COMMIT_LINGER_ROWS wait: a commit costs ~0.8 ms of CPU whatever it holds
# (BENCHMARKS.md, Session 5), so a batch of a few readings each time the previous commit ends
# costs more than the readings themselves. An idle hub commits a lone reading at once
# (hub/commitlog.py, linger_s). COMMIT_LINGER_ROWS is above what 20 ms holds at the reference
# bench's 16,000 QoS 1 readings/s (320): there the time sets the batch (BENCHMARKS.md, session 6:
# a row costs 5.6 us of the writer's CPU in commits of 256, 5.0 in commits of 512).
COMMIT_LINGER_S = 0.02
COMMIT_LINGER_ROWS = 512
DISK_CHECK_S = 5.0
DISK_EVENT_EVERY_S = 600.0
HUB_ID = "hub"  # the client id hub-level events carry: $hub/events/client/hub/<severity>

REJECTED_MEMORY = 10_000  # readings the store rejected, answered at once when they come again
DEAD_LETTERS = "rejected-readings.jsonl"  # in the data dir: readings the store refused
MAX_DEAD_LETTER_BYTES = 16 * 1024 * 1024  # past it, rejected readings are not acknowledged
Report = Callable[[str, dict[str, Any]], None]
# (device, sensor, boot, value, received_at) of every reading taken: the device state's feed.
OnReading = Callable[[str, str, str, float, float], None]


@dataclass
class IngestStats:
    received: int = 0
    stored: int = 0
    duplicates: int = 0
    malformed: int = 0
    refused: int = 0  # readings not taken (store failing, or the pending bound reached)
    rejected: int = 0  # readings the store refused on their own (dropped, never acknowledged)
    pending: int = 0
    store_failing: bool = False
    store_failures: int = 0  # outages so far
    disk_free_bytes: int | None = None
    disk_total_bytes: int | None = None


class Ingest:
    def __init__(
        self,
        store: Store,
        retention_s: float | None = None,
        *,
        data_dir: Path | None = None,
        report: Report | None = None,
        max_pending: int = 100_000,
        disk_low: str = "5%",
        retry_max_s: float = 5.0,
    ) -> None:
        self.store = store
        self.retention_s = retention_s
        self.data_dir = data_dir
        self.stats = IngestStats()
        self._report = report
        self._disk_fraction, self._disk_bytes = parse_disk_threshold(disk_low)
        self.log: CommitLog[RowTuple] = CommitLog(
            self._write,
            max_rows=max_pending,
            max_bytes=MAX_PENDING_BYTES,
            retry_max_s=retry_max_s,
            on_failure=self._store_failed,
            on_recovered=self._store_recovered,
            rejects=lambda exc: row_error(store, exc),
            on_rejected=self._rejected_row,
            dead_letter=self._write_dead_letters if data_dir is not None else None,
            probe=getattr(store, "probe", None),
            quiet_s=QUIET_COMMIT_S,
            linger_s=COMMIT_LINGER_S,
            linger_rows=COMMIT_LINGER_ROWS,
            name="ingest",
        )
        self.on_reading: OnReading | None = None  # the device state (hub/devicestate.py)
        self._task: asyncio.Task[None] | None = None
        self._last_prune = 0.0
        self._last_warning = 0.0
        self._last_full_warning = -FAILURE_EVENT_EVERY_S
        self._failed_since = 0.0
        self._failure_reported = 0.0
        self._disk_reported = -DISK_EVENT_EVERY_S
        self._disk_check: asyncio.Task[None] | None = None
        self._topics: dict[str, tuple[str, str]] = {}  # telemetry topic -> (device, sensor)
        # (device, boot, seq) -> kept in the dead letters, oldest first
        self._rejected: dict[tuple[str, str, int], bool] = {}
        self._kept: set[tuple[str, str, int]] = set()  # what the last dead-letter write kept
        self._rejected_reported = -FAILURE_EVENT_EVERY_S
        self._rejected_unreported = 0

    def on_message(self, topic: str, payload: bytes) -> Batch | None:
        """Called by the broker for every routed message; cheap, never blocks. Returns the
        commit handle of a reading to store (REFUSED if it cannot be taken now), else None.
        The reading, parsed once here, also goes to ``on_reading`` (the device state)."""
        key = self._topics.get(topic)
        if key is None:
            if not maybe_telemetry(topic):
                return None
            try:
                parsed = parse_topic(topic)
            except ContractError as exc:
                self._malformed(topic, exc)
                return None
            if parsed.kind is not Kind.TELEMETRY or parsed.sensor is None:
                return None
            if len(self._topics) >= TOPIC_CACHE:
                self._topics.clear()
            key = self._topics[topic] = (parsed.device, parsed.sensor)
        try:
            boot, seq, value = parse_reading(payload)
        except ContractError as exc:
            self._malformed(topic, exc)
            return None
        self.stats.received += 1
        device, sensor = key
        now = _time()
        rejected = self._rejected.get((device, boot, seq)) if self._rejected else None
        if rejected is not None:  # the store rejected it before: kept (acknowledged) or not
            handle = None if rejected else REFUSED
        else:
            handle = self.log.append(
                (device, sensor, boot, seq, value, now), ROW_OVERHEAD + len(topic) + len(payload)
            )
            if handle is REFUSED and not self.log.failing:
                self._queue_full()
        on_reading = self.on_reading
        if on_reading is not None:
            on_reading(device, sensor, boot, value, now)
        return handle

    def _queue_full(self) -> None:
        now = time.monotonic()
        if now - self._last_full_warning >= FAILURE_EVENT_EVERY_S:
            self._last_full_warning = now
            log.warning(
                "%d readings wait for a commit (the --store-queue bound): new readings "
                "are not acknowledged until the store catches up",
                self.log.pending_rows,
            )

    def _malformed(self, topic: str, exc: ContractError) -> None:
        self.stats.malformed += 1
        now = time.monotonic()
        if now - self._last_warning > 1.0:  # at most one warning a second
            self._last_warning = now
            log.warning("reading on %s not stored: %s", topic, exc)

    def _write(self, rows: list[RowTuple]) -> None:
        """On the log's thread: one transaction per batch."""
        new = self.store.add(rows)
        self.stats.stored += new
        self.stats.duplicates += len(rows) - new

    def _write_dead_letters(self, rejected: list[tuple[RowTuple, Exception]]) -> None:
        """On the log's thread: appends the readings the store refused to DEAD_LETTERS (one
        JSON line each, synced), so they are kept and may be acknowledged. Raises when the file
        is past MAX_DEAD_LETTER_BYTES: then they are dropped and not acknowledged."""
        assert self.data_dir is not None
        path = self.data_dir / DEAD_LETTERS
        if path.exists() and path.stat().st_size >= MAX_DEAD_LETTER_BYTES:
            raise OSError(
                f"{path} holds {MAX_DEAD_LETTER_BYTES} bytes: move it away to keep "
                "more rejected readings"
            )
        lines = []
        for (device, sensor, boot, seq, value, received_at), exc in rejected:
            why = (str(exc).strip().splitlines() or ["no message"])[0][:200]
            lines.append(
                json.dumps(
                    {
                        "device": device,
                        "sensor": sensor,
                        "boot": boot,
                        "seq": seq,
                        "value": value,
                        "received_at": received_at,
                        "error": f"{type(exc).__name__}: {why}",
                    }
                )
                + "\n"
            )
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, "".join(lines).encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        self._kept = {(row[0], row[2], row[3]) for row, _ in rejected}

    def _rejected_row(self, row: RowTuple, exc: Exception) -> None:
        """The store refused this one reading (the rest of its batch is stored). Kept in the
        data dir's DEAD_LETTERS, it is acknowledged (and so is a resend of it); otherwise it
        is dropped and never acknowledged. A ``store_rejected`` event (and log line) at most
        every FAILURE_EVENT_EVERY_S."""
        self.stats.rejected += 1
        key = (row[0], row[2], row[3])
        kept = key in self._kept
        self._rejected[key] = kept
        if len(self._rejected) > REJECTED_MEMORY:
            del self._rejected[next(iter(self._rejected))]
        self._rejected_unreported += 1
        now = time.monotonic()
        if now - self._rejected_reported < FAILURE_EVENT_EVERY_S:
            return
        self._rejected_reported = now
        count, self._rejected_unreported = self._rejected_unreported, 0
        text = str(exc).strip().splitlines()
        why = f"{type(exc).__name__}: {text[0][:200] if text else 'no message'}"
        detail = f"reading {row[2]},{row[3]} of {row[0]}/{row[1]} rejected by the store ({why})"
        fate = f"kept in {DEAD_LETTERS}" if kept else "dropped, not acknowledged"
        log.warning("%s: %s (%d readings rejected since the last report)", detail, fate, count)
        self._emit(
            "store_rejected",
            f"{detail}: {fate}",
            device=row[0],
            sensor=row[1],
            count=count,
            kept=kept,
        )

    # --- store failures and disk space ------------------------------------------------------
    def _emit(self, kind: str, detail: str, **extra: Any) -> None:
        if self._report is None:
            return
        event = {
            "kind": kind,
            "client_id": HUB_ID,
            "identity": None,
            "name": None,
            "detail": detail,
            **extra,
        }
        try:
            self._report(kind, event)
        except Exception:
            log.exception("could not report %s", kind)

    def _store_failed(self, exc: BaseException, first: bool) -> None:
        now = time.monotonic()
        text = str(exc).strip().splitlines()
        detail = f"{type(exc).__name__}: {text[0][:300] if text else 'no message'}"
        if first:
            self._failed_since = now
            self.stats.store_failures += 1
            # A full disk is the usual cause: say so now rather than at the next check.
            self._disk_check = asyncio.get_running_loop().create_task(self.check_disk())
        elif now - self._failure_reported < FAILURE_EVENT_EVERY_S:
            return
        self._failure_reported = now
        pending = self.log.pending_rows
        log.error(
            "telemetry store failing (%s): readings are not acknowledged until it "
            "recovers; %d readings held for a retry",
            detail,
            pending,
        )
        self._emit(
            "store_failure", detail, pending=pending, seconds=round(now - self._failed_since, 1)
        )

    def _store_recovered(self) -> None:
        took = time.monotonic() - self._failed_since
        log.warning("telemetry store recovered after %.1f s: acknowledging readings again", took)
        self._emit("store_recovered", f"after {took:.1f} s", seconds=round(took, 1))

    async def check_disk(self) -> None:
        if self.data_dir is None:
            return
        try:
            usage = await asyncio.to_thread(shutil.disk_usage, self.data_dir)
        except OSError as exc:
            log.debug("cannot read free space of %s: %s", self.data_dir, exc)
            return
        self.stats.disk_free_bytes, self.stats.disk_total_bytes = usage.free, usage.total
        limit = max(self._disk_bytes, int(self._disk_fraction * usage.total))
        now = time.monotonic()
        if usage.free < limit and now - self._disk_reported >= DISK_EVENT_EVERY_S:
            self._disk_reported = now
            detail = f"{usage.free // 1024**2} MB free of {usage.total // 1024**2} MB"
            log.warning("data dir %s is running out of space: %s", self.data_dir, detail)
            self._emit("disk_low", detail, free_bytes=usage.free, total_bytes=usage.total)
        elif usage.free >= limit:
            self._disk_reported = -DISK_EVENT_EVERY_S  # warn again at once if it drops again

    # --- lifecycle --------------------------------------------------------------------------
    def start(self) -> None:
        self.log.start()
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        while True:
            await self.check_disk()
            self.refresh_stats()
            if self.retention_s and time.monotonic() - self._last_prune > PRUNE_EVERY_S:
                self._last_prune = time.monotonic()
                try:
                    pruned = await asyncio.to_thread(self.store.prune, self.retention_s)
                except Exception as exc:
                    log.warning("could not prune old readings: %s", exc)
                else:
                    if pruned:
                        log.info("pruned %d readings older than the retention period", pruned)
            await asyncio.sleep(DISK_CHECK_S)

    def refresh_stats(self) -> None:
        self.stats.pending = self.log.pending_rows
        self.stats.refused = self.log.refused
        self.stats.store_failing = self.log.failing

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        await self.log.stop()
        self.refresh_stats()
        log.info(
            "%d readings stored (%d duplicates) in %d commits; %d refused",
            self.stats.stored,
            self.stats.duplicates,
            self.log.commits,
            self.stats.refused,
        )
