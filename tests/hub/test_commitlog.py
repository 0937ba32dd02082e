"""Group commit without sockets: a record is acknowledged only once its batch has committed,
and failures refuse (the broker's ordered ack queue: tests/hub/broker/test_acks.py)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable

from hub.commitlog import COMMITTED, FAILED, PENDING, REFUSED, Batch, CommitLog
from tests.support.waits import eventually_async


async def _until(check: Callable[[], bool], what: str, timeout: float = 5.0) -> None:
    await eventually_async(check, timeout, what, poll=0.005)


class Recorder:
    """A write function that records its batches and can be held or made to fail."""

    def __init__(self) -> None:
        self.batches: list[list[int]] = []
        self.release = threading.Event()
        self.release.set()
        self.fail: Exception | None = None
        self.calls = 0

    def __call__(self, records: list[int]) -> None:
        self.calls += 1
        self.release.wait(10)
        if self.fail is not None:
            raise self.fail
        self.batches.append(list(records))


def test_records_of_one_pass_commit_together_and_the_next_batch_groups_what_came_meanwhile() -> (
    None
):
    """Records appended in one loop pass share a handle that commits after the write; records
    appended during a commit form the next batch, written as soon as that commit ends."""

    async def scenario() -> None:
        write = Recorder()
        log: CommitLog[int] = CommitLog(write, max_rows=1000, max_bytes=10**6)
        log.start()
        first = [log.append(n, 10) for n in range(3)]
        assert first[0] is first[1] is first[2] and first[0].state == PENDING
        write.release.clear()  # the first commit is held in the writer thread
        await _until(lambda: write.calls == 1, "the first commit to start")
        second = [log.append(n, 10) for n in range(3, 100)]
        assert second[0] is not first[0] and {id(h) for h in second} == {id(second[0])}
        assert first[0].state == PENDING
        write.release.set()
        await _until(lambda: second[0].state == COMMITTED, "the second batch")
        assert first[0].state == COMMITTED
        assert write.batches == [[0, 1, 2], list(range(3, 100))]
        assert log.pending_rows == 0 and log.pending_bytes == 0
        await log.stop()

    asyncio.run(scenario())


def test_a_full_log_refuses_until_a_commit_frees_room() -> None:
    """Past max_rows (or max_bytes) append returns REFUSED; after the commit it takes again."""

    async def scenario() -> None:
        write = Recorder()
        write.release.clear()
        log: CommitLog[int] = CommitLog(write, max_rows=5, max_bytes=45)
        log.start()
        handles = [log.append(n, 10) for n in range(6)]
        assert handles[3] is not REFUSED and handles[4] is REFUSED  # 50 bytes > 45
        assert handles[5] is REFUSED and log.refused == 2
        write.release.set()
        await _until(lambda: handles[0].state == COMMITTED, "the commit")
        assert log.append(9, 10) is not REFUSED
        await log.stop()
        assert write.batches == [[0, 1, 2, 3], [9]]

    asyncio.run(scenario())


def test_a_failed_commit_fails_its_waiters_refuses_and_retries_until_the_store_is_back() -> None:
    """A write that raises fails the batch at once (its waiters hear it), new records are
    refused while the store fails, the failed records are retried with backoff, and
    on_failure / on_recovered bracket the outage."""

    async def scenario() -> None:
        write = Recorder()
        write.fail = OSError("database or disk is full")
        failures: list[tuple[str, bool]] = []
        recovered: list[bool] = []
        log: CommitLog[int] = CommitLog(
            write,
            max_rows=100,
            max_bytes=10**6,
            retry_min_s=0.01,
            retry_max_s=0.02,
            on_failure=lambda exc, first: failures.append((str(exc), first)),
            on_recovered=lambda: recovered.append(True),
        )
        told: list[Batch] = []

        class Waiter:
            def batch_done(self, batch: Batch) -> None:
                told.append(batch)

        log.start()
        handle = log.append(1, 10)
        handle.wait(Waiter())
        await _until(lambda: handle.state == FAILED, "the failed commit")
        assert told == [handle]
        assert log.failing and log.append(2, 10) is REFUSED
        await _until(lambda: len(failures) >= 3, "retries")
        assert failures[0] == ("database or disk is full", True)
        assert all(not first for _, first in failures[1:])
        write.fail = None
        await _until(lambda: bool(recovered), "recovery")
        assert write.batches == [[1]]  # the failed record was stored by the retry
        assert not log.failing and log.pending_rows == 0
        assert log.append(3, 10) is not REFUSED
        await log.stop()
        assert write.batches == [[1], [3]]

    asyncio.run(scenario())


def test_stop_writes_what_is_pending() -> None:
    """Records still open when the log stops are written before it ends."""

    async def scenario() -> None:
        write = Recorder()
        log: CommitLog[int] = CommitLog(write, max_rows=100, max_bytes=10**6)
        log.start()
        handle = log.append(7, 1)
        await log.stop()
        assert handle.state == COMMITTED and write.batches == [[7]]

    asyncio.run(scenario())
