"""Fault injection between the real firmware and the real hub, through a TCP fault proxy.

After each fault the device is back within its backoff bound, resubscribed (it answers a
command) and every reading has arrived: deduplicated by (boot, seq), none missing, in order.
"""

import asyncio
import time
from pathlib import Path

from tests.support.firmware import FAST, Subscriber, assert_complete, unique
from tests.support.devices import running_device
from tests.support.faultproxy import FaultProxy
from tests.support.hubproc import HubProcess, scaled, start_hub

BACKOFF_MAX_S = FAST["backoff_max_ms"] / 1000
SILENCE_S = FAST["keepalive_s"] * 1.5  # the link declares the hub dead after this


async def _healed(sub: Subscriber, proxy: FaultProxy, connections: int, bound: float) -> float:
    """Waits for the device's next connection and its `online` (sent after it has subscribed
    again); returns how long the connection took to come."""
    start = time.monotonic()
    onlines = len(sub.online())
    await sub.wait_until(lambda: proxy.connections > connections, bound, "a reconnect")
    await sub.wait_until(lambda: len(sub.online()) > onlines, 5, "online after the reconnect")
    return proxy.connected_at[connections] - start


async def _resubscribed_and_complete(sub: Subscriber, command_id: int) -> None:
    reply = await sub.command({"id": command_id, "op": "ping"})
    assert reply["ok"] is True
    before = max(r.seq for r in unique(sub.readings()))
    await sub.wait_until(
        lambda: max(r.seq for r in sub.readings()) >= before + 3, 10, "readings after the fault"
    )
    assert_complete(sub.readings())


def test_dropped_connection(hub: HubProcess, tmp_path: Path) -> None:
    """A reset connection is replaced within the backoff bound and no reading is lost."""

    async def scenario() -> None:
        async with FaultProxy((hub.host, hub.mqtt_port)) as proxy:
            sub = await Subscriber.start(hub, "drop-1")
            with running_device(tmp_path, hub, "drop-1", port=proxy.port, **FAST):
                await sub.wait_readings(3, 10)
                for round_ in range(2):
                    seen = proxy.connections
                    proxy.drop()
                    took = await _healed(sub, proxy, seen, scaled(BACKOFF_MAX_S + 2))
                    assert took <= scaled(BACKOFF_MAX_S + 1)
                    await _resubscribed_and_complete(sub, 100 + round_)
            await sub.stop()

    asyncio.run(scenario())


def test_black_holed_connection(hub: HubProcess, tmp_path: Path) -> None:
    """A half-open link is noticed by keepalive, and the device is back once the hole closes."""

    async def scenario() -> None:
        async with FaultProxy((hub.host, hub.mqtt_port)) as proxy:
            sub = await Subscriber.start(hub, "hole-1")
            with running_device(tmp_path, hub, "hole-1", port=proxy.port, **FAST) as device:
                await sub.wait_readings(3, 10)
                seen = proxy.connections
                proxy.blackhole = True
                await sub.wait_until(  # readings pile up in the ring meanwhile
                    lambda: "link down (OSError(110,))" in device.log(),
                    SILENCE_S + 2,
                    "keepalive to notice the black hole",
                )
                proxy.blackhole = False
                proxy.drop()  # the hole's swallowed connections go away with it
                # An attempt may be stuck in the hole: its CONNACK wait ends after io_timeout.
                bound = BACKOFF_MAX_S + FAST["io_timeout_s"] + 1
                took = await _healed(sub, proxy, seen, scaled(bound + 1))
                assert took <= scaled(bound)
                await _resubscribed_and_complete(sub, 200)
            await sub.stop()

    asyncio.run(scenario())


