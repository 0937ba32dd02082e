"""Session delivery policy without sockets: in-flight window, queue bounds, redelivery."""

from hub.broker import codec
from hub.broker.session import Limits, Message, Queued, Session


class Wire:
    """A link that records what the session writes (the sans-I/O boundary)."""

    def __init__(self, buffered: int = 0) -> None:
        self.packets: list[codec.Packet] = []
        self._parser = codec.Parser(1 << 20)
        self.backlog = buffered

    def write(self, data: bytes) -> None:
        self.packets.extend(self._parser.feed(data))

    def buffered(self) -> int:
        return self.backlog

    def publishes(self) -> list[codec.Publish]:
        return [codec.parse_publish(p, 1 << 20) for p in self.packets if p.kind == codec.PUBLISH]


def msg(n: int, qos: int = 1) -> Message:
    return Message(f"t/{n}", str(n).encode(), qos, False)


def test_inflight_window_queues_and_acks_release() -> None:
    """Beyond max_inflight messages wait; each PUBACK releases the next one."""
    session = Session("c", False, Limits(max_inflight=2, max_queued=10))
    wire = Wire()
    session.attach(wire)
    results = [session.enqueue(msg(i), 1) for i in range(4)]
    assert results == [Queued.SENT, Queued.SENT, Queued.QUEUED, Queued.QUEUED]
    first = wire.publishes()[0]
    session.on_puback(first.pid)
    assert [p.payload for p in wire.publishes()] == [b"0", b"1", b"2"]


def test_resume_resends_inflight_with_dup_then_queue() -> None:
    """On reconnect, unacknowledged messages are resent with DUP and the same ids, in order."""
    session = Session("c", False, Limits(max_inflight=2, max_queued=10))
    first = Wire()
    session.attach(first)
    for i in range(3):
        session.enqueue(msg(i), 1)
    session.detach()
    assert session.enqueue(msg(3), 1) is Queued.QUEUED  # offline: kept
    assert session.enqueue(msg(4, qos=0), 0) is Queued.DROPPED  # offline QoS 0: dropped
    second = Wire()
    session.attach(second)
    again = second.publishes()
    assert [(p.payload, p.dup) for p in again] == [(b"0", True), (b"1", True)]
    assert [p.pid for p in again] == [p.pid for p in first.publishes()]
    for p in again:
        session.on_puback(p.pid)
    assert [p.payload for p in second.publishes()[2:]] == [b"2", b"3"]


def test_full_queue_drops_oldest_qos0_then_overflows() -> None:
    """A full queue makes room by dropping its oldest QoS 0 message, then overflows on QoS 1."""
    session = Session("c", False, Limits(max_inflight=1, max_queued=3))
    session.attach(Wire(buffered=10**9))  # a client that reads nothing: everything queues
    assert session.enqueue(msg(0, 0), 0) is Queued.QUEUED
    assert session.enqueue(msg(1), 1) is Queued.QUEUED
    assert session.enqueue(msg(2), 1) is Queued.QUEUED
    assert session.enqueue(msg(3), 1) is Queued.QUEUED  # msg 0 (QoS 0) made room
    assert session.queue is not None
    assert [m.payload for m, *_ in session.queue] == [b"1", b"2", b"3"]
    assert session.enqueue(msg(4, 0), 0) is Queued.DROPPED
    assert session.enqueue(msg(5), 1) is Queued.OVERFLOW
    assert session.dropped == 3


def test_qos2_outgoing_flow() -> None:
    """QoS 2: PUBREC is answered with PUBREL, PUBCOMP completes, and resume resends PUBREL."""
    session = Session("c", False, Limits())
    wire = Wire()
    session.attach(wire)
    session.enqueue(msg(1, 2), 2)
    pid = wire.publishes()[0].pid
    session.on_pubrec(pid)
    assert wire.packets[-1].kind == codec.PUBREL
    session.detach()
    again = Wire()
    session.attach(again)
    assert [p.kind for p in again.packets] == [codec.PUBREL]
    session.on_pubcomp(pid)
    assert session.depth == 0


def test_packet_ids_wrap_to_one_and_skip_ids_in_flight() -> None:
    """Packet ids go 65535 -> 1, never 0, and skip ids still in flight."""
    session = Session("c", False, Limits(max_inflight=3))
    wire = Wire()
    session.attach(wire)
    session._pid = 65534
    for i in range(3):
        session.enqueue(msg(i), 1)
    assert [p.pid for p in wire.publishes()] == [65535, 1, 2]


def big(n: int, size: int, qos: int = 1) -> Message:
    return Message(f"t/{n}", b"%d" % n + b"." * (size - 1), qos, False)


def test_queue_is_bounded_in_bytes_too() -> None:
    """Past max_queued_bytes the oldest QoS 0 messages make room; with none to drop, a QoS 1
    message overflows and a QoS 0 one is dropped; the byte count follows the queue."""
    session = Session("c", False, Limits(max_inflight=1, max_queued_bytes=3000))
    wire = Wire(buffered=1 << 30)  # a reader that never drains: everything queues
    session.attach(wire)
    assert session.enqueue(big(0, 1000, 0), 0) is Queued.QUEUED
    assert session.enqueue(big(1, 1000), 1) is Queued.QUEUED
    assert session.enqueue(big(2, 900), 1) is Queued.QUEUED
    assert session.queued_bytes == 2900 + 9
    assert session.enqueue(big(3, 900), 1) is Queued.QUEUED  # the QoS 0 one made room
    assert [m.topic for m, *_ in session.queue or ()] == ["t/1", "t/2", "t/3"]
    assert session.enqueue(big(4, 900), 1) is Queued.OVERFLOW
    assert session.full_because() == "queued_bytes"
    assert session.enqueue(big(5, 900, 0), 0) is Queued.DROPPED
    wire.backlog = 0
    session.on_puback(0)  # nothing in flight: pump by hand
    session.pump()
    assert session.queued_bytes == sum(len(m.payload) + 3 for m, *_ in session.queue or ())


def test_disconnect_slow_overflows_on_any_qos() -> None:
    """With disconnect_slow a connected client's full queue overflows even on QoS 0 (the
    broker then disconnects it); offline sessions still just drop QoS 0."""
    session = Session("c", False, Limits(max_queued=2, disconnect_slow=True))
    wire = Wire(buffered=1 << 30)
    session.attach(wire)
    assert [session.enqueue(msg(i, 0), 0) for i in range(2)] == [Queued.QUEUED] * 2
    assert session.full_because() == "queued_messages"
    assert session.enqueue(msg(2, 0), 0) is Queued.OVERFLOW
    session.detach()
    assert session.enqueue(msg(3, 0), 0) is Queued.DROPPED
