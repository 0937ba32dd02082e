"""Group commit: records appended on the event loop are written in batches by one thread, and
whoever needs to know waits on the batch's handle, never on a record.

A record is acknowledged to its sender only once the batch holding it has committed, so
"acknowledged" means "stored". The writer commits whatever is pending as soon as the previous
commit ends: under load a batch grows to what arrived during one commit, and an idle log
commits a lone record at once. Knows nothing of devices or MQTT: ingest uses it for readings,
and the broker's durable state can use it for its own records.

With ``linger_s``, commits under load start at least ``linger_s`` apart: a batch that opened
(when the previous commit started) less than ``linger_s`` ago waits out the rest before it is
written, or until it holds ``linger_rows`` records (a fast flood waits less). A commit costs
far more than a record (the pages it rewrites, the fsync, two thread hand-offs), so a flood of
acknowledged records costs 1/linger_s commits a second (or one per linger_rows records)
instead of one per few records; an idle log still writes a lone record at once (its batch
opened long ago), and no acknowledgement waits more than ``linger_s`` beyond its commit.

With ``quiet_s``, a batch nobody waits on (QoS 0 readings: no acknowledgement) is left open
up to ``quiet_s`` or ``quiet_rows`` records before it is written, so it costs one commit where
back-to-back commits would cost many; the first waiter makes it go at once.

Pending records are bounded (rows and bytes). When the bound is reached, or while the store
fails, ``append`` returns :data:`REFUSED` and the sender is not acknowledged (it resends).
A failed batch is kept and written again with backoff until the store takes it; its waiters
are told it failed at once, so their senders resend instead of waiting for the outage to end.

A record the store refuses on its own (``rejects(exc)``: a constraint, a value the driver
cannot bind) must not hold the log for ever: the failed batch is written again in halves, down
to single records, so every good record is stored; a record that fails alone while the store
takes others (or answers ``probe()``) is handed to ``dead_letter`` (on the log's thread: a
store of its own for what the main store refuses) and to ``on_rejected``. Once the dead letters
are written the batch counts as committed: every record of it is stored somewhere, and its
senders are acknowledged. Without ``dead_letter``, or when it fails, the rejected record is
dropped and the batch's waiters are told it failed (one handle per batch: the rejected
record's sender must not be acknowledged), so the others resend and their duplicates are
acknowledged on the next commit.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Generic, Protocol, TypeVar

log = logging.getLogger(__name__)

R = TypeVar("R")

PENDING = 0
COMMITTED = 1
FAILED = 2


class Waiter(Protocol):
    """Told once when a batch it waits on has committed or failed."""

    def batch_done(self, batch: Batch) -> None: ...


class Batch:
    """The commit handle of every record appended while it was open."""

    __slots__ = ("seq", "state", "urgent", "waiters")

    def __init__(self, seq: int, state: int = PENDING) -> None:
        self.seq = seq
        self.state = state
        self.waiters: list[Waiter] = []
        self.urgent: asyncio.Event | None = None  # set by a waiter: the log writes at once

    def wait(self, waiter: Waiter) -> None:
        """``waiter.batch_done(self)`` once the batch is committed or failed (at once if it is)."""
        if self.state == PENDING:
            self.waiters.append(waiter)
            if self.urgent is not None:
                self.urgent.set()
        else:
            waiter.batch_done(self)

    def finish(self, state: int) -> None:
        self.state = state
        waiters, self.waiters = self.waiters, []
        for waiter in waiters:
            try:
                waiter.batch_done(self)
            except Exception:
                log.exception("a waiter of batch %d failed", self.seq)

    def __repr__(self) -> str:
        return f"Batch({self.seq}, {('pending', 'committed', 'failed')[self.state]})"


REFUSED = Batch(-1, FAILED)  # the handle of a record the log did not take


class CommitLog(Generic[R]):
    """Appends on the event loop; ``write(records)`` runs on the log's own thread.

    ``write`` raises to fail the batch; ``on_failure(exc, first)`` is called on the loop for
    each failed attempt (``first`` for the first of an outage) and ``on_recovered()`` when a
    retry succeeds.
    """

    def __init__(
        self,
        write: Callable[[list[R]], object],
        *,
        max_rows: int,
        max_bytes: int,
        retry_min_s: float = 0.25,
        retry_max_s: float = 5.0,
        on_failure: Callable[[BaseException, bool], None] | None = None,
        on_recovered: Callable[[], None] | None = None,
        rejects: Callable[[BaseException], bool] | None = None,
        on_rejected: Callable[[R, Exception], None] | None = None,
        dead_letter: Callable[[list[tuple[R, Exception]]], object] | None = None,
        probe: Callable[[], object] | None = None,
        quiet_s: float = 0.0,
        quiet_rows: int = 4096,
        linger_s: float = 0.0,
        linger_rows: int = 256,
        name: str = "commitlog",
    ) -> None:
        self._write = write
        self.max_rows = max_rows
        self.max_bytes = max_bytes
        self.retry_min_s = retry_min_s
        self.retry_max_s = retry_max_s
        self._on_failure = on_failure
        self._on_recovered = on_recovered
        self._rejects = rejects
        self._on_rejected = on_rejected
        self._dead_letter = dead_letter
        self._probe = probe
        self.quiet_s = quiet_s
        self._quiet_rows = quiet_rows if quiet_s > 0 else 0
        self._urgent: asyncio.Event | None = None
        self.linger_s = linger_s
        self._opened = float("-inf")  # loop time the open batch opened (a commit started)
        self._linger_rows = linger_rows
        self._lingering: asyncio.Event | None = None  # set once the batch holds linger_rows
        self._name = name
        self._open = Batch(0)
        self._records: list[R] = []
        self._rows = 0  # pending: open, being written and kept for a retry
        self._bytes = 0
        self._open_bytes = 0
        self.failing = False
        self.refused = 0
        self.rejected = 0
        self.commits = 0
        self._idle: asyncio.Future[None] | None = None  # the writer waits for a record
        self._task: asyncio.Task[None] | None = None
        self._executor: ThreadPoolExecutor | None = None

    @property
    def pending_rows(self) -> int:
        return self._rows

    @property
    def pending_bytes(self) -> int:
        return self._bytes

    def append(self, record: R, size: int) -> Batch:
        """Adds a record to the open batch and returns the batch, or REFUSED."""
        if self.failing or self._rows >= self.max_rows or self._bytes + size > self.max_bytes:
            self.refused += 1
            return REFUSED
        records = self._records
        records.append(record)
        self._rows += 1
        self._bytes += size
        self._open_bytes += size
        idle = self._idle
        if idle is not None:  # the first record since the writer went idle wakes it
            self._idle = None
            if not idle.done():
                idle.set_result(None)
        if self._quiet_rows and len(records) >= self._quiet_rows and self._urgent is not None:
            self._urgent.set()
        lingering = self._lingering
        if lingering is not None and len(records) >= self._linger_rows:
            lingering.set()
        return self._open

    def start(self) -> None:
        if self.quiet_s > 0:
            self._urgent = self._open.urgent = asyncio.Event()
        self._executor = ThreadPoolExecutor(1, thread_name_prefix=self._name)
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        """Ends the writer after one last attempt at what is pending."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        if self._records and self._executor is not None:
            batch, records = self._take()
            try:
                await self._commit(records)
                batch.finish(COMMITTED)
            except Exception as exc:
                log.error("%d records not written at shutdown: %s", len(records), exc)
                batch.finish(FAILED)
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None

    def _take(self) -> tuple[Batch, list[R]]:
        batch, records = self._open, self._records
        self._open = Batch(batch.seq + 1)
        self._open.urgent = self._urgent
        self._records = []
        if self.linger_s > 0:
            self._opened = asyncio.get_running_loop().time()
        return batch, records

    async def _commit(self, records: list[R]) -> None:
        assert self._executor is not None
        await asyncio.get_running_loop().run_in_executor(self._executor, self._write, records)
        self.commits += 1

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if not self._records:
                idle = self._idle = loop.create_future()
                try:
                    await idle
                finally:
                    self._idle = None
                continue
            if self._urgent is not None:
                await self._quiet(self._urgent)
            if self.linger_s > 0:
                await self._linger()
            size = self._open_bytes
            self._open_bytes = 0
            batch, records = self._take()
            try:
                await self._commit(records)
            except asyncio.CancelledError:
                self._records[:0] = records  # stop() tries once more
                self._open_bytes += size
                batch.finish(FAILED)
                raise
            except Exception as exc:
                if not self._may_isolate(exc):
                    await self._outage(batch, records, size, exc)
                    continue
                rest, again, rejected = await self._isolate(batch, records, size, exc)
                if again is not None:
                    await self._outage(batch, rest, size, again)
                    continue
                self._bytes -= size
                batch.finish(FAILED if rejected else COMMITTED)
                continue
            self._rows -= len(records)
            self._bytes -= size
            batch.finish(COMMITTED)

    async def _linger(self) -> None:
        """Under load, waits until linger_s after the previous commit started (or until the
        batch holds linger_rows records)."""
        left = self._opened + self.linger_s - asyncio.get_running_loop().time()
        if left <= 0 or len(self._records) >= self._linger_rows:
            return
        self._lingering = asyncio.Event()
        try:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._lingering.wait(), left)
        finally:
            self._lingering = None

    async def _quiet(self, urgent: asyncio.Event) -> None:
        """Leaves a batch nobody waits on open for up to quiet_s (or quiet_rows records)."""
        urgent.clear()  # before looking: a waiter that comes after sets it again
        if self._open.waiters or len(self._records) >= self._quiet_rows:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(urgent.wait(), self.quiet_s)

    def _may_isolate(self, exc: BaseException) -> bool:
        return self._rejects is not None and self._rejects(exc)

    async def _isolate(
        self, batch: Batch, records: list[R], size: int, exc: Exception
    ) -> tuple[list[R], Exception | None, int]:
        """Writes records that failed with a record's error in halves, down to single records:
        the good ones are stored, those failing alone while the store works are rejected.
        Returns what is left unwritten (an outage began meanwhile) with the outage's error,
        and how many records were rejected; the pending rows count no longer holds the rest."""
        chunks = [records[len(records) // 2 :], records[: len(records) // 2]]
        suspects: list[tuple[R, Exception]] = []
        if len(records) == 1:
            chunks, suspects = [], [(records[0], exc)]
        works = False  # a chunk was written (or the store answered the probe)
        chunk: list[R] = []
        try:
            while chunks:
                chunk = chunks.pop()
                if not chunk:
                    continue
                try:
                    await self._commit(chunk)
                except Exception as again:
                    if not self._may_isolate(again):
                        rest = [r for c in (chunk, *chunks) for r in c] + [r for r, _ in suspects]
                        self._rows -= len(records) - len(rest)
                        return rest, again, 0
                    if len(chunk) == 1:
                        suspects.append((chunk[0], again))
                    else:  # the first half is written first
                        chunks += [chunk[len(chunk) // 2 :], chunk[: len(chunk) // 2]]
                    chunk = []
                    continue
                works = True
                chunk = []
            if suspects and not works and self._probe is not None:
                # Nothing else to write: does the store take anything at all?
                await asyncio.get_running_loop().run_in_executor(self._executor, self._probe)
                works = True
        except asyncio.CancelledError:  # stop() tries once more what is not written yet
            back = [r for c in (chunk, *chunks) for r in c] + [r for r, _ in suspects]
            self._records[:0] = back
            self._rows -= len(records) - len(back)
            self._open_bytes += size
            batch.finish(FAILED)
            raise
        except Exception as again:  # the probe failed: the store is down, not the record
            rest = [r for r, _ in suspects]
            self._rows -= len(records) - len(rest)
            return rest, again, 0
        if suspects and not works:  # nothing to tell a bad record from a store that fails
            self._rows -= len(records) - len(suspects)
            return [r for r, _ in suspects], suspects[0][1], 0
        self._rows -= len(records)
        kept = False
        if suspects and self._dead_letter is not None:
            try:
                loop = asyncio.get_running_loop()
                await loop.run_in_executor(self._executor, self._dead_letter, suspects)
                kept = True
            except Exception:
                log.exception("%s: the dead letters could not be written", self._name)
        for record, error in suspects:
            self.rejected += 1
            if self._on_rejected is not None:
                try:
                    self._on_rejected(record, error)
                except Exception:
                    log.exception("%s: rejection callback failed", self._name)
        return [], None, 0 if kept else len(suspects)

    async def _outage(self, batch: Batch, records: list[R], size: int, exc: Exception) -> None:
        """Refuses new records and writes the failed ones (and those that arrived meanwhile)
        again with backoff until the store takes them."""
        self.failing = True
        later, later_records = self._take()  # waited on the failed commit: fails with it
        records = records + later_records
        size += self._open_bytes
        self._open_bytes = 0
        batch.finish(FAILED)
        later.finish(FAILED)
        self._report(exc, True)
        delay = self.retry_min_s
        while True:
            await asyncio.sleep(delay)
            try:
                await self._commit(records)
                break
            except asyncio.CancelledError:
                self._records[:0] = records
                self._open_bytes += size
                raise
            except Exception as again:
                if self._may_isolate(again):  # the store is back, and a record it rejects
                    records, outage, _ = await self._isolate(batch, records, size, again)
                    if outage is None:
                        break
                    again = outage
                self._report(again, False)
                delay = min(delay * 2, self.retry_max_s)
        self._rows -= len(records)
        self._bytes -= size
        self.failing = False
        if self._on_recovered is not None:
            self._on_recovered()

    def _report(self, exc: BaseException, first: bool) -> None:
        if self._on_failure is not None:
            try:
                self._on_failure(exc, first)
            except Exception:
                log.exception("%s: failure callback failed", self._name)
