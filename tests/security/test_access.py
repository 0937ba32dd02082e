"""Who gets in and where, from the outside: a hub with its default security on free ports."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from pathlib import Path

import pytest

from tests.support.hubproc import HubProcess, hub_cli, provision, scaled, start_hub
from tests.support.mqtt import RawClient, publish_packet
from tests.support.waits import eventually_async

PROMPT = scaled(3)


def token(hub: HubProcess, *args: str) -> str:
    result = hub_cli(hub.data_dir, "token", "create", *args)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip().splitlines()[-1]


async def connect(
    hub: HubProcess, client_id: str, user: str | None, password: str | None, ws: bool = False
) -> tuple[RawClient, int]:
    client = await (
        RawClient.websocket(hub.ws_url) if ws else RawClient.tcp(hub.host, hub.mqtt_port)
    )
    _, code = await client.connect(client_id, username=user, password=password)
    return client, code


class Events:
    """An admin token's view of $hub/events/#."""

    def __init__(self, client: RawClient) -> None:
        self.client = client

    @classmethod
    async def watch(cls, hub: HubProcess) -> Events:
        client, code = await connect(hub, "admin-ui", "token", token(hub, "--admin"), ws=True)
        assert code == 0
        assert await client.subscribe([("$hub/events/#", 0)]) == [0]
        return cls(client)

    async def expect(
        self, event: str, name: str | None = None, timeout: float = scaled(5)
    ) -> tuple[str, dict]:
        """The next event of this kind (about this client, if named); earlier ones are skipped."""
        deadline = time.monotonic() + timeout
        while True:
            msg = await self.client.next_message(max(0.05, deadline - time.monotonic()))
            body = json.loads(msg.payload)
            if body["event"] == event and name in (None, body.get("name")):
                return msg.topic, body


def test_nothing_connects_without_credentials(secure_hub: HubProcess) -> None:
    """No credentials, an unknown device and a wrong secret are refused with CONNACK 4, each
    producing an auth_failure event."""
    creds = provision(secure_hub, "dev-a")

    async def scenario() -> None:
        events = await Events.watch(secure_hub)
        for client_id, user, password in [
            ("anon", None, None),
            ("ghost", "ghost", "x"),
            ("dev-a", "dev-a", "wrong"),
        ]:
            client, code = await connect(secure_hub, client_id, user, password)
            assert code == 4, (client_id, code)
            await client.expect_closed(PROMPT)
            topic, body = await events.expect("auth_failure")
            assert topic == f"$hub/events/client/{client_id}/warning"
            assert body["client_id"] == client_id and body["detail"]
        client, code = await connect(secure_hub, "dev-a", "dev-a", creds["password"])
        assert code == 0
        await client.close()

    asyncio.run(scenario())


def test_disabling_a_device_disconnects_it_at_once_and_refuses_it(secure_hub: HubProcess) -> None:
    """`hub device disable` kicks the connected device (its will fires) and refuses it after."""
    creds = provision(secure_hub, "dev-b")

    async def scenario() -> None:
        events = await Events.watch(secure_hub)
        watcher, _ = await connect(
            secure_hub, "watch", "token", token(secure_hub, "--subscribe", "d/+/s")
        )
        await watcher.subscribe([("d/+/s", 0)])
        device = await RawClient.tcp(secure_hub.host, secure_hub.mqtt_port)
        will = ("d/dev-b/s", b"offline", 1, True)
        assert await device.connect(
            "dev-b", username="dev-b", password=creds["password"], will=will
        ) == (False, 0)
        assert hub_cli(secure_hub.data_dir, "device", "disable", "dev-b").returncode == 0
        await device.expect_closed(scaled(3))
        assert (await watcher.next_message(scaled(3))).payload == b"offline"
        _, body = await events.expect("disconnected")
        assert (body["reason"], body["name"]) == ("disabled", "dev-b")
        _, code = await connect(secure_hub, "dev-b", "dev-b", creds["password"])
        assert code == 5
        await events.expect("auth_failure")

    asyncio.run(scenario())


