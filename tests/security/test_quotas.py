"""Quotas: one client cannot take the hub's memory or stall other clients (issue #13).

Each test hits a quota on a real hub, gets its hub event, keeps the hub's memory within a
stated budget and checks that a canary client is served all along (PUBACK within 100 ms).
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from tests.support.devices import HEALTH
from tests.support.guard import Canary, Events, count_publishes, logged_hub, rss_kb, token
from tests.support.hubproc import scaled
from tests.support.mqtt import (
    PINGRESP,
    PUBACK,
    SUBACK,
    RawClient,
    pingreq_packet,
    publish_packet,
    subscribe_packet,
)

# A canary's PUBACK latency is measured against a budget: run alone (Makefile, `make test`).
pytestmark = pytest.mark.alone

WAIT = scaled(5)
QUIET = scaled(0.25)


async def _client(hub: object, client_id: str, **connect: object) -> RawClient:
    client = await RawClient.tcp(hub.host, hub.mqtt_port)  # type: ignore[attr-defined]
    _, code = await client.connect(client_id, **connect)
    assert code == 0, code
    return client


def test_sensors_per_device_and_sensor_names_are_bounded(tmp_path: Path) -> None:
    """A device publishing retained readings of 40 KB to 1,500 sensor names gets 32 sensors
    (the default); the rest, and a bad sensor name, are acknowledged and dropped with events;
    the hub grows by less than 40 MB and the canary is served."""

    async def scenario(hub: object) -> None:
        events = await Events.watch(hub)  # type: ignore[arg-type]
        spy = await _client(hub, "spy")
        assert await spy.subscribe([("d/+/t/+", 0)]) == [0]
        dev = await _client(hub, "dev1")
        before = rss_kb(hub)  # type: ignore[arg-type]
        body = b"ab,0,1.0" + b" " * 40_000
        with Canary(hub) as canary:  # type: ignore[arg-type]
            for i in range(1500):
                packet = publish_packet(f"d/dev1/t/s{i}", body, qos=1, pid=i + 1, retain=True)
                await dev.send(packet)
            for i in range(1500):
                await dev.expect_reply(PUBACK, i + 1, WAIT)
            body_ = await events.expect("quota_exceeded", quota="sensors", device="dev1")
            assert "32 sensors" in body_["detail"]
            await dev.publish("d/dev1/t/Bad-Name", b"ab,1,1.0", qos=1, pid=1)
            bad = await events.expect("malformed", device="dev1")
            assert "sensor name" in bad["detail"]
            grown = rss_kb(hub) - before  # type: ignore[arg-type]
        canary.check()
        assert grown < 40_000, f"the hub grew by {grown} KB"
        topics = set()
        while True:
            try:
                topics.add((await spy.next_message(QUIET)).topic)
            except TimeoutError:
                break
        assert topics == {f"d/dev1/t/s{i}" for i in range(32)}

    with logged_hub(tmp_path) as hub:
        asyncio.run(scenario(hub))


def test_invalid_status_and_health_are_not_routed_nor_retained(tmp_path: Path) -> None:
    """A status other than online/offline/asleep and a health message whose heap is markup
    are acknowledged, not routed, not retained, and raise malformed events naming the device;
    the valid ones before them stay retained."""

    async def scenario(hub: object) -> None:
        events = await Events.watch(hub)  # type: ignore[arg-type]
        dev = await _client(hub, "dev2")
        await dev.publish("d/dev2/s", b"online", qos=1, retain=True)
        await dev.publish("d/dev2/m", json.dumps(HEALTH).encode(), qos=1, retain=True)
        evil = dict(HEALTH, heap="<img src=x onerror=alert(1)>")
        await dev.publish("d/dev2/m", json.dumps(evil).encode(), qos=1, pid=2, retain=True)
        body = await events.expect("malformed", device="dev2")
        assert "heap" in body["detail"]
        intruder = await _client(hub, "intruder")  # its own events (dev2's are throttled)
        await intruder.publish("d/dev2/s", b"<script>", qos=1, pid=3, retain=True)
        body = await events.expect("malformed", device="dev2", client_id="intruder")
        assert "status" in body["detail"]
        later = await _client(hub, "later")
        assert await later.subscribe([("d/dev2/+", 0)]) == [0]
        got = {m.topic: m.payload for m in await later.messages_until(2, WAIT)}
        assert got == {"d/dev2/s": b"online", "d/dev2/m": json.dumps(HEALTH).encode()}
        await later.recv_nothing(QUIET)

    with logged_hub(tmp_path) as hub:
        asyncio.run(scenario(hub))


def test_retained_quotas_per_client_and_for_the_hub(tmp_path: Path) -> None:
    """Retained messages beyond a client's count or bytes, or the hub's total, are routed but
    not retained, each with a quota_exceeded event naming the quota; 5,000 retained publishes
    from one client leave the hub less than 20 MB larger and the canary served."""

    async def scenario(hub: object) -> None:
        events = await Events.watch(hub)  # type: ignore[arg-type]
        a = await _client(hub, "ret-a")
        for i in range(6):
            await a.publish(f"q/a/{i}", b"x", qos=1, pid=i + 1, retain=True)
        assert (await events.expect("quota_exceeded", quota="retained_messages"))["client_id"]
        b = await _client(hub, "ret-b")
        await b.publish("q/b/big", b"y" * 21_000, qos=1, retain=True)
        await events.expect("quota_exceeded", quota="retained_bytes", client_id="ret-b")
        c = await _client(hub, "ret-c")
        d = await _client(hub, "ret-d")
        await c.publish("q/c/1", b"c" * 9_000, qos=1, retain=True)
        await c.publish("q/c/2", b"c" * 9_000, qos=1, pid=2, retain=True)
        await d.publish("q/d/1", b"d" * 9_000, qos=1, retain=True)
        await events.expect("quota_exceeded", quota="hub_retained_bytes", client_id="ret-d")
        e = await _client(hub, "ret-e")  # 5,000 small retained messages: 5 are kept
        before = rss_kb(hub)  # type: ignore[arg-type]
        with Canary(hub) as canary:  # type: ignore[arg-type]
            await e.send(
                b"".join(publish_packet(f"q/e/{i}", b"%d" % i, retain=True) for i in range(5000))
            )
            await e.ping(WAIT)
        canary.check()
        assert rss_kb(hub) - before < 20_000  # type: ignore[arg-type]
        sub = await _client(hub, "reader")
        assert await sub.subscribe([("q/#", 0)]) == [0]
        got = []
        while True:
            try:
                got.append((await sub.next_message(QUIET)).topic)
            except TimeoutError:
                break
        assert sorted(got) == sorted(
            [f"q/a/{i}" for i in range(5)] + ["q/c/1", "q/c/2"] + [f"q/e/{i}" for i in range(5)]
        )

    options = (
        "--max-retained-per-client",
        "5",
        "--max-retained-bytes-per-client",
        "20000",
        "--max-retained-bytes",
        "25000",
    )
    with logged_hub(tmp_path, *options) as hub:
        asyncio.run(scenario(hub))


def test_huge_subscribe_is_capped_and_stalls_nobody(tmp_path: Path) -> None:
    """A SUBSCRIBE of 5,000 wildcard filters over 2,000 retained messages gets its first 8
    filters granted and the rest refused (a quota_exceeded event); a connection holds at most
    --max-subscriptions (50 here); the canary is served throughout."""

    async def scenario(hub: object) -> None:
        events = await Events.watch(hub)  # type: ignore[arg-type]
        loader = await _client(hub, "loader")
        await loader.send(
            b"".join(publish_packet(f"r/{i % 50}/{i}", b"v", retain=True) for i in range(2000))
        )
        await loader.ping(WAIT)
        greedy = await _client(hub, "greedy")
        filters = [(f"r/{i % 50}/+", 0) for i in range(5000)]
        with Canary(hub) as canary:  # type: ignore[arg-type]
            await greedy.send(subscribe_packet(1, filters))
            codes = list((await greedy.expect_reply(SUBACK, 1, WAIT)).body[2:])
            assert codes == [0] * 8 + [0x80] * 4992
            await events.expect("quota_exceeded", quota="filters_per_subscribe")
            await asyncio.sleep(scaled(0.5))  # on purpose: the canary keeps measuring a while
        canary.check()
        many = await _client(hub, "many")
        granted = []
        for n in range(7):
            granted += await many.subscribe([(f"m/{n}/{i}", 0) for i in range(8)], pid=n + 1)
        assert granted == [0] * 50 + [0x80] * 6
        await events.expect("quota_exceeded", quota="subscriptions", client_id="many")

    options = ("--max-retained-per-client", "5000", "--max-subscriptions", "50")
    with logged_hub(tmp_path, *options) as hub:
        asyncio.run(scenario(hub))


def test_subscribing_to_everything_over_100000_retained_messages(tmp_path: Path) -> None:
    """A subscription to '#' over 100,000 retained messages gets its SUBACK at once and every
    message, delivered in slices: the canary is never stalled."""
    count = 100_000

    async def scenario(hub: object) -> None:
        loaders = [await _client(hub, f"loader-{n}") for n in range(4)]
        for n, loader in enumerate(loaders):
            await loader.send(
                b"".join(
                    publish_packet(f"r/{n}/{i // 100}/{i}", b"%d" % i, retain=True)
                    for i in range(n, count, 4)
                )
            )
        for loader in loaders:
            await loader.ping(scaled(30))
        everything = await _client(hub, "everything")
        with Canary(hub) as canary:  # type: ignore[arg-type]  # from the subscription on
            await everything.send(subscribe_packet(1, [("#", 0)]))
            first = await everything.recv(scaled(1))
            assert first.kind == SUBACK, first
            got = await count_publishes(everything, b"r/", count, WAIT)
        canary.check()
        assert got == count

    options = (
        "--max-retained-per-client",
        "100000",
        "--max-retained-bytes-per-client",
        str(64 * 1024 * 1024),
    )
    with logged_hub(tmp_path, *options) as hub:
        asyncio.run(scenario(hub))


def test_long_topic_names_do_not_pin_memory(tmp_path: Path) -> None:
    """20 connections publishing to 64 topic names of 40,000 characters each leave the hub
    less than 30 MB larger once they close (no cache keeps such names)."""

    async def scenario(hub: object) -> None:
        before = rss_kb(hub)  # type: ignore[arg-type]
        with Canary(hub) as canary:  # type: ignore[arg-type]
            for n in range(20):
                client = await _client(hub, f"long-{n}")
                await client.send(
                    b"".join(
                        publish_packet(f"long/{n}/{i}/" + "x" * 40_000, b"v") for i in range(64)
                    )
                )
                await client.ping(WAIT)
                await client.disconnect()
        canary.check()
        grown = rss_kb(hub) - before  # type: ignore[arg-type]
        assert grown < 30_000, f"the hub grew by {grown} KB"

    with logged_hub(tmp_path) as hub:
        asyncio.run(scenario(hub))


def test_pingreq_flood_is_rate_limited(tmp_path: Path) -> None:
    """1,000 PINGREQs at once get at most 100 PINGRESPs a second (a rate_limit event), and
    the connection keeps working."""

    async def scenario(hub: object) -> None:
        events = await Events.watch(hub)  # type: ignore[arg-type]
        client = await _client(hub, "pinger")
        await client.send(pingreq_packet() * 1000)
        answers = 0
        while True:
            try:
                p = await client.recv(QUIET)
            except TimeoutError:
                break
            assert p.kind == PINGRESP
            answers += 1
        assert 1 <= answers <= 200, answers
        await events.expect("rate_limit", client_id="pinger")
        await asyncio.sleep(1.1)  # on purpose: the bucket refills
        await client.ping(WAIT)

    with logged_hub(tmp_path) as hub:
        asyncio.run(scenario(hub))


def test_persistent_sessions_per_identity_are_bounded(tmp_path: Path) -> None:
    """One token keeps at most --max-sessions-per-identity persistent sessions: a new one
    drops its oldest offline session (a quota_exceeded event), the newer ones are resumed."""

    async def scenario(hub: object) -> None:
        events = await Events.watch(hub)  # type: ignore[arg-type]
        login = {"username": "token", "password": token(hub, "--subscribe", "x/#")}  # type: ignore[arg-type]
        for n in range(4):
            client = await _client(hub, f"keep-{n}", clean=False, **login)
            assert await client.subscribe([("x/#", 1)]) == [1]
            await client.disconnect()
        body = await events.expect("quota_exceeded", quota="sessions")
        assert "keep-0" in body["detail"]
        for n, present in ((1, True), (3, True), (0, False)):
            client = await RawClient.tcp(hub.host, hub.mqtt_port)  # type: ignore[attr-defined]
            assert await client.connect(f"keep-{n}", clean=False, **login) == (present, 0)
            await client.disconnect()

    with logged_hub(tmp_path, "--max-sessions-per-identity", "3", secure=True) as hub:
        asyncio.run(scenario(hub))
