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


class Picky:
    """A store that rejects negative records (a constraint) and can be down (an outage)."""

    def __init__(self) -> None:
        self.batches: list[list[int]] = []
        self.down: Exception | None = None
        self.probe_fails: Exception | None = None
        self.probes = 0

    def __call__(self, records: list[int]) -> None:
        if self.down is not None:
            raise self.down
        bad = [r for r in records if r < 0]
        if bad:
            raise ValueError(f"constraint failed on {bad[0]}")
        self.batches.append(list(records))

    def probe(self) -> None:
        self.probes += 1
        failure = self.down or self.probe_fails
        if failure is not None:
            raise failure


def _picky_log(store: Picky, rejected: list[tuple[int, str]], **kwargs: object) -> CommitLog[int]:
    return CommitLog(
        store,
        max_rows=1000,
        max_bytes=10**6,
        retry_min_s=0.01,
        retry_max_s=0.02,
        rejects=lambda exc: isinstance(exc, ValueError),
        on_rejected=lambda record, exc: rejected.append((record, str(exc))),
        probe=store.probe,
        **kwargs,  # type: ignore[arg-type]
    )


def test_a_record_the_store_rejects_is_dropped_and_the_rest_of_its_batch_is_stored() -> None:
    """A batch failing on one record's error is written in halves: every good record is
    stored, the bad one is handed to on_rejected, the batch's waiters hear it failed (the bad
    record's sender must not be acknowledged) and the log goes on taking records."""

    async def scenario() -> None:
        store = Picky()
        rejected: list[tuple[int, str]] = []
        log = _picky_log(store, rejected)
        log.start()
        handles = [log.append(n, 10) for n in (1, 2, 3, -4, 5, 6, 7)]
        await _until(lambda: handles[0].state != PENDING, "the batch")
        assert handles[0].state == FAILED and {id(h) for h in handles} == {id(handles[0])}
        assert sorted(r for batch in store.batches for r in batch) == [1, 2, 3, 5, 6, 7]
        assert rejected == [(-4, "constraint failed on -4")] and log.rejected == 1
        assert not log.failing and log.pending_rows == 0 and log.pending_bytes == 0
        later = log.append(8, 10)
        await _until(lambda: later.state == COMMITTED, "the next batch")
        await log.stop()

    asyncio.run(scenario())


def test_a_lone_bad_record_is_rejected_once_the_store_answers_a_probe() -> None:
    """A batch of one record failing on its own error: the store answers the probe, so the
    record is rejected (not retried for ever) and the log is not failing."""

    async def scenario() -> None:
        store = Picky()
        rejected: list[tuple[int, str]] = []
        failures: list[bool] = []
        log = _picky_log(store, rejected, on_failure=lambda exc, first: failures.append(first))
        log.start()
        handle = log.append(-1, 10)
        await _until(lambda: handle.state == FAILED, "the lone record")
        assert [r for r, _ in rejected] == [-1] and store.probes == 1
        assert not failures and not log.failing and log.pending_rows == 0
        good = log.append(2, 10)
        await _until(lambda: good.state == COMMITTED, "a good record after it")
        await log.stop()
        assert store.batches == [[2]]

    asyncio.run(scenario())


def test_a_record_error_while_the_store_is_down_is_an_outage_not_a_rejection() -> None:
    """When the probe fails too, nothing tells a bad record from a failing store: the record
    is kept and retried as in an outage; once the store answers, the bad record is rejected,
    the good ones held meanwhile are stored and the log recovers."""

    async def scenario() -> None:
        store = Picky()
        store.probe_fails = OSError("disk I/O error")
        rejected: list[tuple[int, str]] = []
        recovered: list[bool] = []
        log = _picky_log(store, rejected, on_recovered=lambda: recovered.append(True))
        log.start()
        handle = log.append(-1, 10)
        await _until(lambda: handle.state == FAILED, "the first attempt")
        assert log.failing and not rejected and store.probes >= 1
        assert log.append(3, 10) is REFUSED  # refused while the store fails
        store.probe_fails = None
        await _until(lambda: bool(recovered), "recovery")
        assert [r for r, _ in rejected] == [-1]
        assert not log.failing and log.pending_rows == 0
        good = log.append(4, 10)
        await _until(lambda: good.state == COMMITTED, "a record after recovery")
        await log.stop()
        assert store.batches == [[4]]

    asyncio.run(scenario())


