"""mqtt routes with the real hub: republished under a topic template; a loop (a route
republishing into a topic it selects) detected and stopped with one warning event; SIGHUP
loads a changed route without dropping a connection."""

from __future__ import annotations

import asyncio
import json
import signal
from pathlib import Path
from typing import Any

from tests.routes.helpers import client, hub_with_routes, publish_readings, write_config
from tests.support.mqtt import RawClient
from tests.support.waits import eventually_async


async def collect(one: RawClient, seen: list[tuple[str, bytes]]) -> None:
    while True:
        message = await one.next_message(timeout=3600)
        seen.append((message.topic, message.payload))


def test_republish_and_a_loop_stopped(tmp_path: Path) -> None:
    """A route copies readings to out/{device}/{sensor}, one narrowed to a device and a
    sensor copies only theirs; a route that republishes into its own filter delivers once,
    then skips its own output with one route_loop event, and the hub keeps serving."""
    routes = [
        {"name": "copy", "filter": "d/+/t/+", "target": "mqtt", "topic": "out/{device}/{sensor}"},
        {"name": "echo", "filter": "loop/#", "target": "mqtt", "topic": "loop/again"},
        {
            "name": "only-b",
            "filter": "d/+/t/+",
            "device": "dev-b",
            "sensor": "hum",
            "target": "mqtt",
            "topic": "onlyb/{sensor}",
        },
    ]

    async def run() -> None:
        hub = await asyncio.to_thread(hub_with_routes, tmp_path, routes)
        try:
            watcher = await client(hub, "watcher")
            await watcher.subscribe(
                [("out/#", 1), ("loop/#", 1), ("onlyb/#", 1), ("$hub/events/#", 0)]
            )
            seen: list[tuple[str, bytes]] = []
            task = asyncio.get_running_loop().create_task(collect(watcher, seen))
            await publish_readings(hub, "dev-a", range(3))
            await publish_readings(hub, "dev-b", range(2), sensor="temp")
            await publish_readings(hub, "dev-b", range(2, 3), sensor="hum", pid_base=2)
            sender = await client(hub, "sender")
            await sender.publish("loop/start", b"ping", qos=1)

            def settled() -> bool:
                copies = [p for t, p in seen if t == "out/dev-a/temp"]
                assert copies == [b"b00f,0,0.5", b"b00f,1,1.5", b"b00f,2,2.5"], seen
                only = [(t, p) for t, p in seen if t.startswith("onlyb/")]
                assert only == [("onlyb/hum", b"b00f,2,2.5")], seen  # one device, one sensor
                loops = [
                    json.loads(p)
                    for t, p in seen
                    if t.startswith("$hub/events/") and json.loads(p)["event"] == "route_loop"
                ]
                assert len(loops) == 1 and loops[0]["route"] == "echo", seen
                return True

            await eventually_async(settled, 20, "the copies and one loop event")
            await sender.publish("loop/start", b"ping", qos=1)  # again: no second warning
            await eventually_async(
                lambda: [t for t, _ in seen].count("loop/again") == 2, 20, "a second echo"
            )
            await sender.ping()  # the hub still answers
            echoes = [t for t, _ in seen].count("loop/again")
            loop_events = [p for t, p in seen if b'"route_loop"' in p]
            assert echoes == 2 and len(loop_events) == 1
            task.cancel()
        finally:
            await asyncio.to_thread(hub.stop)

    asyncio.run(run())


def test_sighup_reloads_a_route_without_dropping_connections(tmp_path: Path) -> None:
    """A route's changed template applies after SIGHUP, an added route starts; the
    subscriber's connection stays up throughout."""
    first: list[dict[str, Any]] = [
        {"name": "copy", "filter": "d/+/t/+", "target": "mqtt", "topic": "one/{device}"}
    ]

    async def run() -> None:
        hub = await asyncio.to_thread(hub_with_routes, tmp_path, first)
        try:
            watcher = await client(hub, "watcher")
            await watcher.subscribe([("one/#", 1), ("two/#", 1), ("three/#", 1)])
            seen: list[tuple[str, bytes]] = []
            task = asyncio.get_running_loop().create_task(collect(watcher, seen))
            await publish_readings(hub, "dev-a", range(1))
            await eventually_async(lambda: ("one/dev-a", b"b00f,0,0.5") in seen, 20, "one/")
            write_config(
                tmp_path / "hub.toml",
                [
                    {**first[0], "topic": "two/{device}"},
                    {
                        "name": "more",
                        "filter": "d/+/t/+",
                        "target": "mqtt",
                        "topic": "three/{sensor}",
                    },
                ],
            )
            hub.proc.send_signal(signal.SIGHUP)
            log = tmp_path / "hub.log"
            await eventually_async(
                lambda: "SIGHUP: routes reloaded: copy, more" in log.read_text(),
                20,
                "the reload logged",
            )
            await publish_readings(hub, "dev-a", range(1, 2), pid_base=2)
            await eventually_async(
                lambda: {("two/dev-a", b"b00f,1,1.5"), ("three/temp", b"b00f,1,1.5")} <= set(seen),
                20,
                "the new template and the new route",
            )
            assert ("one/dev-a", b"b00f,1,1.5") not in seen
            assert not task.done()  # the same subscriber connection, never dropped
            task.cancel()
        finally:
            await asyncio.to_thread(hub.stop)

    asyncio.run(run())
