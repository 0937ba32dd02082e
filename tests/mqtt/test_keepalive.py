"""Keepalive: a client silent for 1.5 x its keepalive is cut off and its will published."""

import asyncio

from tests.support.hubproc import scaled
from tests.support.mqtt import publish_packet
from tests.support.networks import WAIT, Network

KEEPALIVE_S = 1
# MQTT 3.1.1 section 3.1.2.10: the broker waits one and a half keepalives, plus a small margin.
DEADLINE_S = 1.5 * KEEPALIVE_S + scaled(0.5)


def test_silent_client_is_disconnected_and_its_will_published(network: Network, tag: str) -> None:
    """No packet for 1.5 x keepalive: the broker closes the connection and sends the will."""

    async def scenario() -> None:
        watcher = await network.client(f"{tag}-w")
        assert await watcher.subscribe([(f"{tag}/status", 1)]) == [1]
        loop = asyncio.get_running_loop()
        silent = await network.client(
            f"{tag}-d", keepalive=KEEPALIVE_S, will=(f"{tag}/status", b"timed out", 1, False)
        )
        start = loop.time()
        await silent.expect_closed(DEADLINE_S)
        assert loop.time() - start >= KEEPALIVE_S, "disconnected before the keepalive ran out"
        msg = await watcher.next_message(WAIT)
        assert (msg.topic, msg.payload) == (f"{tag}/status", b"timed out")
        await watcher.disconnect()

    asyncio.run(scenario())


def test_talking_clients_and_keepalive_0_stay_connected(tcp: Network, tag: str) -> None:
    """Clients that ping or publish within the keepalive, or asked for none, are not cut off."""
    window = DEADLINE_S + scaled(0.5)

    async def pinger() -> None:
        client = await tcp.client(f"{tag}-ping", keepalive=KEEPALIVE_S)
        for _ in range(round(window / 0.5)):
            await asyncio.sleep(0.5 * KEEPALIVE_S)  # on purpose: a ping every half keepalive
            await client.ping(WAIT)
        await client.disconnect()

    async def publisher() -> None:
        client = await tcp.client(f"{tag}-pub", keepalive=KEEPALIVE_S)
        for i in range(round(window / 0.5)):
            await asyncio.sleep(0.5 * KEEPALIVE_S)  # on purpose: traffic every half keepalive
            await client.send(publish_packet(f"{tag}/alive", b"%d" % i))
        await client.ping(WAIT)
        await client.disconnect()

    async def no_keepalive() -> None:
        client = await tcp.client(f"{tag}-zero", keepalive=0)
        await client.recv_nothing(window)
        await client.ping(WAIT)
        await client.disconnect()

    async def scenario() -> None:
        await asyncio.gather(pinger(), publisher(), no_keepalive())

    asyncio.run(scenario())
