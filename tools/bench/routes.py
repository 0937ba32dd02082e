"""The route throughput scenario (hub only): a webhook route to a local HTTP server.

The hub runs with one ``[[routes]]`` webhook route selecting every reading; ten devices publish
``count`` readings at QoS 1 as fast as the broker acknowledges them; a local aiohttp server
answers 200 to each POST. The figure is the messages delivered per second, from the first
publish to the last delivery, and the messages lost (acknowledged to a device but never
delivered: it must be 0). Mosquitto has no routes, so its column stays empty.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aiohttp import web

from tools.bench.brokers import BenchError, Broker
from tools.bench.mqtt import open_tcp, publish_packet

PUBLISHERS = 10
INFLIGHT = 20  # unacknowledged QoS 1 publishes per device (the hub's max_inflight)
WAIT_S = 300.0


def config(path: Path, url: str) -> Path:
    path.write_text(
        '[[routes]]\nname = "bench"\nfilter = "d/+/t/+"\ntarget = "webhook"\n'
        f'url = "{url}"\nconcurrency = 16\nbackoff_s = 0.05\nmax_attempts = 100\n'
    )
    return path


async def _receiver(seen: set[bytes], last: list[float]) -> tuple[web.AppRunner, int]:
    async def take(request: web.Request) -> web.Response:
        seen.add(request.headers.get("X-Hub-Device", "").encode() + b"/" + await request.read())
        last[0] = time.monotonic()
        return web.Response(status=200)

    app = web.Application()
    app.router.add_post("/in", take)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    sock = socket.create_server(("127.0.0.1", 0))
    site = web.SockSite(runner, sock)
    await site.start()
    return runner, int(sock.getsockname()[1])


async def _publish(broker: Broker, device: list[str], count: int) -> int:
    """Publishes count readings at QoS 1 with a window of INFLIGHT; returns those acked."""
    name, secret = device[0], device[1]
    client = await open_tcp(broker.host, broker.port, name, name, secret)
    topic = f"d/{name}/t/temp".encode()
    acked = asyncio.Event()
    state = {"acked": 0}

    def on_puback(total: int) -> None:
        state["acked"] = total
        acked.set()

    client.on_puback = on_puback
    sent = 0
    while state["acked"] < count:
        while sent < count and sent - state["acked"] < INFLIGHT:
            client.write(publish_packet(topic, b"b00f,%d,21.5" % sent, 1, sent % 65535 + 1))
            sent += 1
        acked.clear()
        await asyncio.wait_for(acked.wait(), 30)
    client.close()
    return state["acked"]


async def _run(
    start: Callable[[Path], Broker], work: Path, devices: list[list[str]], count: int
) -> dict[str, Any]:
    seen: set[bytes] = set()
    last = [0.0]
    runner, port = await _receiver(seen, last)
    broker = await asyncio.to_thread(
        start, config(work / "routes.toml", f"http://127.0.0.1:{port}/in")
    )
    try:
        per = max(1, count // PUBLISHERS)
        began = time.monotonic()
        acked = sum(await asyncio.gather(*(_publish(broker, d, per) for d in devices)))
        deadline = time.monotonic() + WAIT_S
        while len(seen) < acked and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        took = max(last[0] - began, 1e-9)
        rate = round(len(seen) / took, 1)
        return {
            "published": acked,
            "delivered": len(seen),
            "lost": acked - len(seen),
            "seconds": round(took, 2),
            "delivered_per_s": rate,
        }
    finally:
        await asyncio.to_thread(broker.stop)
        await runner.cleanup()


def run(
    start: Callable[[Path], Broker], work: Path, creds: list[list[str]], count: int
) -> dict[str, Any]:
    """``start(config)`` starts the hub with that config file."""
    if len(creds) < PUBLISHERS:
        raise BenchError(f"the routes scenario needs {PUBLISHERS} devices")
    work.mkdir(parents=True, exist_ok=True)
    return asyncio.run(_run(start, work, creds[:PUBLISHERS], count))
