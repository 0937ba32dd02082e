"""Malformed input: the connection is closed at once, nothing hangs, everyone else is served."""

import asyncio
import contextlib
import struct
from typing import Any

import pytest
import websockets

from tests.support.hubproc import HubProcess
from tests.support.mqtt import (
    CONNECT,
    PUBACK,
    PUBLISH,
    SUBACK,
    SUBSCRIBE,
    UNSUBACK,
    packet,
    pingreq_packet,
    publish_packet,
    subscribe_packet,
    unsubscribe_packet,
    utf8,
)
from tests.support.networks import PROMPT, QUIET, WAIT, Network, assert_refused, assert_serving

# Every case runs over TCP; the ones that test framing also run over the WebSocket network.
ALSO_OVER_WS = {"truncated-in-client-id", "will-topic-empty", "topic-not-utf8"}
ALSO_OVER_WS |= {"length-shorter-than-topic", "reserved-type-15"}


def _over_networks(cases: list[Any]) -> list[Any]:
    """(transport, data) parameters: each case on tcp, the framing ones on ws too."""
    out = []
    for case in cases:
        (data,), marks, name = case.values, case.marks, case.id
        out.append(pytest.param("tcp", data, id=f"tcp-{name}", marks=marks))
        if name in ALSO_OVER_WS:
            out.append(pytest.param("ws", data, id=f"ws-{name}", marks=marks))
    return out


def _connect(flags: int, payload: bytes, length: int | None = None) -> bytes:
    """A CONNECT with raw flags and payload; length overrides the remaining length."""
    body = utf8("MQTT") + bytes([4, flags]) + struct.pack("!H", 60) + payload
    if length is None:
        return packet(CONNECT, 0, body)
    return bytes([CONNECT << 4, length]) + body


BAD_CONNECTS = [
    pytest.param(_connect(0x02, utf8(b"\xff\xfeid")), id="client-id-not-utf8"),
    pytest.param(
        _connect(0x06, utf8("c") + utf8(b"w/\xc3") + utf8(b"bye")),
        id="will-topic-not-utf8",
    ),
    pytest.param(_connect(0x06, utf8("c") + utf8("") + utf8(b"bye")), id="will-topic-empty"),
    pytest.param(
        _connect(0x02, utf8("client"), length=11) + pingreq_packet(),
        id="truncated-in-client-id",
    ),
    pytest.param(_connect(0x06, utf8("c")), id="will-flag-without-will"),
    pytest.param(_connect(0x1E, utf8("c") + utf8("w") + utf8(b"bye")), id="will-qos-3"),
    pytest.param(_connect(0x0A, utf8("c")), id="will-qos-without-will"),
]


@pytest.mark.parametrize(("transport", "data"), _over_networks(BAD_CONNECTS))
def test_malformed_connect_is_refused_promptly(
    shared_hub: HubProcess, tag: str, transport: str, data: bytes
) -> None:
    """A malformed CONNECT is never accepted and the connection is closed at once."""
    network = Network(shared_hub, transport)

    async def scenario() -> None:
        client = await network.open()
        await client.send(data)
        await assert_refused(client)
        await assert_serving(network, tag)

    asyncio.run(scenario())


def _publish_qos3() -> bytes:
    return packet(PUBLISH, 0x06, utf8("a/b") + struct.pack("!H", 1) + b"x")


BAD_PACKETS = [
    pytest.param(publish_packet(b"bad/\xff\xfe", b"x"), id="topic-not-utf8"),
    pytest.param(publish_packet(b"bad/\xed\xa0\x80", b"x"), id="topic-surrogate"),
    pytest.param(publish_packet(b"bad/\x00/b", b"x"), id="topic-nul"),
    pytest.param(_publish_qos3(), id="publish-qos-3"),
    pytest.param(
        packet(SUBSCRIBE, 0x02, struct.pack("!H", 1) + utf8(b"\xff/#") + b"\x00"),
        id="filter-not-utf8",
    ),
    pytest.param(subscribe_packet(1, [("bad/a", 3)]), id="subscribe-qos-3"),
    pytest.param(packet(SUBSCRIBE, 0x02, struct.pack("!H", 1)), id="subscribe-no-filter"),
    pytest.param(
        # the remaining length (3) ends inside the 5-byte topic; a PINGREQ follows
        bytes([PUBLISH << 4, 3, 0, 5]) + b"a" + pingreq_packet(),
        id="length-shorter-than-topic",
    ),
    pytest.param(bytes([PUBLISH << 4, 0xFF, 0xFF, 0xFF, 0xFF, 0x7F]), id="length-5-bytes"),
    pytest.param(bytes([0x00, 0x00]), id="reserved-type-0"),
    pytest.param(bytes([0xF0, 0x00]), id="reserved-type-15"),
]


