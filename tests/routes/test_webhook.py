"""Webhook routes against a real local HTTP server failing in scripted ways (500s, 4xx,
timeouts, refused connections), with the real hub: retries, order per device, dead letters,
the route_failure event, replay, and no loss across a hub killed in the middle of a retry."""

from __future__ import annotations

import asyncio
import json
import signal
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from tests.routes.helpers import client, dead_letters, hub_with_routes, publish_readings, route_cli
from tests.routes.receiver import Delivery, Receiver
from tests.support.hubproc import HubProcess, hub_cli, scaled
from tests.support.waits import eventually_async

SECRET = "Bearer s3cret-never-logged"


def webhook(url: str, **extra: Any) -> dict[str, Any]:
    route = {
        "name": "hook",
        "filter": "d/+/t/+",
        "target": "webhook",
        "url": url,
        "backoff_s": 0.05,
        "backoff_max_s": 0.2,
        "timeout_s": 2.0,
    }
    return {**route, **extra}


def seqs_of(bodies: list[bytes]) -> list[int]:
    return [int(body.split(b",")[1]) for body in bodies]


def api(hub: HubProcess, path: str) -> Any:
    made = hub_cli(hub.data_dir, "token", "create", "--admin")
    request = urllib.request.Request(
        f"{hub.http_url}{path}",
        headers={"Authorization": f"Bearer {made.stdout.strip().splitlines()[-1]}"},
    )
    with urllib.request.urlopen(request, timeout=scaled(10)) as response:
        return json.loads(response.read())


def api_routes(hub: HubProcess) -> list[dict[str, Any]]:
    return list(api(hub, "/api/routes")["routes"])


def test_retries_keep_each_devices_order_and_send_the_headers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every message's first attempt gets a 500; each is retried and delivered once
    accepted, in order per device, with the topic, device, sensor, QoS and retain headers and
    the Authorization header read from the environment (never logged)."""
    monkeypatch.setenv("HOOK_AUTH", SECRET)
    tries: Counter[str] = Counter()

    def first_fails(delivery: Delivery) -> int:
        tries[delivery.headers["X-Hub-Message-Id"]] += 1
        return 500 if tries[delivery.headers["X-Hub-Message-Id"]] == 1 else 200

    async def run() -> None:
        receiver = await Receiver(first_fails).start()
        route = webhook(
            receiver.url,
            headers_from_env={"Authorization": "HOOK_AUTH"},
            headers={"X-Source": "hub"},
        )
        hub = await asyncio.to_thread(hub_with_routes, tmp_path, [route])
        try:
            await asyncio.gather(
                publish_readings(hub, "dev-a", range(15)),
                publish_readings(hub, "dev-b", range(15)),
            )

            def all_in() -> bool:
                return len(receiver.accepted) == 30

            await eventually_async(all_in, 20, "30 deliveries")
            assert seqs_of(receiver.bodies("dev-a")) == list(range(15))
            assert seqs_of(receiver.bodies("dev-b")) == list(range(15))
            first = receiver.accepted[0]
            assert first.method == "POST"
            assert first.headers["Authorization"] == SECRET
            assert first.headers["X-Source"] == "hub"
            assert first.headers["X-Hub-Topic"] == f"d/{first.headers['X-Hub-Device']}/t/temp"
            assert first.headers["X-Hub-Sensor"] == "temp"
            assert first.headers["X-Hub-QoS"] == "1"
            assert first.headers["X-Hub-Retain"] == "0"
            assert set(tries.values()) == {2}
            (listed,) = await asyncio.to_thread(api_routes, hub)
            assert listed["delivered"] == 30 and listed["retries"] == 30
            assert listed["secret_headers"] == ["Authorization"] and SECRET not in str(listed)
        finally:
            await asyncio.to_thread(hub.stop)
            await receiver.stop()
        table = route_cli(hub, "list")
        assert table.splitlines()[1].split()[:8] == ["hook", "-", "-", "0", "30", "30", "0", "0"]
        configured = route_cli(hub, "list", "--config", str(tmp_path / "hub.toml"), "--json")
        assert json.loads(configured) == {
            **{k: route[k] for k in ("name", "filter", "target", "url")},
            "method": "POST",
            "secret_headers": ["Authorization"],
            "queued": 0,
            "delivered": 30,
            "retries": 30,
            "dead": 0,
            "loops": 0,
        }
        assert "s3cret" not in (tmp_path / "hub.log").read_text()

    asyncio.run(run())


async def events_of(hub: HubProcess, client_id: str) -> tuple[Any, list[dict[str, Any]]]:
    """A subscriber to the hub's events and the list it fills."""
    watcher = await client(hub, client_id)
    await watcher.subscribe([("$hub/events/#", 0)])
    seen: list[dict[str, Any]] = []

    async def read() -> None:
        while True:
            message = await watcher.next_message(timeout=3600)
            seen.append(json.loads(message.payload))

    return asyncio.get_running_loop().create_task(read()), seen


