"""PUBLISH at QoS 0, 1 and 2: the flows, the delivery QoS, ordering, flags and invalid topics."""

import asyncio

import pytest

from tests.support.hubproc import HubProcess
from tests.support.mqtt import (
    PUBCOMP,
    PUBLISH,
    PUBREC,
    PUBREL,
    ack_packet,
    packet_id,
    publish_packet,
)
from tests.support.networks import PROMPT, QUIET, WAIT, Network, assert_serving


def test_qos0_publish_is_delivered_without_packet_id(network: Network, tag: str) -> None:
    """A QoS 0 message reaches a QoS 0 subscriber as QoS 0, unchanged, with no packet id."""

    async def scenario() -> None:
        sub = await network.client(f"{tag}-s")
        assert await sub.subscribe([(f"{tag}/t", 0)]) == [0]
        pub = await network.client(f"{tag}-p")
        await pub.publish(f"{tag}/t", b"\x00\x01binary\xff", qos=0)
        msg = await sub.next_message(WAIT)
        assert (msg.topic, msg.payload, msg.qos, msg.pid) == (
            f"{tag}/t",
            b"\x00\x01binary\xff",
            0,
            None,
        )
        assert (msg.retain, msg.dup) == (False, False)
        await pub.disconnect()
        await sub.disconnect()

    asyncio.run(scenario())


def test_qos1_publish_is_acknowledged_and_delivered(network: Network, tag: str) -> None:
    """PUBACK echoes the sender's packet id; the subscriber gets QoS 1 with a non-zero id."""

    async def scenario() -> None:
        sub = await network.client(f"{tag}-s")
        assert await sub.subscribe([(f"{tag}/t", 1)]) == [1]
        pub = await network.client(f"{tag}-p")
        await pub.publish(f"{tag}/t", b"one", qos=1, pid=0xBEEF, timeout=WAIT)
        msg = await sub.next_message(WAIT)
        assert (msg.payload, msg.qos, msg.dup) == (b"one", 1, False)
        assert msg.pid not in (None, 0)
        await sub.recv_nothing(QUIET)
        await pub.disconnect()
        await sub.disconnect()

    asyncio.run(scenario())


def test_qos2_flows_deliver_exactly_once(network: Network, tag: str) -> None:
    """PUBLISH/PUBREC/PUBREL/PUBCOMP both ways; the subscriber gets the message exactly once."""

    async def scenario() -> None:
        sub = await network.client(f"{tag}-s")
        assert await sub.subscribe([(f"{tag}/t", 2)]) == [2]
        pub = await network.client(f"{tag}-p")
        await pub.publish(f"{tag}/t", b"two", qos=2, pid=513, timeout=WAIT)
        msg = await sub.next_message(WAIT, ack=False)
        assert (msg.payload, msg.qos, msg.dup) == (b"two", 2, False)
        assert msg.pid not in (None, 0)
        await sub.complete_qos2(msg.pid, WAIT)
        await sub.recv_nothing(QUIET)
        await pub.disconnect()
        await sub.disconnect()

    asyncio.run(scenario())


def test_qos2_resent_publish_is_not_delivered_twice(network: Network, tag: str) -> None:
    """A QoS 2 PUBLISH sent again with DUP before PUBREL is still delivered only once."""

    async def scenario() -> None:
        sub = await network.client(f"{tag}-s")
        assert await sub.subscribe([(f"{tag}/t", 0)]) == [0]
        pub = await network.client(f"{tag}-p")
        await pub.send(publish_packet(f"{tag}/t", b"once", qos=2, pid=7))
        await pub.expect_reply(PUBREC, 7, WAIT)
        await pub.send(publish_packet(f"{tag}/t", b"once", qos=2, pid=7, dup=True))
        await pub.expect_reply(PUBREC, 7, WAIT)
        await pub.send(ack_packet(6, 7))  # PUBREL
        await pub.expect_reply(PUBCOMP, 7, WAIT)
        msg = await sub.next_message(WAIT)
        assert msg.payload == b"once"
        await sub.recv_nothing(QUIET)
        await pub.disconnect()
        await sub.disconnect()

    asyncio.run(scenario())


@pytest.mark.parametrize(
    ("pub_qos", "sub_qos"),
    [
        (0, 0),
        (0, 1),
        (0, 2),
        (1, 0),
        (1, 1),
        (1, 2),
        (2, 0),
        (2, 1),
        (2, 2),
    ],
)
def test_delivery_qos_is_the_minimum_of_publish_and_subscription(
    network: Network, tag: str, pub_qos: int, sub_qos: int
) -> None:
    """A message is delivered at min(publish QoS, granted QoS), never upgraded."""

    async def scenario() -> None:
        sub = await network.client(f"{tag}-s")
        assert await sub.subscribe([(f"{tag}/t", sub_qos)]) == [sub_qos]
        pub = await network.client(f"{tag}-p")
        await pub.publish(f"{tag}/t", b"q", qos=pub_qos, timeout=WAIT)
        msg = await sub.next_message(WAIT, ack=False)
        assert msg.qos == min(pub_qos, sub_qos)
        await pub.disconnect()
        await sub.disconnect()

    asyncio.run(scenario())


def test_messages_from_one_publisher_keep_their_order(network: Network, tag: str) -> None:
    """Fifty QoS 1 messages on one topic arrive in the order they were published."""

    async def scenario() -> None:
        sub = await network.client(f"{tag}-s")
        assert await sub.subscribe([(f"{tag}/seq", 1)]) == [1]
        pub = await network.client(f"{tag}-p")
        for i in range(50):
            await pub.send(publish_packet(f"{tag}/seq", b"%d" % i, qos=1, pid=i + 1))
        for i in range(50):
            await pub.expect_reply(4, i + 1, WAIT)  # PUBACK
        got = [(await sub.next_message(WAIT)).payload for _ in range(50)]
        assert got == [b"%d" % i for i in range(50)]
        await pub.disconnect()
        await sub.disconnect()

    asyncio.run(scenario())


