"""CONNECT and CONNACK: acceptance, refusals, protocol violations and session take-over."""

import asyncio
import struct

import pytest

from tests.support.mqtt import CONNACK, CONNECT, packet, utf8
from tests.support.networks import PROMPT, WAIT, Network, assert_refused, assert_serving


def connect_body(
    *,
    name: bytes = b"MQTT",
    level: int = 4,
    flags: int = 0x02,
    client_id: str = "c",
    extra: bytes = b"",
) -> bytes:
    """A CONNECT packet with chosen protocol name, level, flags and payload after the id."""
    body = utf8(name) + bytes([level, flags]) + struct.pack("!H", 60) + utf8(client_id) + extra
    return packet(CONNECT, 0, body)


def test_clean_connect_is_accepted_with_a_four_byte_connack(network: Network, tag: str) -> None:
    """A clean CONNECT gets exactly 20 02 00 00: no session present, accepted."""

    async def scenario() -> None:
        client = await network.open()
        await client.send(connect_body(client_id=f"{tag}-a"))
        ack = await client.expect(CONNACK, WAIT)
        assert (ack.flags, ack.body) == (0, b"\x00\x00")
        await client.disconnect()

    asyncio.run(scenario())


def test_unsupported_protocol_level_is_refused_with_code_1(network: Network, tag: str) -> None:
    """An MQTT 3.1 / 5.0 client (level 3 or 5) gets return code 1 and is disconnected."""

    async def scenario() -> None:
        for level in (3, 5):
            client = await network.open()
            await client.send(connect_body(level=level, client_id=f"{tag}-{level}"))
            ack = await client.expect(CONNACK, WAIT)
            assert ack.body == b"\x00\x01"
            await client.expect_closed(PROMPT)

    asyncio.run(scenario())


@pytest.mark.parametrize(
    ("what", "data"),
    [
        ("wrong protocol name", connect_body(name=b"MQIsdp")),
        ("reserved flag set", connect_body(flags=0x03)),
        ("not a CONNECT first", packet(12, 0, b"")),
        ("password without username", connect_body(flags=0x42, extra=utf8("secret"))),
    ],
    ids=["name", "reserved", "not-connect", "password-only"],
)
def test_invalid_connect_is_refused(network: Network, tag: str, what: str, data: bytes) -> None:
    """A CONNECT that breaks the protocol closes the connection without accepting it."""

    async def scenario() -> None:
        client = await network.open()
        await client.send(data)
        await assert_refused(client)
        await assert_serving(network, tag)

    asyncio.run(scenario())


def test_empty_client_id_with_clean_session_is_accepted(network: Network) -> None:
    """A zero-length client id is allowed with CleanSession=1 (the broker names the client)."""

    async def scenario() -> None:
        client = await network.open()
        assert await client.connect("", clean=True) == (False, 0)
        await client.ping(WAIT)
        await client.disconnect()

    asyncio.run(scenario())


def test_empty_client_id_without_clean_session_is_refused_with_code_2(network: Network) -> None:
    """A zero-length client id with CleanSession=0 gets return code 2 and is disconnected."""

    async def scenario() -> None:
        client = await network.open()
        assert await client.connect("", clean=False) == (False, 2)
        await client.expect_closed(PROMPT)

    asyncio.run(scenario())


def test_second_connect_is_a_protocol_violation(network: Network, tag: str) -> None:
    """A second CONNECT on an open connection closes it."""

    async def scenario() -> None:
        client = await network.client(f"{tag}-twice")
        await client.send(connect_body(client_id=f"{tag}-twice"))
        await client.expect_closed(PROMPT)

    asyncio.run(scenario())


@pytest.mark.parametrize(
    "clean",
    [False, True],
    ids=["persistent", "clean"],
)
def test_same_client_id_takes_over_and_closes_the_old_connection(
    network: Network, tag: str, clean: bool
) -> None:
    """A second connection with the same client id is accepted and the first one is closed."""

    async def scenario() -> None:
        old = await network.client(f"{tag}-dup", clean=clean)
        new = await network.client(f"{tag}-dup", clean=clean)
        await old.expect_closed(PROMPT)
        await new.ping(WAIT)
        await new.disconnect()

    asyncio.run(scenario())


def test_keepalive_zero_is_accepted_and_unknown_credentials_refused(
    network: Network, tag: str
) -> None:
    """Keepalive 0 is accepted; even in development mode, credentials that match no device are
    refused with return code 4 (bad user name or password) rather than ignored."""

    async def scenario() -> None:
        client = await network.client(f"{tag}-ka0", keepalive=0)
        await client.ping(WAIT)
        await client.disconnect()
        stranger = await network.open()
        assert await stranger.connect(f"{tag}-cred", username="u", password="p") == (False, 4)
        await stranger.expect_closed(PROMPT)

    asyncio.run(scenario())
