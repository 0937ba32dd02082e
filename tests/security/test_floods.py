"""Floods: slow consumers, log floods, login floods and a client's share across reconnects
(issue #13). Real hubs on free ports; the hub's memory and log are read from outside."""

from __future__ import annotations

import asyncio
import contextlib
import time
from pathlib import Path

import pytest

from tests.support.guard import Canary, Events, log_lines, logged_hub, rss_kb, token
from tests.support.hubproc import HubProcess, provision, scaled
from tests.support.mqtt import PUBACK, RawClient, publish_packet

# A canary's PUBACK latency is measured against a budget: run alone (Makefile, `make test`).
pytestmark = pytest.mark.alone

WAIT = scaled(5)
QUIET = scaled(0.3)


async def _open(hub: HubProcess, transport: str = "tcp") -> RawClient:
    if transport == "tcp":
        return await RawClient.tcp(hub.host, hub.mqtt_port)
    return await RawClient.websocket(hub.ws_url)


async def _client(
    hub: HubProcess, client_id: str, transport: str = "tcp", **kw: object
) -> RawClient:
    client = await _open(hub, transport)
    _, code = await client.connect(client_id, **kw)
    assert code == 0, code
    return client


@pytest.mark.parametrize("transport", ["tcp", "ws"])
@pytest.mark.parametrize("policy", ["drop", "disconnect"])
def test_slow_reader_is_bounded(tmp_path: Path, transport: str, policy: str) -> None:
    """A subscriber that stops reading while 64 MB are published to it costs the hub less
    than 40 MB; with --slow-consumer drop it stays connected (QoS 0 dropped), with disconnect
    it is cut off with a queue_full event saying so; the canary is served."""

    async def scenario(hub: HubProcess) -> None:
        events = await Events.watch(hub)
        slow = await _client(hub, "slow", transport)
        assert await slow.subscribe([("firehose/#", 0)]) == [0]
        pub = await _client(hub, "pub")
        before = rss_kb(hub)
        chunk = b"".join(publish_packet("firehose/x", b"z" * 32_000) for _ in range(100))
        with Canary(hub) as canary:
            for _ in range(20):  # 2,000 messages of 32 KB
                await pub.send(chunk)
                await pub.ping(WAIT)
            grown = rss_kb(hub) - before
        canary.check()
        assert grown < 40_000, f"the hub grew by {grown} KB"
        if policy == "disconnect":
            body = await events.expect("queue_full", client_id="slow")
            assert body["action"] == "disconnected" and body["quota"] == "queued_bytes"
            await slow.packets_until_closed(WAIT)
        else:
            await pub.publish("firehose/last", b"end", qos=0)
            await pub.ping(WAIT)
            topics = []
            with contextlib.suppress(TimeoutError):
                while True:
                    topics.append((await slow.next_message(scaled(1))).topic)
            assert topics[-1] == "firehose/last" and len(topics) < 2000, len(topics)

    options = ("--slow-consumer", policy, "--max-queued-bytes", str(4 * 1024 * 1024))
    with logged_hub(tmp_path, *options) as hub:
        asyncio.run(scenario(hub))


def test_log_and_event_floods_are_summarised(tmp_path: Path) -> None:
    """100 offline persistent sessions (and an admin's, subscribed to hub events) overflowing
    with 1,000 messages each add a bounded number of lines to the hub's log, no traceback, and
    no event about a dropped event."""
    sessions = 100

    async def scenario(hub: HubProcess) -> None:
        for n in range(sessions):
            client = await _client(hub, f"off-{n}", clean=False)
            assert await client.subscribe([("flood/#", 1)]) == [1]
            await client.disconnect()
        admin = await _client(
            hub, "admin-off", clean=False, username="token", password=token(hub, "--admin")
        )
        assert await admin.subscribe([("$hub/events/#", 1)]) == [1]
        await admin.disconnect()
        lines_before = len(log_lines(tmp_path))
        pub = await _client(hub, "flooder")
        for i in range(0, 1000, 100):
            await pub.send(
                b"".join(
                    publish_packet("flood/x", b"%d" % n, qos=1, pid=n + 1)
                    for n in range(i, i + 100)
                )
            )
            for n in range(i, i + 100):
                await pub.expect_reply(PUBACK, n + 1, WAIT)
        added = log_lines(tmp_path)[lines_before:]
        assert len(added) <= 2 * (sessions + 1) + 20, f"{len(added)} lines: {added[:5]}"
        assert not [line for line in added if "Traceback" in line or "Recursion" in line]
        admin = await _client(
            hub, "admin-off", clean=False, username="token", password=token(hub, "--admin")
        )
        kinds = set()
        with contextlib.suppress(TimeoutError):
            while True:
                msg = await admin.next_message(QUIET)
                kinds.add(msg.topic.split("/")[-1])
        assert kinds, "the admin's session kept no events"

    with logged_hub(tmp_path, "--max-queued", "10") as hub:
        asyncio.run(scenario(hub))


