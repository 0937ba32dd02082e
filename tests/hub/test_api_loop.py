"""The HTTP API never runs a query on the event loop: a history query held up in the store does
not delay what the broker owes its devices."""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psycopg

from tests.hub.test_api import call, token
from tests.support.hubproc import provision, scaled, start_hub
from tests.support.mqtt import RawClient


def test_a_slow_history_query_does_not_delay_a_pingresp(postgres_url: str, tmp_path: Path) -> None:
    """While another session holds PostgreSQL's readings table locked, a history request waits
    (then gets 503 JSON) and a device's PINGREQs are still answered at once."""
    hub = start_hub(tmp_path / "hub-data", "--store", postgres_url)
    try:
        provision(hub, "slow-1")
        admin = token(hub, "--admin")
        with psycopg.connect(postgres_url) as locker, ThreadPoolExecutor(1) as pool:
            locker.execute("LOCK TABLE readings IN ACCESS EXCLUSIVE MODE")  # until rollback
            started = time.monotonic()
            pending = pool.submit(call, hub, "/api/devices/slow-1/telemetry", admin)
            latencies = asyncio.run(_ping_latencies(hub.host, hub.mqtt_port, count=8))
            held = time.monotonic() - started
            still_waiting = not pending.done()
            locker.rollback()
            status, kind, body = pending.result(timeout=scaled(30))
        assert status in (200, 503), body
        if status == 503:
            assert kind.startswith("application/json") and b"telemetry store" in body
        assert max(latencies) < scaled(0.25), latencies
        assert still_waiting and held > 0.8  # the pings ran while the query was held up
    finally:
        hub.stop()


async def _ping_latencies(host: str, port: int, count: int) -> list[float]:
    client = await RawClient.tcp(host, port)
    try:
        await client.connect("pinger", keepalive=30)
        latencies = []
        for _ in range(count):
            start = time.monotonic()
            await client.ping()
            latencies.append(time.monotonic() - start)
            await asyncio.sleep(0.1)
        return latencies
    finally:
        await client.close()