def test_delayed_pubacks(hub: HubProcess, tmp_path: Path) -> None:
    """Late PUBACKs make the device resend with DUP on the same id; nothing lost, no hang."""

    async def scenario() -> None:
        async with FaultProxy((hub.host, hub.mqtt_port)) as proxy:
            sub = await Subscriber.start(hub, "late-1")
            with running_device(tmp_path, hub, "late-1", port=proxy.port, **FAST):
                await sub.wait_readings(2, 10)
                proxy.puback_delay = FAST["ack_timeout_s"] + 1.5
                count = len(unique(sub.readings()))
                await sub.wait_readings(count + 4, 10)
                proxy.puback_delay = 0
                await _resubscribed_and_complete(sub, 300)
                readings = sub.readings()
                assert len(readings) > len(unique(readings))  # the resends did arrive
                assert proxy.connections == 1  # a slow hub is not a dead one
            await sub.stop()

    asyncio.run(scenario())


def test_hub_restart(tmp_path: Path) -> None:
    """Readings taken while the hub is down are delivered, oldest first, by the next hub."""

    async def scenario() -> None:
        first = start_hub(tmp_path / "hub-a")
        try:
            async with FaultProxy((first.host, first.mqtt_port)) as proxy:
                sub = await Subscriber.start(first, "boot-1")
                with running_device(tmp_path, first, "boot-1", port=proxy.port, **FAST):
                    await sub.wait_readings(3, 10)
                    proxy.upstream = None  # the device finds nobody home
                    await sub.stop()
                    first.stop()
                    proxy.drop()
                    # On purpose: nobody home for a while, about three readings go to the ring.
                    await asyncio.sleep(scaled(3))
                    second = start_hub(tmp_path / "hub-b")
                    try:
                        sub2 = await Subscriber.start(second, "boot-1")
                        seen = proxy.connections
                        proxy.upstream = (second.host, second.mqtt_port)
                        await _healed(sub2, proxy, seen, scaled(BACKOFF_MAX_S + 2))
                        assert (await sub2.command({"id": 400, "op": "ping"}))["ok"] is True
                        before = {r.seq for r in unique(sub.readings())}
                        last = max(before)
                        await sub2.wait_until(
                            lambda: any(r.seq >= last + 3 + 3 for r in sub2.readings()),
                            10,
                            "the outage's readings and later ones",
                        )
                        # Both hubs together saw every reading of the boot, in order.
                        assert_complete(sub.readings() + sub2.readings())
                        after = {r.seq for r in unique(sub2.readings())}
                        assert min(after) <= last + 1  # the ring went on where hub a stopped
                        await sub2.stop()
                    finally:
                        second.stop()
        finally:
            first.stop()

    asyncio.run(scenario())


def test_reboot_with_readings_queued(hub: HubProcess, tmp_path: Path) -> None:
    """Readings queued in flash when the power goes arrive after the device boots again."""

    async def scenario() -> None:
        async with FaultProxy((hub.host, hub.mqtt_port)) as proxy:
            sub = await Subscriber.start(hub, "queue-1")
            with running_device(tmp_path, hub, "queue-1", port=proxy.port, **FAST) as device:
                await sub.wait_readings(2, 10)
                proxy.upstream = None
                proxy.drop()
                await asyncio.sleep(scaled(3.5))  # on purpose: readings go to the ring
                device.kill()  # the plug is pulled with readings in the ring
                (first_boot,) = {r.boot for r in sub.readings()}
                delivered = len(unique(sub.readings()))
                proxy.upstream = (hub.host, hub.mqtt_port)
                device.start()
                await sub.wait_until(
                    lambda: len({r.boot for r in sub.readings()}) == 2, 10, "the second boot"
                )
                await _resubscribed_and_complete(sub, 500)
            by_boot = assert_complete(sub.readings())
            assert len(by_boot[first_boot]) >= delivered + 3  # the queued ones came through
            order = [r.boot for r in unique(sub.readings())]
            assert order == sorted(order, key=lambda b: b != first_boot)  # old boot's first
            await sub.stop()

    asyncio.run(scenario())
