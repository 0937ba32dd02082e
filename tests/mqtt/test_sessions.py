"""Persistent sessions: Session Present, offline queues, redelivery of unacknowledged messages."""

import asyncio

import pytest

from tests.support.hubproc import HubProcess, scaled
from tests.support.mqtt import (
    PUBCOMP,
    PUBREC,
    PUBREL,
    RawClient,
    ack_packet,
    packet_id,
    publish_packet,
)
from tests.support.networks import PROMPT, QUIET, WAIT, Network

# The slow subscriber: more than 5 s behind (amqtt 0.12.1 gave up on a PUBACK after 5 s).
BEHIND_S = 5.0
# Long enough away for a lazy sweep of sessions (amqtt swept clean ones once a second).
AWAY_S = 1.0


async def _away(network: Network, client: RawClient, how: str) -> None:
    """The client goes away: a clean DISCONNECT or a dropped connection."""
    if how == "disconnect":
        await client.disconnect()
    else:
        await client.close()


def test_session_present_tells_whether_a_session_was_resumed(network: Network, tag: str) -> None:
    """Session Present is 0 for a new session, 1 when resumed, 0 again after a clean start."""

    async def scenario() -> None:
        client = await network.open()
        assert await client.connect(f"{tag}-c", clean=False) == (False, 0)
        await client.disconnect()
        client = await network.open()
        assert await client.connect(f"{tag}-c", clean=False) == (True, 0)
        await client.disconnect()
        client = await network.open()
        assert await client.connect(f"{tag}-c", clean=True) == (False, 0)
        await client.disconnect()

    asyncio.run(scenario())


@pytest.mark.parametrize("how", ["disconnect", "drop"])
def test_offline_messages_are_queued_for_a_persistent_session(
    network: Network, tag: str, how: str
) -> None:
    """QoS 1 and 2 messages published while a CleanSession=0 client is away arrive, in order."""

    async def scenario() -> None:
        sub = await network.client(f"{tag}-s", clean=False)
        assert await sub.subscribe([(f"{tag}/one", 1), (f"{tag}/two", 2)]) == [1, 2]
        await _away(network, sub, how)
        pub = await network.client(f"{tag}-p")
        for i in range(3):
            await pub.publish(f"{tag}/one", b"m%d" % i, qos=1, pid=i + 1, timeout=WAIT)
        await pub.publish(f"{tag}/two", b"m3", qos=2, pid=9, timeout=WAIT)
        sub = await network.open()
        assert await sub.connect(f"{tag}-s", clean=False) == (True, 0)
        got = []
        for _ in range(4):
            msg = await sub.next_message(WAIT, ack=False)
            got.append((msg.topic, msg.payload, msg.qos))
            if msg.qos == 1:
                await sub.send(ack_packet(4, msg.pid or 0))  # PUBACK
            else:
                await sub.complete_qos2(msg.pid or 0, WAIT)
        assert got == [
            (f"{tag}/one", b"m0", 1),
            (f"{tag}/one", b"m1", 1),
            (f"{tag}/one", b"m2", 1),
            (f"{tag}/two", b"m3", 2),
        ]
        await sub.recv_nothing(QUIET)
        await sub.disconnect()
        await pub.disconnect()

    asyncio.run(scenario())


def test_offline_messages_are_delivered_with_retain_0(network: Network, tag: str) -> None:
    """A message queued while the client was away is not a retained message: RETAIN=0."""

    async def scenario() -> None:
        sub = await network.client(f"{tag}-s", clean=False)
        assert await sub.subscribe([(f"{tag}/q", 1)]) == [1]
        await sub.disconnect()
        pub = await network.client(f"{tag}-p")
        await pub.publish(f"{tag}/q", b"queued", qos=1, timeout=WAIT)
        sub = await network.open()
        assert await sub.connect(f"{tag}-s", clean=False) == (True, 0)
        msg = await sub.next_message(WAIT)
        assert (msg.payload, msg.retain) == (b"queued", False)
        await sub.disconnect()
        await pub.disconnect()

    asyncio.run(scenario())


