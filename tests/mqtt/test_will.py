"""The last will: published when a client vanishes, never after a clean DISCONNECT."""

import asyncio

import pytest

from tests.support.mqtt import connect_packet
from tests.support.networks import PROMPT, QUIET, WAIT, Network


@pytest.mark.parametrize("will_qos", [0, 1, 2])
def test_will_is_published_when_the_connection_drops(
    network: Network, tag: str, will_qos: int
) -> None:
    """Closing the connection without DISCONNECT publishes the will to its subscribers."""

    async def scenario() -> None:
        watcher = await network.client(f"{tag}-w")
        assert await watcher.subscribe([(f"{tag}/status", 2)]) == [2]
        device = await network.client(
            f"{tag}-d", will=(f"{tag}/status", b"offline", will_qos, False)
        )
        await device.close()
        msg = await watcher.next_message(WAIT, ack=False)
        assert (msg.topic, msg.payload, msg.qos, msg.retain) == (
            f"{tag}/status",
            b"offline",
            will_qos,
            False,
        )
        await watcher.close()

    asyncio.run(scenario())


def test_will_is_not_published_after_a_clean_disconnect(network: Network, tag: str) -> None:
    """A DISCONNECT packet discards the will."""

    async def scenario() -> None:
        watcher = await network.client(f"{tag}-w")
        assert await watcher.subscribe([(f"{tag}/status", 1)]) == [1]
        device = await network.client(f"{tag}-d", will=(f"{tag}/status", b"offline", 1, False))
        await device.disconnect()
        await watcher.recv_nothing(QUIET)
        await watcher.disconnect()

    asyncio.run(scenario())


def test_retained_will_is_kept_for_later_subscribers(network: Network, tag: str) -> None:
    """A will with the retain flag becomes the topic's retained message."""

    async def scenario() -> None:
        watcher = await network.client(f"{tag}-w")
        assert await watcher.subscribe([(f"{tag}/status", 1)]) == [1]
        device = await network.client(f"{tag}-d", will=(f"{tag}/status", b"offline", 1, True))
        await device.close()
        assert (await watcher.next_message(WAIT)).payload == b"offline"  # the will is out
        later = await network.client(f"{tag}-l")
        assert await later.subscribe([(f"{tag}/status", 1)]) == [1]
        msg = await later.next_message(WAIT)
        assert (msg.payload, msg.retain) == (b"offline", True)
        await later.disconnect()
        await watcher.disconnect()

    asyncio.run(scenario())


def test_will_is_published_after_a_protocol_violation(network: Network, tag: str) -> None:
    """A client disconnected for breaking the protocol (a second CONNECT) has its will sent."""

    async def scenario() -> None:
        watcher = await network.client(f"{tag}-w")
        assert await watcher.subscribe([(f"{tag}/status", 0)]) == [0]
        device = await network.client(f"{tag}-d", will=(f"{tag}/status", b"offline", 0, False))
        await device.send(connect_packet(f"{tag}-d"))
        await device.expect_closed(PROMPT)
        assert (await watcher.next_message(WAIT)).payload == b"offline"
        await watcher.disconnect()

    asyncio.run(scenario())


def test_will_is_delivered_at_the_minimum_qos(network: Network, tag: str) -> None:
    """A QoS 2 will reaches a QoS 0 subscriber at QoS 0."""

    async def scenario() -> None:
        watcher = await network.client(f"{tag}-w")
        assert await watcher.subscribe([(f"{tag}/status", 0)]) == [0]
        device = await network.client(f"{tag}-d", will=(f"{tag}/status", b"offline", 2, False))
        await device.close()
        msg = await watcher.next_message(WAIT, ack=False)
        assert (msg.payload, msg.qos) == (b"offline", 0)
        await watcher.close()

    asyncio.run(scenario())


def test_will_is_published_on_take_over(network: Network, tag: str) -> None:
    """A second connection with the same client id closes the first without DISCONNECT, so
    the first one's will is published (issue #15, fix 1; [MQTT-3.1.2-8])."""

    async def scenario() -> None:
        watcher = await network.client(f"{tag}-w")
        assert await watcher.subscribe([(f"{tag}/status", 1)]) == [1]
        old = await network.client(f"{tag}-d", will=(f"{tag}/status", b"offline", 1, True))
        new = await network.client(f"{tag}-d")
        await old.expect_closed(PROMPT)
        msg = await watcher.next_message(WAIT)
        assert (msg.topic, msg.payload) == (f"{tag}/status", b"offline")
        await new.disconnect()  # the new connection's clean DISCONNECT publishes nothing
        await watcher.recv_nothing(QUIET)
        await watcher.disconnect()

    asyncio.run(scenario())
