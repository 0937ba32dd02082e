"""A persistent session with a journal, without sockets: packet ids from sequence numbers,
records of deliveries and acknowledgements, and what a restart restores."""

import asyncio
from pathlib import Path

from hub.broker import codec
from hub.broker.journal import Journal
from hub.broker.session import Limits, Message, Queued, Session, pid_of
from hub.broker.statestore import SqliteBrokerState
from hub.commitlog import COMMITTED, PENDING
from tests.hub.broker.test_session import Wire


def _journal(tmp_path: Path) -> Journal:
    return Journal(SqliteBrokerState(tmp_path, sync="normal"))


def test_packet_ids_follow_sequence_numbers_and_wait_for_a_busy_id() -> None:
    """A durable delivery's packet id comes from its sequence number; one whose id is still
    in flight (65,535 deliveries later) waits in the queue until that id is acknowledged."""
    assert [pid_of(s) for s in (1, 2, 65535, 65536, 65537)] == [1, 2, 65535, 1, 2]
    session = Session("c", False, Limits(max_inflight=20, max_queued=10))
    wire = Wire()
    session.attach(wire)
    assert session.enqueue(Message("t", b"old", 2, False), 2, seq=1) is Queued.SENT
    assert session.enqueue(Message("t", b"new", 1, False), 1, seq=65536) is Queued.QUEUED
    assert [p.pid for p in wire.publishes()] == [1]
    session.on_pubrec(1)
    session.on_pubcomp(1)
    assert [(p.payload, p.pid) for p in wire.publishes()] == [(b"old", 1), (b"new", 1)]


def test_deliveries_and_acknowledgements_are_recorded_and_restored(tmp_path: Path) -> None:
    """Queued deliveries are stored with their sequence numbers, a PUBACK forgets one, a
    PUBREC marks one released (its PUBREL waits for that record); a session restored from
    the store queues the rest and sends PUBREL again for the released one."""

    async def scenario() -> None:
        journal = _journal(tmp_path)
        journal.start()
        session = Session("c", False, Limits(max_inflight=20, max_queued=10))
        session.journal = journal
        journal.session("c", "client:c")
        wire = Wire()
        session.attach(wire)
        for n, qos in ((1, 1), (2, 2), (3, 1)):
            seq = session.next_seq()
            message = Message("t", b"m%d" % n, qos, False)
            assert session.enqueue(message, qos, seq=seq) is Queued.SENT
            journal.queue("c", seq, message, qos, False)
        session.on_puback(pid_of(1))
        released = session.on_pubrec(pid_of(2))
        assert released is not None and released.state == PENDING
        assert not [p for p in wire.packets if p.kind == codec.PUBREL]  # not before the write
        await journal.stop()
        assert released.state == COMMITTED

        state = SqliteBrokerState(tmp_path).load(now=0.0)
        again = Session("c", False, Limits(max_inflight=20, max_queued=10))
        stored = [(seq, p, bool(rel)) for seq, _, p, _, _, rel in state.sessions["c"].deliveries]
        assert stored == [(2, b"m2", True), (3, b"m3", False)]
        again.restore(state.sessions["c"].deliveries)
        wire = Wire()
        again.attach(wire)
        kinds = [(p.kind, codec.parse_pid(p)) for p in wire.packets if p.kind == codec.PUBREL]
        assert kinds == [(codec.PUBREL, pid_of(2))]
        assert [(p.payload, p.pid) for p in wire.publishes()] == [(b"m3", pid_of(3))]
        assert again.next_seq() == 4  # after the highest stored

    asyncio.run(scenario())