def test_devices_stay_in_their_own_topics(secure_hub: HubProcess) -> None:
    """A device cannot subscribe to another device's commands, nor publish as another device:
    the subscription gets 0x80, the publish is dropped; both are filter_violation events."""
    a, b = provision(secure_hub, "dev-c"), provision(secure_hub, "dev-d")

    async def scenario() -> None:
        events = await Events.watch(secure_hub)
        dev_c, _ = await connect(secure_hub, "dev-c", "dev-c", a["password"])
        dev_d, _ = await connect(secure_hub, "dev-d", "dev-d", b["password"])
        assert await dev_c.subscribe([("d/dev-d/c", 1), ("d/dev-c/c", 1), ("#", 0)]) == [
            0x80,
            1,
            0x80,
        ]
        await events.expect("filter_violation")
        spy, _ = await connect(secure_hub, "spy", "token", token(secure_hub, "--subscribe", "d/#"))
        await spy.subscribe([("d/#", 1)])
        await dev_d.send(publish_packet("d/dev-c/t/temp", b"ab,0,1.0", qos=1, pid=3))
        assert (await dev_d.expect(4)).body == b"\x00\x03"  # acknowledged, then dropped
        _, body = await events.expect("filter_violation", name="dev-d")
        assert "publish to d/dev-c/t/temp" in body["detail"]
        await dev_d.send(publish_packet("d/dev-d/t/temp", b"ab,0,2.0", qos=1, pid=4))
        msg = await spy.next_message(scaled(3))
        assert msg.topic == "d/dev-d/t/temp"  # the forged one never arrived before it

    asyncio.run(scenario())


def test_tls_required_device_is_refused_on_plain_tcp(secure_hub: HubProcess) -> None:
    """A device registered without --allow-insecure cannot use the plain network."""
    creds = provision(secure_hub, "dev-e", allow_insecure=False)

    async def scenario() -> None:
        events = await Events.watch(secure_hub)
        _, code = await connect(secure_hub, "dev-e", "dev-e", creds["password"])
        assert code == 5
        topic, body = await events.expect("tls_violation")
        assert topic == "$hub/events/client/dev-e/warning" and "TLS" in body["detail"]

    asyncio.run(scenario())


def test_tokens_are_scoped_and_expire(secure_hub: HubProcess) -> None:
    """A token subscribes only within its filters, cannot read hub events unless admin, cannot
    publish without --publish, and is refused once expired."""

    async def scenario() -> None:
        reader, code = await connect(
            secure_hub, "b1", "token", token(secure_hub, "--subscribe", "d/+/s"), ws=True
        )
        assert code == 0
        assert await reader.subscribe([("d/+/s", 0), ("d/#", 0), ("$hub/events/#", 0)]) == [
            0,
            0x80,
            0x80,
        ]
        short = token(secure_hub, "--subscribe", "d/#", "--ttl", "1")
        await asyncio.sleep(1.2)  # on purpose: the token's 1 s lifetime runs out
        _, code = await connect(secure_hub, "b2", "token", short, ws=True)
        assert code == 4
        _, code = await connect(secure_hub, "b3", "token", "v1.forged.token", ws=True)
        assert code == 4

    asyncio.run(scenario())


def test_token_cli_errors() -> None:
    """A token with no scope or a silly ttl is refused with exit code 2."""
    for args, message in [((), "at least one"), (("--subscribe", "x", "--ttl", "0"), "--ttl")]:
        result = hub_cli(Path("/tmp"), "token", "create", *args)
        assert result.returncode == 2 and message in result.stderr