def test_errors_that_are_not_a_record_s_fault_are_never_isolated() -> None:
    """An outage error fails the batch as a whole: no record is rejected, none is split off,
    and the whole batch is stored once the store is back."""

    async def scenario() -> None:
        store = Picky()
        store.down = OSError("database is locked")
        rejected: list[tuple[int, str]] = []
        log = _picky_log(store, rejected)
        log.start()
        handles = [log.append(n, 10) for n in (1, 2, 3)]
        await _until(lambda: handles[0].state == FAILED, "the failed batch")
        store.down = None
        await _until(lambda: not log.failing, "recovery")
        await log.stop()
        assert store.batches == [[1, 2, 3]] and not rejected and store.probes == 0

    asyncio.run(scenario())


def test_a_batch_nobody_waits_on_stays_open_until_a_waiter_comes() -> None:
    """With quiet_s, records without a waiter (QoS 0) are not written at once: records of
    later loop passes join the same batch, and the first waiter makes it go."""

    async def scenario() -> None:
        write = Recorder()
        log: CommitLog[int] = CommitLog(write, max_rows=100, max_bytes=10**6, quiet_s=60.0)
        log.start()
        first = log.append(1, 10)
        for _ in range(5):
            await asyncio.sleep(0)  # the writer runs, and keeps the batch open
        assert log.append(2, 10) is first and first.state == PENDING

        class Waiter:
            def batch_done(self, batch: Batch) -> None:
                pass

        first.wait(Waiter())
        await _until(lambda: first.state == COMMITTED, "the commit a waiter asks for")
        assert write.batches == [[1, 2]]
        await log.stop()

    asyncio.run(scenario())


def test_a_quiet_batch_goes_when_it_is_full_or_its_time_is_up() -> None:
    """A batch nobody waits on is written once it holds quiet_rows records, and otherwise
    after quiet_s."""

    async def scenario() -> None:
        write = Recorder()
        log: CommitLog[int] = CommitLog(
            write, max_rows=100, max_bytes=10**6, quiet_s=60.0, quiet_rows=4
        )
        log.start()
        handles = [log.append(n, 10) for n in range(4)]
        await _until(lambda: handles[0].state == COMMITTED, "the full batch")
        assert write.batches == [[0, 1, 2, 3]]
        log.quiet_s = 0.05
        late = log.append(9, 10)
        await _until(lambda: late.state == COMMITTED, "the batch whose time is up")
        assert write.batches == [[0, 1, 2, 3], [9]]
        await log.stop()

    asyncio.run(scenario())


def test_under_load_commits_start_linger_s_apart_and_an_idle_log_writes_at_once() -> None:
    """With linger_s, a lone record on an idle log is written at once, while one appended
    less than linger_s after that commit started waits (stop() still writes it)."""

    async def scenario() -> None:
        write = Recorder()
        log: CommitLog[int] = CommitLog(write, max_rows=100, max_bytes=10**6, linger_s=60.0)
        log.start()
        first = log.append(1, 10)
        await _until(lambda: first.state == COMMITTED, "the idle log's commit")
        second = log.append(2, 10)
        for _ in range(5):
            await asyncio.sleep(0.01)  # the writer runs, and lingers
        assert second.state == PENDING and write.calls == 1
        await log.stop()
        assert second.state == COMMITTED and write.batches == [[1], [2]]

    asyncio.run(scenario())


def test_a_lingering_batch_goes_once_it_holds_linger_rows() -> None:
    """A batch lingering after a commit is written as soon as it holds linger_rows records."""

    async def scenario() -> None:
        write = Recorder()
        log: CommitLog[int] = CommitLog(
            write, max_rows=100, max_bytes=10**6, linger_s=60.0, linger_rows=3
        )
        log.start()
        first = log.append(0, 10)
        await _until(lambda: first.state == COMMITTED, "the idle log's commit")
        handles = [log.append(n, 10) for n in range(1, 3)]
        for _ in range(5):
            await asyncio.sleep(0.01)  # two records: still lingering
        assert handles[0].state == PENDING and write.calls == 1
        last = log.append(3, 10)
        await _until(lambda: last.state == COMMITTED, "the batch holding linger_rows")
        assert write.batches == [[0], [1, 2, 3]]
        await log.stop()

    asyncio.run(scenario())
