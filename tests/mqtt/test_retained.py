"""Retained messages: stored, replaced, cleared, sent only to a client's own new subscriptions."""

import asyncio

import pytest

from tests.support.networks import QUIET, WAIT, Network


def test_retained_message_goes_to_a_new_subscriber(network: Network, tag: str) -> None:
    """A retained message is sent with RETAIN=1 to a later subscriber."""

    async def scenario() -> None:
        pub = await network.client(f"{tag}-p")
        await pub.publish(f"{tag}/state", b"on", qos=1, retain=True, timeout=WAIT)
        sub = await network.client(f"{tag}-s")
        assert await sub.subscribe([(f"{tag}/state", 1)]) == [1]
        msg = await sub.next_message(WAIT)
        assert (msg.topic, msg.payload, msg.retain) == (f"{tag}/state", b"on", True)
        await sub.recv_nothing(QUIET)
        await pub.disconnect()
        await sub.disconnect()

    asyncio.run(scenario())


def test_newer_retained_message_replaces_the_older(network: Network, tag: str) -> None:
    """Only the last retained message of a topic is kept."""

    async def scenario() -> None:
        pub = await network.client(f"{tag}-p")
        for value in (b"1", b"2", b"3"):
            await pub.publish(f"{tag}/v", value, qos=1, retain=True, timeout=WAIT)
        sub = await network.client(f"{tag}-s")
        assert await sub.subscribe([(f"{tag}/v", 0)]) == [0]
        assert (await sub.next_message(WAIT)).payload == b"3"
        await sub.recv_nothing(QUIET)
        await pub.disconnect()
        await sub.disconnect()

    asyncio.run(scenario())


def test_empty_retained_message_clears_the_topic(network: Network, tag: str) -> None:
    """A retained PUBLISH with an empty payload removes the retained message."""

    async def scenario() -> None:
        pub = await network.client(f"{tag}-p")
        await pub.publish(f"{tag}/c", b"old", qos=1, retain=True, timeout=WAIT)
        await pub.publish(f"{tag}/c", b"", qos=0, retain=True)
        await pub.publish(f"{tag}/mark", b"m", qos=1, retain=True, timeout=WAIT)
        sub = await network.client(f"{tag}-s")
        assert await sub.subscribe([(f"{tag}/+", 0)]) == [0]
        msg = await sub.next_message(WAIT)
        assert (msg.topic, msg.payload) == (f"{tag}/mark", b"m")
        await sub.recv_nothing(QUIET)
        await pub.publish(f"{tag}/mark", b"", qos=1, retain=True, timeout=WAIT)
        await pub.disconnect()
        await sub.disconnect()

    asyncio.run(scenario())


def test_wildcard_subscription_gets_every_matching_retained_message(
    network: Network, tag: str
) -> None:
    """A wildcard subscription receives the retained message of every matching topic."""

    async def scenario() -> None:
        pub = await network.client(f"{tag}-p")
        topics = [f"{tag}/d/{n}/s" for n in ("a", "b", "c")]
        for topic in topics:
            await pub.publish(topic, b"online", qos=1, retain=True, timeout=WAIT)
        await pub.publish(f"{tag}/d/a/t", b"no", qos=1, retain=True, timeout=WAIT)
        sub = await network.client(f"{tag}-s")
        assert await sub.subscribe([(f"{tag}/d/+/s", 1)]) == [1]
        got = [await sub.next_message(WAIT) for _ in topics]
        assert sorted(m.topic for m in got) == topics
        assert all(m.retain and m.payload == b"online" for m in got)
        await sub.recv_nothing(QUIET)
        await pub.disconnect()
        await sub.disconnect()

    asyncio.run(scenario())


def test_subscribing_again_resends_the_retained_message(network: Network, tag: str) -> None:
    """Repeating a SUBSCRIBE counts as a new subscription: the retained message comes again."""

    async def scenario() -> None:
        pub = await network.client(f"{tag}-p")
        await pub.publish(f"{tag}/again", b"r", qos=1, retain=True, timeout=WAIT)
        sub = await network.client(f"{tag}-s")
        assert await sub.subscribe([(f"{tag}/again", 0)]) == [0]
        assert (await sub.next_message(WAIT)).payload == b"r"
        assert await sub.subscribe([(f"{tag}/again", 0)], pid=2) == [0]
        msg = await sub.next_message(WAIT)
        assert (msg.payload, msg.retain) == (b"r", True)
        await pub.disconnect()
        await sub.disconnect()

    asyncio.run(scenario())


def test_connect_does_not_push_retained_messages_of_other_clients_filters(
    network: Network, tag: str
) -> None:
    """A new client that subscribed to nothing receives nothing, whatever others subscribed to."""

    async def scenario() -> None:
        other = await network.client(f"{tag}-o")
        assert await other.subscribe([(f"{tag}/secret/#", 1)]) == [1]
        pub = await network.client(f"{tag}-p")
        await pub.publish(f"{tag}/secret/key", b"hunter2", qos=1, retain=True, timeout=WAIT)
        assert (await other.next_message(WAIT)).payload == b"hunter2"
        newcomer = await network.client(f"{tag}-n")
        await newcomer.recv_nothing(QUIET)
        await newcomer.disconnect()
        await other.disconnect()
        await pub.disconnect()

    asyncio.run(scenario())


def test_resumed_session_gets_no_retained_messages_without_a_new_subscribe(
    network: Network, tag: str
) -> None:
    """Retained messages follow SUBSCRIBE only: resuming a session does not resend them."""

    async def scenario() -> None:
        sub = await network.client(f"{tag}-s", clean=False)
        assert await sub.subscribe([(f"{tag}/r", 1)]) == [1]
        pub = await network.client(f"{tag}-p")
        await pub.publish(f"{tag}/r", b"once", qos=1, retain=True, timeout=WAIT)
        assert (await sub.next_message(WAIT)).payload == b"once"
        await sub.disconnect()
        sub = await network.open()
        assert await sub.connect(f"{tag}-s", clean=False) == (True, 0)
        await sub.recv_nothing(QUIET)
        await sub.disconnect()
        await pub.disconnect()

    asyncio.run(scenario())


@pytest.mark.parametrize(
    ("retained_qos", "sub_qos"),
    [
        (0, 1),
        (1, 0),
        (1, 2),
        (2, 1),
    ],
)
def test_retained_message_is_sent_at_the_minimum_qos(
    network: Network, tag: str, retained_qos: int, sub_qos: int
) -> None:
    """A retained message is delivered at min(its publish QoS, the subscription's QoS)."""

    async def scenario() -> None:
        pub = await network.client(f"{tag}-p")
        await pub.publish(f"{tag}/q", b"r", qos=retained_qos, retain=True, timeout=WAIT)
        sub = await network.client(f"{tag}-s")
        assert await sub.subscribe([(f"{tag}/q", sub_qos)]) == [sub_qos]
        msg = await sub.next_message(WAIT, ack=False)
        assert (msg.payload, msg.retain, msg.qos) == (b"r", True, min(retained_qos, sub_qos))
        await pub.disconnect()
        await sub.disconnect()

    asyncio.run(scenario())