def test_clean_session_discards_the_stored_session(network: Network, tag: str) -> None:
    """CleanSession=1 throws away the stored subscriptions and the queued messages."""

    async def scenario() -> None:
        sub = await network.client(f"{tag}-s", clean=False)
        assert await sub.subscribe([(f"{tag}/q", 1)]) == [1]
        await sub.disconnect()
        pub = await network.client(f"{tag}-p")
        await pub.publish(f"{tag}/q", b"stale", qos=1, timeout=WAIT)
        sub = await network.open()
        assert await sub.connect(f"{tag}-s", clean=True) == (False, 0)
        await pub.publish(f"{tag}/q", b"unsubscribed", qos=1, timeout=WAIT)
        await sub.recv_nothing(QUIET)
        await sub.disconnect()
        await pub.disconnect()

    asyncio.run(scenario())


def test_persistent_connect_does_not_inherit_a_clean_session(network: Network, tag: str) -> None:
    """Taking over a clean session's client id with CleanSession=0 starts an empty session."""

    async def scenario() -> None:
        clean = await network.client(f"{tag}-c", clean=True)
        assert await clean.subscribe([(f"{tag}/old", 1)]) == [1]
        persistent = await network.open()
        assert await persistent.connect(f"{tag}-c", clean=False) == (False, 0)
        pub = await network.client(f"{tag}-p")
        await pub.publish(f"{tag}/old", b"not subscribed", qos=1, timeout=WAIT)
        await persistent.recv_nothing(QUIET)
        await persistent.disconnect()
        await pub.disconnect()

    asyncio.run(scenario())


def test_session_taken_over_from_a_clean_one_is_persistent(tcp: Network, tag: str) -> None:
    """After a CleanSession=0 take-over the session persists and queues messages while away."""

    async def scenario() -> None:
        clean = await tcp.client(f"{tag}-c", clean=True)
        persistent = await tcp.client(f"{tag}-c", clean=False)
        assert await persistent.subscribe([(f"{tag}/q", 1)]) == [1]
        await persistent.disconnect()
        await asyncio.sleep(AWAY_S + scaled(0.2))
        pub = await tcp.client(f"{tag}-p")
        await pub.publish(f"{tag}/q", b"kept", qos=1, timeout=WAIT)
        persistent = await tcp.open()
        assert await persistent.connect(f"{tag}-c", clean=False) == (True, 0)
        assert (await persistent.next_message(WAIT)).payload == b"kept"
        await persistent.disconnect()
        await pub.disconnect()
        await clean.close()

    asyncio.run(scenario())


def test_persistent_session_moves_between_networks(shared_hub: HubProcess, tag: str) -> None:
    """A session made over WebSocket is resumed over TCP with its queued messages."""

    async def scenario() -> None:
        ws, tcp = Network(shared_hub, "ws"), Network(shared_hub, "tcp")
        sub = await ws.client(f"{tag}-s", clean=False)
        assert await sub.subscribe([(f"{tag}/x", 1)]) == [1]
        await sub.disconnect()
        pub = await ws.client(f"{tag}-p")
        await pub.publish(f"{tag}/x", b"across", qos=1, timeout=WAIT)
        sub = await tcp.open()
        assert await sub.connect(f"{tag}-s", clean=False) == (True, 0)
        assert (await sub.next_message(WAIT)).payload == b"across"
        await sub.disconnect()
        await pub.disconnect()

    asyncio.run(scenario())


def test_unacknowledged_qos1_is_resent_with_dup_on_reconnect(network: Network, tag: str) -> None:
    """A QoS 1 message the client never acknowledged comes again after reconnect, DUP=1."""

    async def scenario() -> None:
        sub = await network.client(f"{tag}-s", clean=False)
        assert await sub.subscribe([(f"{tag}/q", 1)]) == [1]
        pub = await network.client(f"{tag}-p")
        await pub.publish(f"{tag}/q", b"ack me", qos=1, timeout=WAIT)
        first = await sub.next_message(WAIT, ack=False)
        assert (first.payload, first.dup) == (b"ack me", False)
        await sub.close()
        sub = await network.open()
        assert await sub.connect(f"{tag}-s", clean=False) == (True, 0)
        again = await sub.next_message(PROMPT, ack=False)
        assert (again.payload, again.qos, again.dup, again.pid) == (b"ack me", 1, True, first.pid)
        await sub.send(ack_packet(4, first.pid or 0))
        await sub.recv_nothing(QUIET)
        await sub.disconnect()
        await pub.disconnect()

    asyncio.run(scenario())


