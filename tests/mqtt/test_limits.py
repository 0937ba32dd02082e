"""Limits: payload size, per-session queues for slow consumers, many clients at once."""

import asyncio
import contextlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.hubproc import HubProcess, scaled, start_hub
from tests.support.mqtt import PUBACK, PUBLISH, RawClient, decode_publish, publish_packet
from tests.support.networks import PROMPT, QUIET, WAIT, Network

MAX_PAYLOAD = 1024
MAX_QUEUED = 10


@contextlib.contextmanager
def hub_with(tmp_path: Path, *options: str) -> Iterator[HubProcess]:
    """A hub of the test's own, started with extra `hub serve` options."""
    process = start_hub(tmp_path / "hub-data", *options)
    try:
        yield process
    finally:
        process.stop()


@pytest.mark.parametrize("transport", ["tcp", "ws"])
def test_payload_over_the_limit_closes_the_connection(
    tmp_path: Path, tag: str, transport: str
) -> None:
    """A payload of exactly --max-payload bytes is delivered; one byte more closes the sender."""

    async def scenario(network: Network) -> None:
        sub = await network.client(f"{tag}-s")
        assert await sub.subscribe([(f"{tag}/big", 1)]) == [1]
        pub = await network.client(f"{tag}-p")
        await pub.publish(f"{tag}/big", b"a" * MAX_PAYLOAD, qos=1, timeout=WAIT)
        assert (await sub.next_message(WAIT)).payload == b"a" * MAX_PAYLOAD
        await pub.send(publish_packet(f"{tag}/big", b"b" * (MAX_PAYLOAD + 1), qos=1, pid=2))
        seen = await pub.packets_until_closed(PROMPT)
        assert not [p for p in seen if p.kind == PUBACK], f"the big payload was accepted: {seen}"
        await sub.recv_nothing(QUIET)
        await sub.disconnect()

    with hub_with(tmp_path, "--max-payload", str(MAX_PAYLOAD)) as hub:
        asyncio.run(scenario(Network(hub, transport)))


def test_qos1_consumer_that_never_acknowledges_is_disconnected(tmp_path: Path, tag: str) -> None:
    """A subscriber that never PUBACKs is cut off once its queue is full; the publisher is not."""

    async def scenario(network: Network) -> None:
        sub = await network.client(f"{tag}-s")
        assert await sub.subscribe([(f"{tag}/q", 1)]) == [1]
        pub = await network.client(f"{tag}-p")
        count = 20 * MAX_QUEUED
        for i in range(count):
            await pub.send(publish_packet(f"{tag}/q", b"%d" % i, qos=1, pid=i + 1))
        for i in range(count):
            await pub.expect_reply(PUBACK, i + 1, WAIT)
        seen = await sub.packets_until_closed(WAIT)  # reads, but never acknowledges
        assert 0 < len(seen) < count and all(p.kind == PUBLISH for p in seen)
        await pub.ping(WAIT)
        await pub.disconnect()

    with hub_with(tmp_path, "--max-queued", str(MAX_QUEUED)) as hub:
        asyncio.run(scenario(Network(hub, "tcp")))


def test_qos0_backlog_drops_the_oldest_messages(tmp_path: Path, tag: str) -> None:
    """A QoS 0 subscriber that stops reading loses the oldest messages, keeps the newest,
    and stays connected."""
    count, size = 300, 32 * 1024  # far more than the socket buffers hold

    async def scenario(network: Network) -> None:
        sub = await network.client(f"{tag}-s")
        assert await sub.subscribe([(f"{tag}/firehose", 0)]) == [0]
        pub = await network.client(f"{tag}-p")
        for i in range(count):
            await pub.send(publish_packet(f"{tag}/firehose", b"%06d" % i + b"." * size))
        await pub.ping(WAIT)  # the broker has read every publish
        await asyncio.sleep(QUIET)  # on purpose: the subscriber reads nothing while it routes
        got = []
        while True:
            try:
                p = await sub.recv(scaled(0.5))
            except TimeoutError:
                break
            assert p.kind == PUBLISH
            got.append(int(decode_publish(p).payload[:6]))
        assert got == sorted(got), "messages arrived out of order"
        assert got[-1] == count - 1, "the newest message was dropped"
        assert len(got) < count, "nothing was dropped: the backlog grew without bound"
        await sub.ping(WAIT)
        await sub.disconnect()
        await pub.disconnect()

    with hub_with(tmp_path, "--max-queued", str(MAX_QUEUED)) as hub:
        asyncio.run(scenario(Network(hub, "tcp")))


def test_offline_session_keeps_qos1_messages_up_to_the_bound(tmp_path: Path, tag: str) -> None:
    """An offline persistent session keeps --max-queued QoS 1 messages and delivers them all."""

    async def scenario(network: Network) -> None:
        sub = await network.client(f"{tag}-s", clean=False)
        assert await sub.subscribe([(f"{tag}/q", 1)]) == [1]
        await sub.disconnect()
        pub = await network.client(f"{tag}-p")
        for i in range(MAX_QUEUED):
            await pub.publish(f"{tag}/q", b"%d" % i, qos=1, pid=i + 1, timeout=WAIT)
        sub = await network.open()
        assert await sub.connect(f"{tag}-s", clean=False) == (True, 0)
        got = [(await sub.next_message(WAIT)).payload for _ in range(MAX_QUEUED)]
        assert got == [b"%d" % i for i in range(MAX_QUEUED)]
        await sub.disconnect()
        await pub.disconnect()

    with hub_with(tmp_path, "--max-queued", str(MAX_QUEUED)) as hub:
        asyncio.run(scenario(Network(hub, "tcp")))


def test_large_payload_is_delivered_intact(network: Network, tag: str) -> None:
    """A 100 KB binary payload crosses the broker unchanged (below the default limit)."""
    payload = bytes(range(256)) * 400

    async def scenario() -> None:
        sub = await network.client(f"{tag}-s")
        assert await sub.subscribe([(f"{tag}/blob", 1)]) == [1]
        pub = await network.client(f"{tag}-p")
        await pub.publish(f"{tag}/blob", payload, qos=1, timeout=WAIT)
        assert (await sub.next_message(WAIT)).payload == payload
        await pub.disconnect()
        await sub.disconnect()

    asyncio.run(scenario())


def test_fifty_clients_at_once_each_get_their_message(network: Network, tag: str) -> None:
    """Fifty concurrent clients subscribe, and each receives the message sent to it."""

    async def subscriber(n: int) -> RawClient:
        client = await network.client(f"{tag}-{n}")
        assert await client.subscribe([(f"{tag}/to/{n}", 1)]) == [1]
        return client

    async def exchange(n: int, client: RawClient) -> None:
        await client.publish(f"{tag}/to/{(n + 1) % 50}", b"%d" % n, qos=1, timeout=WAIT)
        msg = await client.next_message(WAIT)
        assert (msg.topic, msg.payload) == (f"{tag}/to/{n}", b"%d" % ((n - 1) % 50))
        await client.ping(WAIT)
        await client.disconnect()

    async def scenario() -> None:
        clients = await asyncio.gather(*(subscriber(n) for n in range(50)))
        await asyncio.gather(*(exchange(n, client) for n, client in enumerate(clients)))

    asyncio.run(scenario())