def test_live_delivery_clears_the_retain_flag(network: Network, tag: str) -> None:
    """A retained publish reaches an already-subscribed client with RETAIN=0."""

    async def scenario() -> None:
        sub = await network.client(f"{tag}-s")
        assert await sub.subscribe([(f"{tag}/r", 1)]) == [1]
        pub = await network.client(f"{tag}-p")
        await pub.publish(f"{tag}/r", b"live", qos=1, retain=True, timeout=WAIT)
        msg = await sub.next_message(WAIT)
        assert (msg.payload, msg.retain) == (b"live", False)
        await pub.publish(f"{tag}/r", b"", qos=1, retain=True, timeout=WAIT)  # clear it again
        await pub.disconnect()
        await sub.disconnect()

    asyncio.run(scenario())


def test_empty_payload_is_delivered(network: Network, tag: str) -> None:
    """A zero-length payload is a valid message and is delivered as such."""

    async def scenario() -> None:
        sub = await network.client(f"{tag}-s")
        assert await sub.subscribe([(f"{tag}/e", 1)]) == [1]
        pub = await network.client(f"{tag}-p")
        await pub.publish(f"{tag}/e", b"", qos=1, timeout=WAIT)
        msg = await sub.next_message(WAIT)
        assert (msg.topic, msg.payload) == (f"{tag}/e", b"")
        await pub.disconnect()
        await sub.disconnect()

    asyncio.run(scenario())


def test_publisher_receives_its_own_message(network: Network, tag: str) -> None:
    """MQTT 3.1.1 has no no-local option: a client subscribed to its topic gets its message."""

    async def scenario() -> None:
        client = await network.client(f"{tag}-c")
        assert await client.subscribe([(f"{tag}/echo", 1)]) == [1]
        await client.publish(f"{tag}/echo", b"me", qos=1, pid=3, timeout=WAIT)
        msg = await client.next_message(WAIT)
        assert msg.payload == b"me"
        await client.disconnect()

    asyncio.run(scenario())


@pytest.mark.parametrize(
    ("transport", "topic", "qos"),
    [
        ("tcp", "{tag}/+/x", 0),
        ("tcp", "{tag}/#", 1),
        ("tcp", "", 0),
        ("ws", "{tag}/+", 1),
    ],
    ids=["tcp-plus", "tcp-hash", "tcp-empty", "ws-plus"],
)
def test_publish_to_an_invalid_topic_closes_and_fires_the_will(
    shared_hub: HubProcess, tag: str, transport: str, topic: str, qos: int
) -> None:
    """A PUBLISH to a wildcard or empty topic closes the connection, and the will is sent."""
    network = Network(shared_hub, transport)

    async def scenario() -> None:
        watcher = await network.client(f"{tag}-w")
        assert await watcher.subscribe([(f"{tag}/will", 0)]) == [0]
        bad = await network.client(f"{tag}-bad", will=(f"{tag}/will", b"gone", 0, False))
        await bad.send(publish_packet(topic.format(tag=tag), b"x", qos=qos, pid=1))
        seen = await bad.packets_until_closed(PROMPT)
        assert all(p.kind == 4 and packet_id(p) == 1 for p in seen), seen  # at most a PUBACK
        msg = await watcher.next_message(PROMPT)
        assert (msg.topic, msg.payload) == (f"{tag}/will", b"gone")
        await watcher.disconnect()
        await assert_serving(network, tag)

    asyncio.run(scenario())


@pytest.mark.parametrize("qos", [0, 1, 2])
def test_publish_to_a_dollar_topic_is_acknowledged_and_dropped(
    network: Network, tag: str, qos: int
) -> None:
    """A PUBLISH to a '$' topic is acknowledged (PUBACK, PUBREC) but never routed, and the
    connection stays open (issue #15, fix 2)."""

    async def scenario() -> None:
        spy = await network.client(f"{tag}-spy")
        assert await spy.subscribe([("$SYS/#", 1)]) == [1]
        client = await network.client(f"{tag}-c")
        assert await client.subscribe([(f"{tag}/after", 1)]) == [1]
        await client.publish("$SYS/hack", b"x", qos=qos, pid=7, timeout=WAIT)  # the full flow
        await client.publish(f"{tag}/after", b"still here", qos=1, pid=8, timeout=WAIT)
        assert (await client.next_message(WAIT)).payload == b"still here"
        await spy.recv_nothing(QUIET)
        await client.disconnect()
        await spy.disconnect()

    asyncio.run(scenario())


def test_qos2_pubrec_comes_before_the_forwarded_message(network: Network, tag: str) -> None:
    """The broker sends PUBREC to a QoS 2 publisher before it forwards the message, even to
    the publisher's own subscription (issue #15, fix 3)."""

    async def scenario() -> None:
        client = await network.client(f"{tag}-c")
        assert await client.subscribe([(f"{tag}/echo", 2)]) == [2]
        await client.send(publish_packet(f"{tag}/echo", b"once", qos=2, pid=5))
        first = await client.recv(WAIT)
        assert first.kind == PUBREC and packet_id(first) == 5, f"got {first} before PUBREC"
        await client.send(ack_packet(PUBREL, 5))
        kinds = {(await client.recv(WAIT)).kind, (await client.recv(WAIT)).kind}
        assert kinds == {PUBCOMP, PUBLISH}
        await client.disconnect()

    asyncio.run(scenario())