@pytest.mark.parametrize(("transport", "data"), _over_networks(BAD_PACKETS))
def test_malformed_packet_closes_the_connection_promptly(
    shared_hub: HubProcess, tag: str, transport: str, data: bytes
) -> None:
    """A malformed packet after CONNECT closes that connection; a bystander keeps its service."""
    network = Network(shared_hub, transport)

    async def scenario() -> None:
        bystander = await network.client(f"{tag}-by")
        assert await bystander.subscribe([(f"{tag}/news", 1)]) == [1]
        bad = await network.client(f"{tag}-bad")
        await bad.send(data)
        seen = await bad.packets_until_closed(PROMPT)
        assert not [p for p in seen if p.kind == SUBACK and 3 in p.body[2:]], seen
        pub = await network.client(f"{tag}-pub")
        await pub.publish(f"{tag}/news", b"still here", qos=1, timeout=WAIT)
        assert (await bystander.next_message(WAIT)).payload == b"still here"
        await pub.disconnect()
        await bystander.disconnect()

    asyncio.run(scenario())


def test_half_a_connect_then_close_leaves_the_broker_serving(network: Network, tag: str) -> None:
    """A client that sends part of a CONNECT and hangs up does not disturb the broker."""

    async def scenario() -> None:
        for cut in (1, 2, 7, 13):
            client = await network.open()
            await client.send(_connect(0x02, utf8(f"{tag}-half"))[:cut])
            await client.close()
        await assert_serving(network, tag)

    asyncio.run(scenario())


def _levels(n: int, tag: str) -> str:
    """A topic name of exactly n levels."""
    return "/".join([tag] + ["l"] * (n - 1))


@pytest.mark.parametrize("kind", ["publish", "subscribe", "unsubscribe"])
def test_topics_deeper_than_200_levels_close_the_connection(
    network: Network, tag: str, kind: str
) -> None:
    """200 levels are served; 201 and 65,535 levels close the connection (issue #15, fix 4)."""

    def send(depth: int) -> bytes:
        name = _levels(depth, tag) if depth < 65535 else "/" * 65534
        if kind == "publish":
            return publish_packet(name, b"deep", qos=1, pid=1)
        if kind == "subscribe":
            return subscribe_packet(1, [(name, 1)])
        return unsubscribe_packet(1, [name])

    async def scenario() -> None:
        ok = await network.client(f"{tag}-ok")
        await ok.send(send(200))
        reply = await ok.recv(WAIT)
        assert reply.kind in (PUBACK, SUBACK, UNSUBACK), reply
        await ok.ping(WAIT)
        for depth in (201, 65535):
            bad = await network.client(f"{tag}-deep")
            await bad.send(send(depth))
            seen = await bad.packets_until_closed(PROMPT)
            assert not seen, f"{depth} levels were answered: {seen}"
        await ok.ping(WAIT)
        await ok.disconnect()

    asyncio.run(scenario())


def test_a_publish_of_200_levels_reaches_a_wildcard_subscriber(network: Network, tag: str) -> None:
    """Matching a 200-level topic against '#' and '+' filters works (the walk is iterative)."""

    async def scenario() -> None:
        name = _levels(200, tag)
        sub = await network.client(f"{tag}-s")
        assert await sub.subscribe([(f"{tag}/#", 1), ("/".join([tag] + ["+"] * 199), 1)]) == [
            1,
            1,
        ]
        pub = await network.client(f"{tag}-p")
        await pub.publish(name, b"deep", qos=1, timeout=WAIT)
        msg = await sub.next_message(WAIT)
        assert (msg.topic, msg.payload) == (name, b"deep")
        await sub.recv_nothing(QUIET)  # once, though two filters match
        await pub.disconnect()
        await sub.disconnect()

    asyncio.run(scenario())


def test_garbage_before_connect_is_refused_without_reading_it_all(network: Network) -> None:
    """A big message that does not start with CONNECT, or a CONNECT longer than the 64 KiB
    limit, is refused at once; the broker keeps serving."""

    async def scenario() -> None:
        garbage = await network.open()
        with contextlib.suppress(ConnectionError, websockets.ConnectionClosed):
            await garbage.send(bytes([PUBLISH << 4]) + b"\xff\xff\xff\x01" + b"\0" * 4_000_000)
        await assert_refused(garbage)
        huge = await network.open()
        with contextlib.suppress(ConnectionError, websockets.ConnectionClosed):
            await huge.send(_connect(0x02, utf8("x" * 60_000) + b"\x00" * 10_000)[:70_000])
        await assert_refused(huge)
        await assert_serving(network, "tgarbage")

    asyncio.run(scenario())
