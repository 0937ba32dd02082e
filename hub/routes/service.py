"""The running routes: the broker's listener that queues messages, one worker per route that
delivers them, the events, the counters, and SIGHUP's new set of routes.

The listener runs for every routed message, so it is cheap: the routes a topic selects are
remembered per topic, and a selected message is appended to a group-commit log
(hub/commitlog.py) whose handle the broker waits on before it acknowledges the sender, so an
acknowledged message is in the route's durable queue. A worker reads its route's queue in
order, delivers a batch and takes it out of the queue in the transaction that counts it
(hub/routes/queue.py): delivery is at least once, in order per device, across restarts.

Loops: a message a route publishes (mqtt targets) carries the chain of routes that produced
it; a route in that chain never takes it again (a ``route_loop`` warning event, once per route
and chain). The routes' own events are never routed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hub.broker import Broker, MessageListener
from hub.commitlog import COMMITTED, FAILED, PENDING, REFUSED, Batch, CommitLog
from hub.config import ConfigError
from hub.routes.queue import COUNTERS, RouteDb, Row
from hub.routes.spec import RouteSpec, secret_headers, selects
from hub.routes.targets import Database, Republish, Target, Webhook
from hub.topics import ContractError, Kind, filter_matches, parse_topic

log = logging.getLogger(__name__)

TOPIC_CACHE = 10_000  # topics whose selected routes are remembered
PENDING_ROWS = 50_000  # messages waiting for the queue's commit before senders wait
PENDING_BYTES = 64 * 1024 * 1024
ROW_OVERHEAD = 200
IDLE_POLL_S = 1.0  # an idle worker looks at its queue this often (replays from `hub route`)
FAILED_WRITE_WAIT_S = 1.0
HUB_ID = "hub"

Report = Callable[[str, dict[str, Any]], None]


class _Both:
    """The handle of a message two listeners store: committed when both have."""

    __slots__ = ("batch", "left")

    def __init__(self, first: Batch, second: Batch) -> None:
        self.batch = Batch(-2)
        self.left = 2
        first.wait(self)
        second.wait(self)

    def batch_done(self, done: Batch) -> None:
        if self.batch.state != PENDING:
            return
        if done.state == FAILED:
            self.batch.finish(FAILED)
            return
        self.left -= 1
        if self.left == 0:
            self.batch.finish(COMMITTED)


def join(first: Batch | None, second: Batch | None) -> Batch | None:
    """One handle for a message stored by two listeners."""
    if first is None or second is None:
        return first if second is None else second
    if first is REFUSED or second is REFUSED:
        return REFUSED
    return _Both(first, second).batch


def _device_of(topic: str) -> tuple[str | None, str | None]:
    try:
        parsed = parse_topic(topic)
    except ContractError:
        return None, None
    return parsed.device, parsed.sensor if parsed.kind is Kind.TELEMETRY else None


class Worker:
    def __init__(self, spec: RouteSpec, target: Target, counters: dict[str, int]) -> None:
        self.spec = spec
        self.target = target
        self.counters = counters  # delivered, retries, dead, loops, queued
        self.wake = asyncio.Event()
        self.task: asyncio.Task[None] | None = None
        self.loops_unsaved = 0


class Routes:
    def __init__(self, data_dir: Path, broker: Broker, report: Report) -> None:
        self.data_dir = data_dir
        self.broker = broker
        self._report = report
        self.db: RouteDb | None = None
        self.specs: tuple[RouteSpec, ...] = ()
        self.workers: dict[str, Worker] = {}
        self._selected: dict[str, tuple[tuple[RouteSpec, ...], str | None, str | None]] = {}
        self._origin = ""  # the chain of routes publishing the message being routed now
        self._quiet = False  # the routes' own events are being published
        self._warned: set[tuple[str, str]] = set()
        self._saved: dict[str, dict[str, int]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self.log: CommitLog[Row] = CommitLog(
            self._write, max_rows=PENDING_ROWS, max_bytes=PENDING_BYTES, name="routes"
        )

    # --- the listener (every routed message) ------------------------------------------------
    def joined(self, other: MessageListener) -> MessageListener:
        """A listener that runs ``other`` (ingest) and this one, and acknowledges a message
        once both have stored it. With no routes configured it is ``other`` and one test."""

        def listener(topic: str, payload: bytes) -> Batch | None:
            if not self.specs:  # every message pays for this listener: nothing more then
                return other(topic, payload)
            return join(other(topic, payload), self.on_message(topic, payload))

        return listener

    def on_message(self, topic: str, payload: bytes) -> Batch | None:
        if self._quiet or not self.specs:
            return None
        found = self._selected.get(topic)
        if found is None:
            device, sensor = _device_of(topic)
            chosen = tuple(
                s
                for s in self.specs
                if filter_matches(s.filter, topic) and selects(s, topic, device, sensor)
            )
            if len(self._selected) >= TOPIC_CACHE:
                self._selected.clear()
            found = self._selected[topic] = (chosen, device, sensor)
        routes, device, sensor = found
        if not routes:
            return None
        origin = self._origin
        retain = self.broker.retained(topic) is payload  # the broker kept this very message
        now = time.time()
        handle: Batch | None = None
        for spec in routes:
            if origin and spec.name in origin.split(","):
                self._loop_skipped(spec, topic, origin)
                continue
            # Queued even while the route's worker restarts (SIGHUP) or has stopped (the hub
            # stopping): the next worker delivers it.
            worker = self.workers.get(spec.name)
            if worker is not None and worker.counters["queued"] >= spec.max_queue:
                self._queue_full(spec)
                handle = REFUSED
                continue
            row = (spec.name, topic, payload, device, sensor, now, origin, retain)
            got = self.log.append(row, ROW_OVERHEAD + len(topic) + len(payload))
            if got is not REFUSED and worker is not None:
                worker.counters["queued"] += 1
            handle = got if handle is not REFUSED else handle
        return handle

    def _write(self, rows: list[Row]) -> None:
        """On the commit log's thread: queue the rows, then wake their workers."""
        assert self.db is not None and self._loop is not None
        self.db.append(rows)
        names = {row[0] for row in rows}
        self._loop.call_soon_threadsafe(self._wake, names)

    def _wake(self, names: set[str]) -> None:
        for name in names:
            worker = self.workers.get(name)
            if worker is not None:
                worker.wake.set()

    # --- events -----------------------------------------------------------------------------
    def _event(self, kind: str, detail: str, **extra: Any) -> None:
        event = {
            "kind": kind,
            "client_id": HUB_ID,
            "identity": None,
            "name": None,
            "detail": detail,
            **extra,
        }
        self._quiet = True  # never routed, whatever a route's filter says
        try:
            self._report(kind, event)
        except Exception:
            log.exception("could not report %s", kind)
        finally:
            self._quiet = False

    def _loop_skipped(self, spec: RouteSpec, topic: str, origin: str) -> None:
        worker = self.workers.get(spec.name)
        if worker is not None:
            worker.counters["loops"] += 1
            worker.loops_unsaved += 1
        if (spec.name, origin) in self._warned or len(self._warned) > 1000:
            return
        self._warned.add((spec.name, origin))
        detail = f"route {spec.name} skips {topic[:100]}: routes {origin} produced it (a loop)"
        log.warning("%s", detail)
        self._event("route_loop", detail, route=spec.name, origin=origin, topic=topic[:200])

    def _queue_full(self, spec: RouteSpec) -> None:
        if (spec.name, "full") in self._warned:
            return
        self._warned.add((spec.name, "full"))
        detail = f"route {spec.name}: {spec.max_queue} messages queued: new ones wait"
        log.warning("%s", detail)
        self._event("route_queue_full", detail, route=spec.name)

    # --- publishing for mqtt routes -----------------------------------------------------------
    def _publish(self, topic: str, payload: bytes, qos: int, retain: bool, origin: str) -> None:
        before, self._origin = self._origin, origin
        try:
            self.broker.publish(topic, payload, qos=qos, retain=retain)
        finally:
            self._origin = before

    # --- lifecycle --------------------------------------------------------------------------
    async def start(self, specs: tuple[RouteSpec, ...]) -> None:
        """Opens the queue and starts the routes; ConfigError for a route that cannot start
        (a header's secret missing)."""
        self._loop = asyncio.get_running_loop()
        self.db = await asyncio.to_thread(RouteDb, self.data_dir)
        self._saved = await asyncio.to_thread(self.db.counters)
        self.log.start()
        await self.apply(specs)

    async def apply(self, specs: tuple[RouteSpec, ...]) -> list[str]:
        """Runs exactly these routes: unchanged ones go on, changed ones restart, removed ones
        stop (their queued messages wait in the queue should they come back). Returns the
        names of the routes that changed."""
        targets = {
            s.name: await self._target(s)
            for s in specs
            if s.name not in self.workers or self.workers[s.name].spec != s
        }
        changed = sorted(
            set(targets) | {n for n in self.workers if n not in {s.name for s in specs}}
        )
        for name in changed:
            old = self.workers.pop(name, None)
            if old is not None:
                await self._stop_worker(old)
        assert self.db is not None
        for spec in specs:
            if spec.name in targets:
                counters = {**dict.fromkeys(COUNTERS, 0), **self._saved.get(spec.name, {})}
                counters["queued"] = await asyncio.to_thread(self.db.depth, spec.name)
                worker = Worker(spec, targets[spec.name], counters)
                worker.task = asyncio.get_running_loop().create_task(self._run(worker))
                self.workers[spec.name] = worker
        self.specs = specs
        self._selected = {}
        return changed

    async def _target(self, spec: RouteSpec) -> Target:
        if spec.target == "webhook":
            headers = await asyncio.to_thread(secret_headers, spec)
            return Webhook(spec, headers)
        if spec.target == "database":
            return Database(spec, self.data_dir)
        if spec.target == "mqtt":
            return Republish(spec, self._publish)
        raise ConfigError(f"routes: {spec.name}: unknown target {spec.target}")

    async def _stop_worker(self, worker: Worker) -> None:
        if worker.task is not None:
            worker.task.cancel()
            await asyncio.gather(worker.task, return_exceptions=True)
        await worker.target.close()
        self._saved[worker.spec.name] = dict(worker.counters)

    async def pause(self) -> None:
        """Stops delivering (before the broker stops: an mqtt route must not publish into a
        stopped broker); what was not delivered waits in the queue for the next start."""
        for worker in list(self.workers.values()):
            await self._stop_worker(worker)
        self.workers = {}

    async def stop(self) -> None:
        await self.pause()
        await self.log.stop()
        if self.db is not None:
            await asyncio.to_thread(self.db.close)
            self.db = None

    # --- delivery ---------------------------------------------------------------------------
    async def _run(self, worker: Worker) -> None:
        spec, db = worker.spec, self.db
        assert db is not None
        limit = spec.batch if spec.target == "database" else 256
        while True:
            worker.wake.clear()  # a commit from here on wakes the wait below
            try:
                batch = await asyncio.to_thread(db.pending, spec.name, limit)
            except Exception as exc:
                log.error("route %s: cannot read its queue: %s", spec.name, exc)
                await asyncio.sleep(FAILED_WRITE_WAIT_S)
                continue
            if not batch:
                if not self.log.pending_rows:  # nothing on its way into the queue either
                    worker.counters["queued"] = 0
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(worker.wake.wait(), IDLE_POLL_S)
                continue
            outcome = await worker.target.deliver(batch)
            loops, worker.loops_unsaved = worker.loops_unsaved, 0
            try:
                await asyncio.to_thread(
                    db.finish, spec.name, outcome.delivered, outcome.dead, outcome.retries, loops
                )
            except Exception as exc:  # delivered again later: at least once
                log.error("route %s: cannot record %d deliveries: %s", spec.name, len(batch), exc)
                worker.loops_unsaved += loops
                await asyncio.sleep(FAILED_WRITE_WAIT_S)
                continue
            counters = worker.counters
            counters["delivered"] += len(outcome.delivered)
            counters["retries"] += outcome.retries
            counters["dead"] += len(outcome.dead)
            counters["queued"] = max(0, counters["queued"] - len(batch))
            for queued, failure in outcome.dead:
                detail = (
                    f"route {spec.name} gave up on {queued.topic[:100]} after "
                    f"{failure.attempts} attempts: {failure.status}: {failure.error}"
                )
                log.warning("%s", detail)
                self._event(
                    "route_failure",
                    detail,
                    route=spec.name,
                    status=failure.status,
                    error=failure.error,
                    topic=queued.topic[:200],
                    device=queued.device,
                    attempts=failure.attempts,
                )

    # --- reading ----------------------------------------------------------------------------
    def listing(self) -> list[dict[str, Any]]:
        """Each running route with its counters (for /metrics, the API, `hub route list`)."""
        return [{**w.spec.describe(), **w.counters} for w in self.workers.values()]

    def replayed(self, name: str) -> None:
        """Dead letters went back into a route's queue: deliver them now."""
        worker = self.workers.get(name)
        if worker is not None:
            worker.wake.set()
