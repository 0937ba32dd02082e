"""A broker connection's ordered ack queue, without sockets: acks wait for the commit of the
stored message and keep the order their publishes came in; failures are forgotten."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from hub.broker import BrokerSettings
from hub.broker.codec import Packet, Parser
from hub.broker.connection import Connection
from hub.broker.core import BrokerCore
from hub.broker.extensions import Extensions
from hub.broker.login import Login
from hub.broker.session import Session
from hub.broker.transports import Link
from hub.commitlog import COMMITTED, FAILED, REFUSED, Batch
from hub.security import Gatekeeper, Identity
from tests.support.mqtt import PUBACK, PUBCOMP, PUBREC, PUBREL, ack_packet, publish_packet


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
    login = Login(Gatekeeper(None, b"k" * 32, allow_anonymous=False), 0)
    core = BrokerCore(BrokerSettings(), login, Extensions(None))
    core.message_listeners.append(store)
    link = MemoryLink()
    conn = Connection(core, link)
    conn._stop_timer()
    conn.client_id = "acks"
    conn.identity = Identity("anonymous", "acks", unrestricted=True)
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
