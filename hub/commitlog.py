"""Group commit: records appended on the event loop are written in batches by one thread, and
whoever needs to know waits on the batch's handle, never on a record.

A record is acknowledged to its sender only once the batch holding it has committed, so
"acknowledged" means "stored". The writer commits whatever is pending as soon as the previous
commit ends: under load a batch grows to what arrived during one commit, and an idle log
commits a lone record at once. Knows nothing of devices or MQTT: ingest uses it for readings,
and the broker's durable state can use it for its own records.

Pending records are bounded (rows and bytes). When the bound is reached, or while the store
fails, ``append`` returns :data:`REFUSED` and the sender is not acknowledged (it resends).
A failed batch is kept and written again with backoff until the store takes it; its waiters
are told it failed at once, so their senders resend instead of waiting for the outage to end.
"""

from __future__ import annotations

import asyncio
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

    __slots__ = ("seq", "state", "waiters")

    def __init__(self, seq: int, state: int = PENDING) -> None:
        self.seq = seq
        self.state = state
        self.waiters: list[Waiter] = []

    def wait(self, waiter: Waiter) -> None:
        """``waiter.batch_done(self)`` once the batch is committed or failed (at once if it is)."""
        if self.state == PENDING:
            self.waiters.append(waiter)
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
        name: str = "commitlog",
    ) -> None:
        self._write = write
        self.max_rows = max_rows
        self.max_bytes = max_bytes
        self.retry_min_s = retry_min_s
        self.retry_max_s = retry_max_s
        self._on_failure = on_failure
        self._on_recovered = on_recovered
        self._name = name
        self._open = Batch(0)
        self._records: list[R] = []
        self._rows = 0  # pending: open, being written and kept for a retry
        self._bytes = 0
        self._open_bytes = 0
        self.failing = False
        self.refused = 0
        self.commits = 0
        self._wake: asyncio.Event | None = None
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
        self._records.append(record)
        self._rows += 1
        self._bytes += size
        self._open_bytes += size
        wake = self._wake
        if wake is not None and not wake.is_set():
            wake.set()
        return self._open

    def start(self) -> None:
        self._wake = asyncio.Event()
        if self._records:
            self._wake.set()
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
        self._records = []
        return batch, records

    async def _commit(self, records: list[R]) -> None:
        assert self._executor is not None
        await asyncio.get_running_loop().run_in_executor(self._executor, self._write, records)
        self.commits += 1

    async def _run(self) -> None:
        assert self._wake is not None
        wake = self._wake
        while True:
            await wake.wait()
            wake.clear()
            if not self._records:
                continue
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
                await self._outage(batch, records, size, exc)
                continue
            self._rows -= len(records)
            self._bytes -= size
            batch.finish(COMMITTED)

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