def test_oversize_payload_and_rate_limit_are_refused_with_events(tmp_path: Path) -> None:
    """Over-limit traffic is refused with an event: a payload above --max-payload closes the
    connection; publishes above --rate-limit are dropped (QoS 0) or left unacknowledged (QoS 1)."""
    hub = start_hub(tmp_path / "data", "--max-payload", "100", "--rate-limit", "5", secure=True)
    creds = provision(hub, "dev-f")
    try:

        async def scenario() -> None:
            events = await Events.watch(hub)
            dev, _ = await connect(hub, "dev-f", "dev-f", creds["password"])
            for i in range(30):
                await dev.send(publish_packet("d/dev-f/t/temp", b"ab,%d,1.0" % i))
            _, body = await events.expect("rate_limit")
            assert body["name"] == "dev-f"
            await dev.send(publish_packet("d/dev-f/t/temp", b"ab,99,1.0", qos=1, pid=9))
            with pytest.raises(TimeoutError):
                await dev.expect(4, timeout=0.1)  # no PUBACK while over the limit
            await dev.send(publish_packet("d/dev-f/t/temp", b"x" * 101))
            await dev.expect_closed(PROMPT)
            _, body = await events.expect("payload_too_large")
            assert "101 bytes" in body["detail"]

        asyncio.run(scenario())
    finally:
        hub.stop()


def test_secrets_never_reach_logs_events_or_the_registry_file(tmp_path: Path) -> None:
    """With debug logging on, a device's secret and a token appear nowhere but the client."""
    log_path = tmp_path / "hub.log"
    with log_path.open("w") as log:
        hub = start_hub(tmp_path / "data", "--log-level", "DEBUG", secure=True, stderr=log)
    creds = provision(hub, "dev-g")
    admin = token(hub, "--admin")
    seen: list[bytes] = []
    try:

        async def scenario() -> None:
            events = await Events.watch(hub)
            for password in (creds["password"], creds["password"] + "x"):
                client, _ = await connect(hub, "dev-g", "dev-g", password)
                await client.close()
            _, code = await connect(hub, "t", "token", admin)
            assert code == 0

            async def three_events() -> bool:
                with contextlib.suppress(TimeoutError):
                    seen.append((await events.client.next_message(0.3)).payload)
                return len(seen) >= 3

            await eventually_async(three_events, 5, "3 hub events", poll=0)
            while True:  # and whatever else the hub had to say
                try:
                    seen.append((await events.client.next_message(0.3)).payload)
                except TimeoutError:
                    break

        asyncio.run(scenario())
    finally:
        hub.stop()
    text = (
        log_path.read_bytes() + b"".join(seen) + (hub.data_dir / "registry.sqlite3").read_bytes()
    )
    assert b"dev-g" in text  # the search would find things
    assert creds["password"].encode() not in text
    assert admin.encode() not in text and admin.split(".")[2].encode() not in text


def test_development_mode_warns_loudly(tmp_path: Path) -> None:
    """--allow-anonymous admits a client without credentials and logs a warning saying so."""
    log_path = tmp_path / "hub.log"
    with log_path.open("w") as log:
        hub = start_hub(tmp_path / "data", stderr=log)  # development mode
    try:

        async def scenario() -> None:
            client, code = await connect(hub, "anyone", None, None)
            assert code == 0
            await client.close()

        asyncio.run(scenario())
    finally:
        hub.stop()
    assert "WARNING" in log_path.read_text() and "DEVELOPMENT MODE" in log_path.read_text()


def test_malformed_packet_is_a_hub_event(secure_hub: HubProcess) -> None:
    """A device that sends a malformed packet is disconnected and reported."""
    creds = provision(secure_hub, "dev-h")

    async def scenario() -> None:
        events = await Events.watch(secure_hub)
        dev, _ = await connect(secure_hub, "dev-h", "dev-h", creds["password"])
        await dev.send(publish_packet("d/dev-h/t/+", b"x"))  # a wildcard in a topic name
        await dev.expect_closed(PROMPT)
        _, body = await events.expect("malformed", name="dev-h")
        assert "wildcard" in body["detail"]
        _, body = await events.expect("disconnected", name="dev-h")
        assert body["reason"] in ("will", "lost")

    asyncio.run(scenario())
