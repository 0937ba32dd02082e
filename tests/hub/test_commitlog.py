"""Group commit and the ordered ack queue, without sockets: a record is acknowledged only once
its batch has committed, acks keep the order their publishes came in, and failures refuse."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable

import pytest

from hub.broker import BrokerSettings
from hub.broker.codec import Packet, Parser
from hub.broker.connection import Connection
from hub.broker.core import BrokerCore
from hub.broker.session import Session
from hub.broker.transports import Link
from hub.commitlog import COMMITTED, FAILED, PENDING, REFUSED, Batch, CommitLog
from tests.support.mqtt import PUBACK, PUBCOMP, PUBREC, PUBREL, ack_packet, publish_packet
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


# --- the ordered ack queue of a broker connection ---------------------------------------------
class MemoryLink(Link):
    """A link that keeps what the connection writes."""

    network = "memory"

    def __init__(self) -> None:
        self.peer = ("test", 1)
        self.out = bytearray()
        self.closed = False

    def write(self, data: bytes) -> None:
        self.out.extend(data)

    def buffered(self) -> int:
        return 0

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def when_writable(self, callback: Callable[[], None]) -> None:
        callback()

    def abort(self) -> None:
        self.closed = True

    def close(self) -> None:
        self.closed = True

    def packets(self) -> list[tuple[int, int]]:
        """(kind, packet id) of everything written so far; clears it."""
        found: list[Packet] = Parser(10**6).feed(bytes(self.out))
        self.out.clear()
        return [(p.kind, int.from_bytes(p.body[:2], "big")) for p in found]


class Store:
    """A message listener that hands out the handle the test chooses for topics under s/."""

    def __init__(self) -> None:
        self.handle: Batch = Batch(1)

    def __call__(self, topic: str, payload: bytes) -> Batch | None:
        return self.handle if topic.startswith("s/") else None


async def _connection(store: Store) -> tuple[Connection, MemoryLink]:
    core = BrokerCore(BrokerSettings(), plugins=None)
    core.message_listeners.append(store)
    link = MemoryLink()
    conn = Connection(core, link)
    conn._stop_timer()
    conn.client_id = "acks"
    conn.session = Session("acks", True, core.limits)
    return conn, link


async def _sent(conn: Connection, link: MemoryLink) -> list[tuple[int, int]]:
    await asyncio.sleep(0)  # the coalesced write goes out on the next loop pass
    conn.flush()
    return link.packets()


def test_acks_wait_for_the_commit_and_keep_the_order_of_the_publishes() -> None:
    """A stored message's PUBACK waits for its batch; a message with no handle behind it waits
    its turn; a failed batch's messages are never acknowledged, the rest are."""

    async def scenario() -> None:
        store = Store()
        conn, link = await _connection(store)
        first = store.handle
        conn.data_received(publish_packet("other/x", b"a", qos=1, pid=1))
        assert await _sent(conn, link) == [(PUBACK, 1)]  # nothing pending: at once
        conn.data_received(publish_packet("s/1", b"r", qos=1, pid=2))
        conn.data_received(publish_packet("other/x", b"b", qos=1, pid=3))
        store.handle = second = Batch(2)
        conn.data_received(publish_packet("s/2", b"r", qos=1, pid=4))
        conn.data_received(publish_packet("other/x", b"c", qos=1, pid=5))
        assert await _sent(conn, link) == []
        second.finish(COMMITTED)  # a later batch alone releases nothing
        assert await _sent(conn, link) == []
        first.finish(COMMITTED)
        assert await _sent(conn, link) == [(PUBACK, 2), (PUBACK, 3), (PUBACK, 4), (PUBACK, 5)]

        store.handle = third = Batch(3)
        conn.data_received(publish_packet("s/3", b"r", qos=1, pid=6))
        conn.data_received(publish_packet("other/x", b"d", qos=1, pid=7))
        third.finish(FAILED)
        assert await _sent(conn, link) == [(PUBACK, 7)]  # 6 is not acknowledged
        store.handle = REFUSED
        conn.data_received(publish_packet("s/4", b"r", qos=1, pid=8))
        conn.data_received(publish_packet("other/x", b"e", qos=1, pid=9))
        assert await _sent(conn, link) == [(PUBACK, 9)]

    asyncio.run(scenario())


def test_qos2_pubrec_waits_for_the_commit_and_a_failed_one_is_forgotten() -> None:
    """QoS 2: PUBREC goes out once stored, a resend meanwhile waits on the same commit, and a
    failed commit forgets the packet id so the resend is taken as a new message."""

    async def scenario() -> None:
        store = Store()
        conn, link = await _connection(store)
        session = conn.session
        assert session is not None
        pending = store.handle
        conn.data_received(publish_packet("s/q2", b"r", qos=2, pid=11))
        conn.data_received(publish_packet("s/q2", b"r", qos=2, pid=11, dup=True))
        assert await _sent(conn, link) == []
        pending.finish(COMMITTED)
        assert await _sent(conn, link) == [(PUBREC, 11), (PUBREC, 11)]
        conn.data_received(ack_packet(PUBREL, 11))
        assert await _sent(conn, link) == [(PUBCOMP, 11)]

        store.handle = failing = Batch(5)
        conn.data_received(publish_packet("s/q2", b"r", qos=2, pid=12))
        assert session.has_qos2(12)
        failing.finish(FAILED)
        assert await _sent(conn, link) == []
        assert not session.has_qos2(12)  # its resend will be stored anew

    asyncio.run(scenario())


@pytest.mark.parametrize("state", [COMMITTED, FAILED])
def test_a_closed_connection_ignores_its_batches(state: int) -> None:
    """A connection that went away before its batch finished writes nothing afterwards."""

    async def scenario() -> None:
        store = Store()
        conn, link = await _connection(store)
        conn.data_received(publish_packet("s/1", b"r", qos=1, pid=1))
        conn._ended = True
        store.handle.finish(state)
        assert await _sent(conn, link) == []

    asyncio.run(scenario())