def test_unreceived_qos2_is_resent_with_dup_on_reconnect(network: Network, tag: str) -> None:
    """A QoS 2 PUBLISH without PUBREC is sent again with DUP=1 and the same id on reconnect."""

    async def scenario() -> None:
        sub = await network.client(f"{tag}-s", clean=False)
        assert await sub.subscribe([(f"{tag}/q", 2)]) == [2]
        pub = await network.client(f"{tag}-p")
        await pub.publish(f"{tag}/q", b"exactly once", qos=2, timeout=WAIT)
        first = await sub.next_message(WAIT, ack=False)
        await sub.close()
        sub = await network.open()
        assert await sub.connect(f"{tag}-s", clean=False) == (True, 0)
        again = await sub.next_message(PROMPT, ack=False)
        assert (again.payload, again.qos, again.dup, again.pid) == (
            b"exactly once",
            2,
            True,
            first.pid,
        )
        await sub.complete_qos2(first.pid or 0, WAIT)
        await sub.disconnect()
        await pub.disconnect()

    asyncio.run(scenario())


def test_pubrel_is_resent_on_reconnect(network: Network, tag: str) -> None:
    """After PUBREC the broker owes a PUBREL: it resends it (not the PUBLISH) on reconnect."""

    async def scenario() -> None:
        sub = await network.client(f"{tag}-s", clean=False)
        assert await sub.subscribe([(f"{tag}/q", 2)]) == [2]
        pub = await network.client(f"{tag}-p")
        await pub.publish(f"{tag}/q", b"half", qos=2, timeout=WAIT)
        first = await sub.next_message(WAIT, ack=False)
        await sub.send(ack_packet(PUBREC, first.pid or 0))
        await sub.expect_reply(PUBREL, first.pid, WAIT)
        await sub.close()
        sub = await network.open()
        assert await sub.connect(f"{tag}-s", clean=False) == (True, 0)
        await sub.expect_reply(PUBREL, first.pid, PROMPT)
        await sub.send(ack_packet(PUBCOMP, first.pid or 0))
        await sub.recv_nothing(QUIET)
        await sub.disconnect()
        await pub.disconnect()

    asyncio.run(scenario())


def test_incoming_qos2_completes_after_the_publisher_reconnects(
    network: Network, tag: str
) -> None:
    """A publisher that got PUBREC, dropped, and sends PUBREL on reconnect gets PUBCOMP;
    the message is delivered exactly once."""

    async def scenario() -> None:
        sub = await network.client(f"{tag}-s")
        assert await sub.subscribe([(f"{tag}/q", 0)]) == [0]
        pub = await network.client(f"{tag}-p", clean=False)
        await pub.send(publish_packet(f"{tag}/q", b"resumed", qos=2, pid=42))
        await pub.expect_reply(PUBREC, 42, WAIT)
        await pub.close()
        pub = await network.open()
        assert await pub.connect(f"{tag}-p", clean=False) == (True, 0)
        await pub.send(ack_packet(PUBREL, 42))
        reply = await pub.recv(WAIT)
        if reply.kind == PUBREC:  # a resuming broker may repeat its PUBREC first
            assert packet_id(reply) == 42
            reply = await pub.recv(WAIT)
        assert (reply.kind, packet_id(reply)) == (PUBCOMP, 42)
        assert (await sub.next_message(WAIT)).payload == b"resumed"
        await sub.recv_nothing(QUIET)
        await pub.disconnect()
        await sub.disconnect()

    asyncio.run(scenario())


def test_qos1_unacknowledged_for_longer_than_5s_is_not_lost(tcp: Network, tag: str) -> None:
    """A subscriber more than 5 s behind keeps its QoS 1 message in flight until reconnect."""

    async def scenario() -> None:
        sub = await tcp.client(f"{tag}-s", clean=False)
        assert await sub.subscribe([(f"{tag}/q", 1)]) == [1]
        pub = await tcp.client(f"{tag}-p")
        await pub.publish(f"{tag}/q", b"slow", qos=1, timeout=WAIT)
        first = await sub.next_message(WAIT, ack=False)
        await sub.recv_nothing(BEHIND_S + scaled(0.5))  # busy: no PUBACK for over 5 s
        await sub.close()
        sub = await tcp.open()
        assert await sub.connect(f"{tag}-s", clean=False) == (True, 0)
        again = await sub.next_message(PROMPT)
        assert (again.payload, again.dup, again.pid) == (b"slow", True, first.pid)
        await sub.disconnect()
        await pub.disconnect()

    asyncio.run(scenario())