def test_token_cannot_take_a_devices_client_id(tmp_path: Path) -> None:
    """A valid token presented with a registered device's client id is refused (CONNACK 5)
    with an auth_failure event, and the connected device stays connected."""

    async def scenario(hub: HubProcess) -> None:
        creds = provision(hub, "dev-k")
        events = await Events.watch(hub)
        device = await _client(hub, "dev-k", username="dev-k", password=creds["password"])
        stolen = token(hub, "--subscribe", "d/+/s")  # before the connection: connect_timeout
        thief = await _open(hub, "ws")
        _, code = await thief.connect("dev-k", username="token", password=stolen)
        assert code == 5
        body = await events.expect("auth_failure", client_id="dev-k")
        assert "device" in body["detail"]
        await device.ping(WAIT)

    with logged_hub(tmp_path, secure=True) as hub:
        asyncio.run(scenario(hub))


def test_failed_logins_are_refused_without_checking_for_a_while(tmp_path: Path) -> None:
    """After --login-failures wrong secrets, even the right one is refused (CONNACK 4, 'too
    many failed logins') instead of being checked."""

    async def scenario(hub: HubProcess) -> None:
        creds = provision(hub, "dev-l")
        events = await Events.watch(hub)
        for _ in range(3):
            client = await _open(hub)
            assert (await client.connect("dev-l", username="dev-l", password="wrong"))[1] == 4
        client = await _open(hub)
        _, code = await client.connect("dev-l", username="dev-l", password=creds["password"])
        assert code == 4
        await events.expect("auth_failure", detail="too many failed logins: try again later")

    with logged_hub(tmp_path, "--login-failures", "3", secure=True) as hub:
        asyncio.run(scenario(hub))


def test_rate_limit_follows_the_device_across_reconnects(tmp_path: Path) -> None:
    """A device that used up its burst cannot get a fresh one by reconnecting: its next QoS 1
    publish goes unacknowledged (a rate of 0.5 a second gives a burst of one)."""

    async def scenario(hub: HubProcess) -> None:
        creds = provision(hub, "dev-r")
        login = {"username": "dev-r", "password": creds["password"]}
        device = await _client(hub, "dev-r", **login)
        await device.send(publish_packet("d/dev-r/t/temp", b"ab,0,1.0"))  # the burst
        await device.ping(WAIT)
        start = time.monotonic()
        await device.disconnect()
        device = await _client(hub, "dev-r", **login)
        await device.send(publish_packet("d/dev-r/t/temp", b"ab,1,1.0", qos=1, pid=9))
        await device.recv_nothing(QUIET)
        assert time.monotonic() - start < 1.5, "too slow to tell: a token came back meanwhile"

    with logged_hub(tmp_path, "--rate-limit", "0.5", secure=True) as hub:
        asyncio.run(scenario(hub))


def test_refused_publish_flood_is_rate_limited(tmp_path: Path) -> None:
    """A device flooding publishes it may not make ('$' topics, another device's) gets a
    filter_violation event, then the rate limit: at most its burst (2 x 50) and what the rate
    refills are acknowledged, and the flood is summarised in a few log lines."""

    async def scenario(hub: HubProcess) -> None:
        creds = provision(hub, "dev-f")
        events = await Events.watch(hub)
        device = await _client(hub, "dev-f", username="dev-f", password=creds["password"])
        await device.publish("$SYS/x", b"no", qos=1, pid=1)
        body = await events.expect("filter_violation", name="dev-f")
        assert "$SYS/x" in body["detail"]
        lines_before = len(log_lines(tmp_path))
        start = time.monotonic()
        await device.send(
            b"".join(
                publish_packet("d/other/t/temp", b"ab,0,1.0", qos=1, pid=n + 2)
                for n in range(2000)
            )
        )
        acks = 0
        with contextlib.suppress(TimeoutError):
            while True:
                assert (await device.recv(QUIET)).kind == PUBACK
                acks += 1
        allowed = 100 + 50 * (time.monotonic() - start)
        assert 0 < acks <= allowed, (acks, allowed)
        await events.expect("rate_limit", name="dev-f")
        added = log_lines(tmp_path)[lines_before:]
        assert len(added) <= 5, added

    with logged_hub(tmp_path, secure=True) as hub:
        asyncio.run(scenario(hub))
