"""SUBSCRIBE and UNSUBSCRIBE: granted QoS, wildcards, failures, replacing and removing filters."""

import asyncio

import pytest

from tests.support.networks import QUIET, WAIT, Network


def test_suback_grants_each_requested_qos_in_order(network: Network, tag: str) -> None:
    """One SUBSCRIBE with three filters gets one return code per filter, in order."""

    async def scenario() -> None:
        client = await network.client(f"{tag}-s")
        filters = [(f"{tag}/a", 2), (f"{tag}/b", 0), (f"{tag}/c", 1)]
        assert await client.subscribe(filters, pid=4242) == [2, 0, 1]
        await client.disconnect()

    asyncio.run(scenario())


def test_invalid_filters_get_failure_return_codes(network: Network, tag: str) -> None:
    """Filters with a misplaced # or + are refused with 0x80, valid neighbours are granted."""

    async def scenario() -> None:
        client = await network.client(f"{tag}-s")
        filters = [(f"{tag}/#/x", 1), (f"{tag}/ok", 1), (f"{tag}/a+", 0), (f"{tag}#", 0)]
        assert await client.subscribe(filters) == [0x80, 1, 0x80, 0x80]
        await client.ping(WAIT)
        await client.disconnect()

    asyncio.run(scenario())


@pytest.mark.parametrize(
    ("pattern", "matching", "other"),
    [
        ("+/b", ["a/b", "x/b", "/b"], ["a/b/c", "a", "b"]),
        ("a/#", ["a", "a/b", "a/b/c", "a/"], ["b/a", "ab"]),
        ("+/+", ["a/b", "/b", "a/"], ["a", "a/b/c"]),
        ("a/+/c/#", ["a/b/c", "a/x/c/d/e"], ["a/c", "a/b/d"]),
    ],
)
def test_wildcards_match_exactly_the_right_topics(
    network: Network, tag: str, pattern: str, matching: list[str], other: list[str]
) -> None:
    """+ matches one level, # the rest (including the parent level), nothing more."""

    async def scenario() -> None:
        sub = await network.client(f"{tag}-s")
        assert await sub.subscribe([(f"{tag}/{pattern}", 0)]) == [0]
        pub = await network.client(f"{tag}-p")
        for topic in other + matching:
            await pub.publish(f"{tag}/{topic}", topic.encode(), qos=1, timeout=WAIT)
        got = [(await sub.next_message(WAIT)).topic for _ in matching]
        assert sorted(got) == sorted(f"{tag}/{topic}" for topic in matching)
        await sub.recv_nothing(QUIET)
        await pub.disconnect()
        await sub.disconnect()

    asyncio.run(scenario())


def test_unsubscribe_stops_delivery(network: Network, tag: str) -> None:
    """After UNSUBACK no message on the removed filter arrives; other filters still deliver."""

    async def scenario() -> None:
        sub = await network.client(f"{tag}-s")
        assert await sub.subscribe([(f"{tag}/gone", 1), (f"{tag}/kept", 1)]) == [1, 1]
        await sub.unsubscribe([f"{tag}/gone"], pid=77)
        pub = await network.client(f"{tag}-p")
        await pub.publish(f"{tag}/gone", b"no", qos=1, timeout=WAIT)
        await pub.publish(f"{tag}/kept", b"yes", qos=1, timeout=WAIT)
        msg = await sub.next_message(WAIT)
        assert (msg.topic, msg.payload) == (f"{tag}/kept", b"yes")
        await sub.recv_nothing(QUIET)
        await pub.disconnect()
        await sub.disconnect()

    asyncio.run(scenario())


def test_unsubscribe_of_an_unknown_filter_is_acknowledged(network: Network, tag: str) -> None:
    """UNSUBSCRIBE of a filter the client never had still gets an UNSUBACK with its id."""

    async def scenario() -> None:
        client = await network.client(f"{tag}-s")
        await client.unsubscribe([f"{tag}/never", f"{tag}/+/x"], pid=9)
        await client.ping(WAIT)
        await client.disconnect()

    asyncio.run(scenario())


def test_resubscribing_replaces_the_granted_qos(network: Network, tag: str) -> None:
    """A second SUBSCRIBE to the same filter replaces its QoS: QoS 1 publishes then arrive at 0."""

    async def scenario() -> None:
        sub = await network.client(f"{tag}-s")
        assert await sub.subscribe([(f"{tag}/q", 1)]) == [1]
        assert await sub.subscribe([(f"{tag}/q", 0)], pid=2) == [0]
        pub = await network.client(f"{tag}-p")
        await pub.publish(f"{tag}/q", b"x", qos=1, timeout=WAIT)
        msg = await sub.next_message(WAIT)
        assert (msg.payload, msg.qos) == (b"x", 0)
        await sub.recv_nothing(QUIET)
        await pub.disconnect()
        await sub.disconnect()

    asyncio.run(scenario())


def test_overlapping_filters_deliver_at_least_once(network: Network, tag: str) -> None:
    """A message matching two of a client's filters is delivered (once or twice, never zero)."""

    async def scenario() -> None:
        sub = await network.client(f"{tag}-s")
        assert await sub.subscribe([(f"{tag}/#", 1), (f"{tag}/x", 1)]) == [1, 1]
        pub = await network.client(f"{tag}-p")
        await pub.publish(f"{tag}/x", b"both", qos=1, timeout=WAIT)
        msg = await sub.next_message(WAIT)
        assert (msg.topic, msg.payload) == (f"{tag}/x", b"both")
        await pub.disconnect()
        await sub.disconnect()

    asyncio.run(scenario())