def test_dead_letters_an_event_and_replay(tmp_path: Path) -> None:
    """A server that answers 503 gets max_attempts tries, then the message is a dead letter
    with a route_failure event naming route, status and error; a 400 is not retried; after
    the server recovers, `hub route dead-letters hook --replay` delivers them in order."""
    answer = {"status": 503}

    def scripted(delivery: Delivery) -> int:
        return 400 if delivery.body.startswith(b"bad") else answer["status"]

    async def run() -> None:
        receiver = await Receiver(scripted).start()
        hub = await asyncio.to_thread(
            hub_with_routes, tmp_path, [webhook(receiver.url, max_attempts=3)]
        )
        try:
            task, events = await events_of(hub, "watcher")
            await publish_readings(hub, "dev-a", range(3))
            sender = await client(hub, "bad-sender")
            await sender.publish("d/dev-a/t/temp", b"bad,1,1", qos=1)

            def four_dead() -> list[dict[str, Any]]:
                failures = [e for e in events if e["event"] == "route_failure"]
                assert len(failures) == 4, failures
                return failures

            failures = await eventually_async(four_dead, 20, "4 route_failure events")
            assert {(f["route"], f["status"], f["attempts"]) for f in failures} == {
                ("hook", "503", 3),
                ("hook", "400", 1),
            }
            assert all("HTTP 503" in f["error"] for f in failures if f["status"] == "503")
            letters = await asyncio.to_thread(dead_letters, hub, "hook")
            assert [d["payload"] for d in letters] == [
                "b00f,0,0.5",
                "b00f,1,1.5",
                "b00f,2,2.5",
                "bad,1,1",
            ]
            assert receiver.accepted == []
            listed = await asyncio.to_thread(api, hub, "/api/routes/hook/dead-letters")
            assert [(d["status"], d["attempts"]) for d in listed["dead_letters"]] == [
                ("503", 3),
                ("503", 3),
                ("503", 3),
                ("400", 1),
            ]
            answer["status"] = 200
            replayed = await asyncio.to_thread(route_cli, hub, "dead-letters", "hook", "--replay")
            assert replayed.startswith("replayed 4 dead letters")

            def three_in() -> bool:
                return len(receiver.accepted) == 3

            await eventually_async(three_in, 20, "the 3 replayed readings delivered")
            assert seqs_of(receiver.bodies()) == [0, 1, 2]
            await eventually_async(
                lambda: [d["payload"] for d in dead_letters(hub, "hook")] == ["bad,1,1"],
                20,
                "the 400 back among the dead letters",
            )
            task.cancel()
        finally:
            await asyncio.to_thread(hub.stop)
            await receiver.stop()

    asyncio.run(run())


def test_timeouts_and_refused_connections_are_retried(tmp_path: Path) -> None:
    """A server slower than the route's timeout, then one whose port is closed: the route
    keeps retrying and delivers everything once the server answers in time again."""
    calls: Counter[str] = Counter()

    def slow_first(delivery: Delivery) -> int | tuple[str, float]:
        calls[delivery.headers["X-Hub-Message-Id"]] += 1
        return ("slow", 1.5) if calls[delivery.headers["X-Hub-Message-Id"]] == 1 else 200

    async def run() -> None:
        receiver = await Receiver(slow_first).start()
        route = webhook(receiver.url, timeout_s=0.3, max_attempts=50, backoff_max_s=0.3)
        hub = await asyncio.to_thread(hub_with_routes, tmp_path, [route])
        try:
            await publish_readings(hub, "dev-a", range(3))
            await eventually_async(lambda: len(receiver.accepted) >= 3, 20, "3 after timeouts")
            assert seqs_of(receiver.bodies())[:3] == [0, 1, 2]
            port = receiver.port
            await receiver.stop()  # refused from now on
            await publish_readings(hub, "dev-a", range(3, 6), pid_base=2)
            await asyncio.sleep(scaled(0.5))  # on purpose: a few refused attempts pass
            back = await Receiver(lambda d: 200).start(port)
            await eventually_async(lambda: len(back.accepted) >= 3, 20, "3 after refusals")
            assert seqs_of(back.bodies()) == [3, 4, 5]
            await back.stop()
        finally:
            await asyncio.to_thread(hub.stop)

    asyncio.run(run())


def test_no_loss_when_the_hub_is_killed_mid_retry(tmp_path: Path) -> None:
    """Readings acknowledged while the webhook fails are in the route's durable queue: the
    hub is killed (SIGKILL) in the middle of retrying, restarted, and delivers every one, in
    order for the device."""
    answer = {"status": 503}

    async def run() -> None:
        receiver = await Receiver(lambda d: answer["status"]).start()
        route = webhook(receiver.url, max_attempts=100, backoff_s=0.1, backoff_max_s=0.3)
        hub = await asyncio.to_thread(hub_with_routes, tmp_path, [route])
        try:
            await publish_readings(hub, "dev-a", range(20))
            await eventually_async(lambda: len(receiver.received) >= 3, 20, "retries under way")
        finally:
            await asyncio.to_thread(hub.stop, signal.SIGKILL)
        answer["status"] = 200
        again = await asyncio.to_thread(hub_with_routes, tmp_path, [route])
        try:
            await eventually_async(lambda: len(receiver.accepted) >= 20, 30, "all 20 delivered")
            assert seqs_of(receiver.bodies()) == list(range(20))
        finally:
            await asyncio.to_thread(again.stop)
            await receiver.stop()

    asyncio.run(run())
