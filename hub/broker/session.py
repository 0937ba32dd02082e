"""One client's MQTT session, without I/O: subscriptions, messages in flight, the bounded queue.

Delivery policy (README, "Broker behaviour and limits"):

- A message goes straight to the connection while fewer than ``max_inflight`` QoS 1/2 messages
  await their acknowledgement and the connection's write buffer is under ``high_water`` bytes;
  otherwise it waits in the session's queue.
- Messages in flight never time out (amqtt drops QoS 1 messages after 5 s). When a persistent
  session reconnects, they are sent again with DUP set, in their original order, then the queue.
- The queue holds at most ``max_queued`` messages and ``max_queued_bytes`` bytes (topics and
  payloads). When it is full, the oldest QoS 0 messages make room; with no QoS 0 message to
  drop, a new QoS 0 message is dropped and a new QoS 1/2 message overflows: the broker
  disconnects a connected client (slow consumer) and reports it, and drops (and reports)
  messages for an offline one. With ``disconnect_slow`` a connected client whose queue is full
  overflows on any message, QoS 0 included.
- While a persistent session is offline, QoS 1/2 messages are queued and QoS 0 messages dropped.

Durable sessions (hub/broker/journal.py): a persistent session of a hub with a state store
has a ``journal``. Each QoS 1/2 delivery to it carries a sequence number (``next_seq``) whose
record the broker wrote; its packet id is derived from it (``pid_of``), so after a restart a
QoS 2 message goes out again with the id the client may hold. Acknowledgements forget the
record (lazily), a PUBREC marks it released, and incoming QoS 2 receipts are recorded too.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING, Protocol

from hub.broker import codec

if TYPE_CHECKING:
    from hub.broker.journal import Journal
    from hub.broker.statestore import Delivery
    from hub.commitlog import Batch


@dataclass(frozen=True, slots=True)
class Limits:
    max_inflight: int = 20
    max_queued: int = 1000
    high_water: int = 256 * 1024  # bytes waiting in the connection's write buffer
    max_queued_bytes: int = 8 * 1024 * 1024  # topics and payloads waiting in the queue
    disconnect_slow: bool = False  # a connected client with a full queue: cut off, any QoS


class Link(Protocol):
    """Where a connected session writes its packets."""

    def write(self, data: bytes) -> None: ...

    def buffered(self) -> int: ...


class Message:
    """An application message as published; its topic is encoded once for every delivery."""

    __slots__ = ("payload", "qos", "retain", "topic", "topic_bytes")

    def __init__(self, topic: str, payload: bytes, qos: int, retain: bool) -> None:
        self.topic = topic
        self.topic_bytes = topic.encode()
        self.payload = payload
        self.qos = qos
        self.retain = retain

    def __repr__(self) -> str:
        return f"Message({self.topic!r}, {len(self.payload)} bytes, qos={self.qos})"


class Queued(Enum):
    SENT = "sent"
    QUEUED = "queued"
    DROPPED = "dropped"  # QoS 0 with no room, or any QoS 0 for an offline session
    OVERFLOW = "overflow"  # QoS 1/2 with no room: the session cannot keep its promise


# Module names for the members: an enum's attribute lookup costs a metaclass call per message.
_SENT, _QUEUED, _DROPPED, _OVERFLOW = Queued.SENT, Queued.QUEUED, Queued.DROPPED, Queued.OVERFLOW


def pid_of(seq: int) -> int:
    """The packet id of a durable delivery: from its sequence number, 1 to 65535."""
    return (seq - 1) % 65535 + 1


class _Outgoing:
    __slots__ = ("message", "qos", "released", "seq")

    def __init__(self, message: Message, qos: int, seq: int = 0) -> None:
        self.message = message
        self.qos = qos
        self.seq = seq  # a durable delivery's record, else 0
        self.released = False  # QoS 2: PUBREC received, PUBREL sent, awaiting PUBCOMP


class Session:
    """The queue and the QoS 2 receipts are made when first needed: most sessions of a fleet
    never use them, and empty ones cost about 1 KB."""

    __slots__ = (
        "_pid",
        "clean",
        "client_id",
        "dropped",
        "inflight",
        "journal",
        "limits",
        "link",
        "owner",
        "queue",
        "queued_bytes",
        "receipts",
        "seq",
        "subscriptions",
    )

    def __init__(self, client_id: str, clean: bool, limits: Limits) -> None:
        self.client_id = client_id
        self.clean = clean
        self.limits = limits
        self.subscriptions: dict[str, int] = {}
        self.inflight: dict[int, _Outgoing] = {}
        # (message, qos, retain, seq of a durable delivery or 0)
        self.queue: deque[tuple[Message, int, bool, int]] | None = None
        self.queued_bytes = 0  # topics and payloads in the queue
        self.owner = ""  # the identity a persistent session is charged to (the broker's key)
        self.receipts: set[int] | None = None  # QoS 2 packet ids received, PUBREL not yet
        self.link: Link | None = None
        self.dropped = 0
        self._pid = 0
        self.journal: Journal | None = None  # a persistent session of a hub with a state store
        self.seq = 0  # the last durable delivery's sequence number

    # --- connection ----------------------------------------------------------------------
    def attach(self, link: Link) -> None:
        """A connection takes the session: resend what is in flight (DUP), then the queue."""
        self.link = link
        for pid, out in self.inflight.items():
            if out.released:
                link.write(codec.ack(codec.PUBREL, pid))
            else:
                m = out.message
                link.write(codec.publish(m.topic_bytes, m.payload, out.qos, False, pid, dup=True))
        self.pump()

    def restore(self, deliveries: list[Delivery]) -> None:
        """The deliveries a restart found stored (oldest first): released QoS 2 ones await
        PUBCOMP (PUBREL goes again on attach), the rest are queued with their ids."""
        queue: deque[tuple[Message, int, bool, int]] = deque()
        size = 0
        for seq, topic, payload, qos, retain, released in deliveries:
            message = Message(topic, bytes(payload), qos, False)
            if released and qos == 2:
                out = _Outgoing(message, 2, seq)
                out.released = True
                self.inflight[pid_of(seq)] = out
            else:
                queue.append((message, qos, bool(retain), seq))
                size += len(message.payload) + len(message.topic_bytes)
        if deliveries:
            self.seq = max(self.seq, deliveries[-1][0])  # oldest first
        self.queued_bytes += size
        self.queue = queue or None

    def next_seq(self) -> int:
        """The sequence number of a new durable delivery."""
        self.seq += 1
        return self.seq

    def detach(self) -> None:
        self.link = None

    # --- outgoing ------------------------------------------------------------------------
    def enqueue(self, message: Message, qos: int, retain: bool = False, seq: int = 0) -> Queued:
        """Sends or queues a delivery at the given QoS (already min(publish, subscription));
        ``seq``: a durable delivery's (``next_seq``)."""
        link = self.link
        queue = self.queue
        limits = self.limits
        if link is not None and not queue and link.buffered() < limits.high_water:
            if qos == 0:
                link.write(codec.publish(message.topic_bytes, message.payload, 0, retain))
                return _SENT
            inflight = self.inflight
            if len(inflight) < limits.max_inflight and (not seq or pid_of(seq) not in inflight):
                self._send(message, qos, retain, seq)
                return _SENT
        if link is None and qos == 0:
            self.dropped += 1
            return _DROPPED
        if queue is None:
            queue = self.queue = deque()
        size = len(message.payload) + len(message.topic_bytes)
        if len(queue) >= limits.max_queued or self.queued_bytes + size > limits.max_queued_bytes:
            if link is not None and limits.disconnect_slow:
                self.dropped += 1
                return _OVERFLOW
            if not self._make_room(queue, size):
                self.dropped += 1
                return _DROPPED if qos == 0 else _OVERFLOW
        queue.append((message, qos, retain, seq))
        self.queued_bytes += size
        return _QUEUED

    def full_because(self) -> str:
        """Which bound a full queue hit, as hub events name it."""
        if self.queue is not None and len(self.queue) >= self.limits.max_queued:
            return "queued_messages"
        return "queued_bytes"

    def _make_room(self, queue: deque[tuple[Message, int, bool, int]], size: int) -> bool:
        """Drops the oldest QoS 0 messages until ``size`` more bytes and one more message fit;
        False (nothing dropped) when they cannot."""
        limits = self.limits
        need_count = len(queue) + 1 - limits.max_queued
        need_bytes = self.queued_bytes + size - limits.max_queued_bytes
        if size > limits.max_queued_bytes:
            return False
        victims = []
        for index, (message, qos, _, _) in enumerate(queue):
            if need_count <= 0 and need_bytes <= 0:
                break
            if qos == 0:
                victims.append(index)
                need_count -= 1
                need_bytes -= len(message.payload) + len(message.topic_bytes)
        if need_count > 0 or need_bytes > 0:
            return False
        for index in reversed(victims):
            message = queue[index][0]
            del queue[index]
            self.queued_bytes -= len(message.payload) + len(message.topic_bytes)
            self.dropped += 1
        return True

    def pump(self) -> bool:
        """Moves queued messages to the connection; False when its write buffer is full (looked
        at only when a message may go: True while the in-flight window is full)."""
        link = self.link
        if link is None:
            return True
        queue = self.queue
        if not queue:
            self.queue = None  # drained: give its blocks back
            self.queued_bytes = 0
            return True
        limits = self.limits
        high_water, max_inflight = limits.high_water, limits.max_inflight
        inflight = self.inflight
        while queue:
            message, qos, retain, seq = queue[0]
            if qos and (len(inflight) >= max_inflight or (seq and pid_of(seq) in inflight)):
                # An acknowledgement will call pump again (and the connection looks at its
                # write buffer after each read): the buffer is not looked at for nothing.
                return True
            if link.buffered() >= high_water:
                return False
            queue.popleft()
            self.queued_bytes -= len(message.payload) + len(message.topic_bytes)
            if qos:
                self._send(message, qos, retain, seq)
            else:
                link.write(codec.publish(message.topic_bytes, message.payload, 0, retain))
        self.queue = None
        self.queued_bytes = 0
        return True

    def _send(self, message: Message, qos: int, retain: bool, seq: int = 0) -> None:
        pid = pid_of(seq) if seq else self._next_pid()
        self.inflight[pid] = _Outgoing(message, qos, seq)
        assert self.link is not None
        self.link.write(codec.publish(message.topic_bytes, message.payload, qos, retain, pid))

    def _next_pid(self) -> int:
        pid = self._pid
        while True:
            pid = pid % 65535 + 1
            if pid not in self.inflight:
                self._pid = pid
                return pid

    # --- acknowledgements from the client ----------------------------------------------------
    def on_puback(self, pid: int) -> None:
        out = self.inflight.get(pid)
        if out is not None and out.qos == 1:
            del self.inflight[pid]
            if out.seq and self.journal is not None:
                self.journal.done(self.client_id, out.seq)
            self.pump()

    def on_pubrec(self, pid: int) -> Batch | None:
        """Marks the message released. Returns the batch its PUBREL waits for (the caller
        sends it once that has committed), or None: PUBREL was sent."""
        out = self.inflight.get(pid)
        if out is not None and out.qos == 2:
            if not out.released and out.seq and self.journal is not None:
                out.released = True
                return self.journal.release(self.client_id, out.seq)
            out.released = True
        if self.link is not None:
            self.link.write(codec.ack(codec.PUBREL, pid))
        return None

    def on_pubcomp(self, pid: int) -> None:
        out = self.inflight.get(pid)
        if out is not None and out.released:
            del self.inflight[pid]
            if out.seq and self.journal is not None:
                self.journal.done(self.client_id, out.seq)
            self.pump()

    @property
    def depth(self) -> int:
        """Messages the client has not acknowledged yet: in flight plus queued."""
        return len(self.inflight) + (len(self.queue) if self.queue else 0)

    # --- QoS 2 from the client -----------------------------------------------------------------
    def has_qos2(self, pid: int) -> bool:
        """Whether an incoming QoS 2 publish with this id was delivered and not released."""
        return self.receipts is not None and pid in self.receipts

    def received_qos2(self, pid: int) -> Batch | None:
        """Remembers an incoming QoS 2 publish until the client releases it (PUBREL); the
        batch that records it for a durable session."""
        if self.receipts is None:
            self.receipts = set()
        self.receipts.add(pid)
        if self.journal is not None:
            return self.journal.receipt(self.client_id, pid)
        return None

    def released_qos2(self, pid: int) -> None:
        """PUBREL: the client will not send that publish again."""
        if self.receipts is not None and pid in self.receipts:
            self.receipts.discard(pid)
            if not self.receipts:
                self.receipts = None
            if self.journal is not None:
                self.journal.unreceipt(self.client_id, pid)
