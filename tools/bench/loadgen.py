"""`python -m tools.bench.loadgen`: the load generator, one scenario per process.

It reads one JSON line (the scenario spec) on stdin and drives a broker with raw MQTT packets.
At each point the orchestrator measures the broker (connect batches, fleet start) it prints
``{"mark": ...}`` and waits for a line on stdin; at the end it prints ``{"result": ...}``
with its own CPU use, so a table can show that the load generator was not the bottleneck.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import resource
import struct
import sys
import time
from typing import Any

from tools.bench.mqtt import (
    DISCONNECT,
    Client,
    WsClient,
    open_tcp,
    publish_packet,
    subscribe,
)

Spec = dict[str, Any]
_U16 = struct.Struct("!H")


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def percentiles(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"p50_ms": None, "p99_ms": None, "max_ms": None}
    ordered = sorted(values)

    def at(q: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000, 3)

    return {"p50_ms": at(0.50), "p99_ms": at(0.99), "max_ms": round(ordered[-1] * 1000, 3)}


class Marks:
    """Pauses the run where the orchestrator measures the broker."""

    def __init__(self, reader: asyncio.StreamReader) -> None:
        self._reader = reader

    async def __call__(self, name: str, **info: Any) -> None:
        print(json.dumps({"mark": name, **info}), flush=True)
        await self._reader.readline()


def _reading(boot: str, seq: int) -> bytes:
    return f"{boot},{seq},21.5".encode()


async def _connect_many(
    spec: Spec, devices: list[list[str]], concurrency: int, keepalive: int = 120
) -> list[Client]:
    """Connects devices [id, secret] (or anonymous ids) with a bound on connects in flight."""
    host, port = spec["host"], spec["port"]
    anonymous = spec.get("anonymous", False)
    gate = asyncio.Semaphore(concurrency)

    async def one(device: list[str]) -> Client:
        async with gate:
            for attempt in range(5):
                try:
                    if anonymous:
                        return await open_tcp(host, port, device[0], keepalive=keepalive)
                    return await open_tcp(
                        host, port, device[0], device[0], device[1], keepalive=keepalive
                    )
                except (ConnectionError, OSError, TimeoutError):
                    if attempt == 4:
                        raise
                    await asyncio.sleep(0.2 * (attempt + 1))
            raise AssertionError("unreachable")

    return list(await asyncio.gather(*(one(d) for d in devices)))


async def _subscriber(spec: Spec, name: str, filters: list[tuple[str, int]], hook: Any) -> Client:
    token = spec.get("token")
    if spec.get("anonymous"):
        client = await open_tcp(spec["host"], spec["port"], name, on_publish=hook)
    else:
        client = await open_tcp(spec["host"], spec["port"], name, "token", token, on_publish=hook)
    await subscribe(client, filters)
    return client


async def _ws_subscriber(
    spec: Spec, name: str, filters: list[tuple[str, int]], hook: Any
) -> WsClient:
    ws = WsClient(hook)
    user, token = (None, None) if spec.get("anonymous") else ("token", spec.get("token"))
    await ws.open(spec["ws_url"], name, user, token)
    await ws.subscribe(filters)
    return ws


# --- scenarios ---------------------------------------------------------------------------------
async def throughput(spec: Spec, marks: Marks) -> dict[str, Any]:
    """Publishers flood at QoS 0 or 1 (a window of PUBACKs); subscribers count deliveries."""
    qos: int = spec["qos"]
    publishers: list[list[str]] = spec["devices"][: spec["publishers"]]
    n_subs: int = spec["subscribers"]
    duration: float = spec["seconds"]
    window: int = spec.get("window", 100)
    boot = f"{random.getrandbits(32):08x}"
    filters = [("d/+/t/+", qos)] if n_subs == 1 else [(f"d/{publishers[0][0]}/t/temp", qos)]
    subs = [await _subscriber(spec, f"bench-sub-{i}", filters, None) for i in range(n_subs)]
    pubs = await _connect_many(spec, publishers, 50)
    await marks("connected")
    stop = asyncio.Event()
    sent = [0]
    e2e: int = spec.get("e2e_window", 500)
    progress = asyncio.Event()  # a PUBACK or a delivery: a waiting publisher looks again
    for sub in subs:
        sub.on_received = progress.set

    def in_transit() -> int:
        return sent[0] - sum(s.received for s in subs) // len(subs)

    async def flood(client: Client, device: str) -> None:
        # Fixed-width readings (seq from 10**9), so every packet of a publisher is one size.
        head = publish_packet(f"d/{device}/t/temp".encode(), _reading(boot, 10**9), qos, 1)
        head = head[: len(head) - len(_reading(boot, 10**9)) - (2 if qos else 0)]
        body = f"{boot},%d,21.5".encode()
        seq = 10**9
        first = seq
        batch = window // 2 if qos else 200
        client.acks_only = True
        client.on_puback = lambda _acked: progress.set()
        while not stop.is_set() and not client.closed:
            if qos:
                packets = [
                    head + _U16.pack(s % 65535 + 1) + body % s for s in range(seq, seq + batch)
                ]
            else:
                packets = [head + body % s for s in range(seq, seq + batch)]
            seq += batch
            # QoS 1: a closed loop, at most `e2e` messages published but not yet delivered,
            # so neither broker's queue (1000) overflows: it measures sustained throughput.
            while qos and (seq - first - client.pubacks > window or in_transit() > e2e):
                if client.closed or stop.is_set():
                    return
                progress.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(progress.wait(), 1.0)
            client.write(b"".join(packets))
            sent[0] += batch
            await client.drained()
            await asyncio.sleep(0)

    cpu0 = _cpu()
    t0 = time.monotonic()
    tasks = [asyncio.create_task(flood(c, d[0])) for c, d in zip(pubs, publishers, strict=True)]
    warmup = min(1.0, duration / 4)
    await asyncio.sleep(warmup)
    r0 = sum(s.received for s in subs)
    s0 = sent[0]
    w0 = time.monotonic()
    c0 = _cpu()
    await asyncio.sleep(duration - warmup)
    r1 = sum(s.received for s in subs)
    s1 = sent[0]
    w1 = time.monotonic()
    c1 = _cpu()
    stop.set()
    for c in pubs:  # a reset discards what the broker has not read yet: no backlog to wait for
        if c.transport is not None:
            c.transport.abort()
    await asyncio.gather(*tasks, return_exceptions=True)
    for c in subs:
        c.write(DISCONNECT)
        c.close()
    await asyncio.sleep(0.2)
    window_s = w1 - w0
    return {
        "delivered_per_s": round((r1 - r0) / window_s, 1),
        "published_per_s": round((s1 - s0) / window_s, 1),
        "delivered": r1 - r0,
        "seconds": round(window_s, 3),
        "loadgen_cpu_pct": round(100 * (c1 - c0) / window_s, 1),
        "loadgen_cpu_s": round(_cpu() - cpu0, 3),
        "wall_s": round(time.monotonic() - t0, 3),
    }


async def latency(spec: Spec, marks: Marks) -> dict[str, Any]:
    """Devices publish QoS 1 at a fixed total rate; a TCP and a WebSocket subscriber time it."""
    devices: list[list[str]] = spec["devices"][: spec["publishers"]]
    rate: float = spec["rate"]
    duration: float = spec["seconds"]
    boot = f"{random.getrandbits(32):08x}"
    sent_at: dict[int, float] = {}
    results: dict[str, list[float]] = {"tcp": [], "ws": []}

    def hook_for(name: str) -> Any:
        out = results[name]

        def hook(_topic: bytes, payload: bytes, now: float) -> None:
            t = sent_at.get(int(payload.split(b",")[1]))
            if t is not None:
                out.append(now - t)

        return hook

    tcp = await _subscriber(spec, "bench-lat-tcp", [("d/+/t/+", 0)], hook_for("tcp"))
    ws = await _ws_subscriber(spec, "bench-lat-ws", [("d/+/t/+", 0)], hook_for("ws"))
    pubs = await _connect_many(spec, devices, 50)
    await marks("connected")
    topics = [f"d/{d[0]}/t/temp".encode() for d in devices]
    tick = 0.005
    seq = 0
    cpu0 = _cpu()
    t0 = time.monotonic()
    next_tick = t0
    while True:
        now = time.monotonic()
        if now - t0 >= duration:
            break
        due = int((now - t0) * rate) - seq
        for _ in range(due):
            i = seq % len(pubs)
            sent_at[seq] = time.monotonic()
            pubs[i].write(publish_packet(topics[i], _reading(boot, seq), 1, seq % 65535 + 1))
            seq += 1
        next_tick += tick
        await asyncio.sleep(max(0.0, next_tick - time.monotonic()))
    wall = time.monotonic() - t0
    cpu = _cpu() - cpu0
    await asyncio.sleep(1.0)
    for c in [*pubs, tcp]:
        c.write(DISCONNECT)
        c.close()
    await ws.close()
    return {
        "rate": rate,
        "sent": seq,
        "tcp": {"received": len(results["tcp"]), **percentiles(results["tcp"])},
        "ws": {"received": len(results["ws"]), **percentiles(results["ws"])},
        "loadgen_cpu_pct": round(100 * cpu / wall, 1),
    }


async def connections(spec: Spec, marks: Marks) -> dict[str, Any]:
    """Connects idle devices in batches; the orchestrator measures the broker after each."""
    devices: list[list[str]] = spec["devices"]
    batches: list[int] = spec["batches"]
    concurrency: int = spec.get("concurrency", 500)
    clients: list[Client] = []
    out: list[dict[str, Any]] = []
    start = 0
    elapsed = 0.0
    for size in batches:
        cpu0 = _cpu()
        t0 = time.monotonic()
        clients += await _connect_many(spec, devices[start : start + size], concurrency)
        seconds = time.monotonic() - t0
        elapsed += seconds
        start += size
        cpu = _cpu() - cpu0
        out.append(
            {
                "connected": start,
                "seconds": round(elapsed, 3),
                "loadgen_cpu_pct": round(100 * cpu / seconds, 1),
            }
        )
        await asyncio.sleep(0.5)  # let the broker settle before it is measured
        await marks("batch", connected=start)
    for c in clients:
        c.write(DISCONNECT)
        c.close()
    await asyncio.sleep(0.5)
    return {"batches": out}


async def fleet(spec: Spec, marks: Marks) -> dict[str, Any]:
    """Each device subscribes to its command topic and publishes a reading every period."""
    devices: list[list[str]] = spec["devices"]
    period: float = spec["period"]
    duration: float = spec["seconds"]
    boot = f"{random.getrandbits(32):08x}"
    sent_at: dict[int, float] = {}
    lat: list[float] = []

    def hook(_topic: bytes, payload: bytes, now: float) -> None:
        t = sent_at.pop(int(payload.split(b",")[1]), None)
        if t is not None:
            lat.append(now - t)

    browser = await _ws_subscriber(spec, "bench-browser", [("d/+/t/+", 0)], hook)
    t0 = time.monotonic()
    clients = await _connect_many(spec, devices, spec.get("concurrency", 500), keepalive=60)
    connect_s = time.monotonic() - t0

    gate = asyncio.Semaphore(500)

    async def sub(client: Client, device: str) -> None:
        async with gate:
            await subscribe(client, [(f"d/{device}/c", 1)])

    await asyncio.gather(*(sub(c, d[0]) for c, d in zip(clients, devices, strict=True)))
    subscribed_s = time.monotonic() - t0
    await marks("connected", devices=len(clients))
    topics = [f"d/{d[0]}/t/temp".encode() for d in devices]
    phase = [random.random() * period for _ in devices]
    order = sorted(range(len(devices)), key=phase.__getitem__)
    seq = 0
    acks_before = sum(c.pubacks for c in clients)
    cpu0 = _cpu()
    t0 = time.monotonic()
    rounds = 0
    while time.monotonic() - t0 < duration:
        base = t0 + rounds * period
        for i in order:
            delay = base + phase[i] - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            if time.monotonic() - t0 >= duration:
                break
            sent_at[seq] = time.monotonic()
            clients[i].write(publish_packet(topics[i], _reading(boot, seq), 1, seq % 65535 + 1))
            seq += 1
        rounds += 1
    wall = time.monotonic() - t0
    cpu = _cpu() - cpu0
    await asyncio.sleep(1.0)
    acked = sum(c.pubacks for c in clients) - acks_before
    await marks("done", sent=seq)
    for c in clients:
        c.write(DISCONNECT)
        c.close()
    await browser.close()
    await asyncio.sleep(0.5)
    return {
        "devices": len(clients),
        "connect_s": round(connect_s, 3),
        "connect_and_subscribe_s": round(subscribed_s, 3),
        "sent": seq,
        "acked": acked,
        "received": len(lat),
        **percentiles(lat),
        "loadgen_cpu_pct": round(100 * cpu / wall, 1),
    }


SCENARIOS = {
    "throughput": throughput,
    "latency": latency,
    "connections": connections,
    "fleet": fleet,
}


async def _main() -> None:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=2**26)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    spec: Spec = json.loads(await reader.readline())
    result = await SCENARIOS[spec["scenario"]](spec, Marks(reader))
    print(json.dumps({"result": result}), flush=True)


def main() -> None:
    if hasattr(os, "sched_setaffinity") and os.environ.get("BENCH_LOADGEN_CPUS"):
        os.sched_setaffinity(0, {int(c) for c in os.environ["BENCH_LOADGEN_CPUS"].split(",")})
    asyncio.run(_main())


if __name__ == "__main__":
    main()
