"""Failover between hub addresses and the firmware under a connection storm, on the unix port.

Real firmware processes against real sockets: a fault proxy (tests/support/faultproxy.py) plays
a hub that never answers CONNECT, one that refuses it with CONNACK 3, one that closes right after
accepting, and a dead address is a closed port. Through every fault the device keeps retrying
(it never exits) and its readings wait in its flash ring, then all arrive.
"""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import Iterator
from contextlib import AsyncExitStack, ExitStack, contextmanager
from pathlib import Path
from typing import Any

import pytest

from hub import topics
from tests.support.firmware import FAST, Subscriber, assert_complete, retry_delays, unique
from tests.support.devices import Device, running_device, write_board
from tests.support.faultproxy import FaultProxy
from tests.support.hubproc import HubProcess, scaled
from tests.support.waits import eventually_async
from tools import mpunix

BACKOFF_MIN_S = FAST["backoff_min_ms"] / 1000
BACKOFF_MAX_S = FAST["backoff_max_ms"] / 1000
IO_TIMEOUT_S = FAST["io_timeout_s"]


def dead_port() -> int:
    """A port nothing listens on (bound, then closed): connecting to it is refused."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def device_with_hubs(
    folder: Path,
    device_id: str,
    hubs: list[str],
    board: dict[str, Any] | None = None,
    **settings: Any,
) -> Iterator[Device]:
    """A device whose settings.json lists several hub addresses (`hubs`), started and stopped
    like tests/support/devices.running_device."""
    config = mpunix.DeviceSettings(device_id, "unused", 1, period_s=1, **settings)
    root = mpunix.prepare_device_dir(folder / device_id, config)
    if board is not None:
        write_board(root, board)
    data = {k: v for k, v in config.to_json().items() if k not in ("hub_host", "hub_port")}
    (root / "settings.json").write_text(json.dumps({**data, "hubs": hubs}))
    device = Device(root, folder / f"{device_id}.log")
    device.start()
    try:
        yield device
    finally:
        device.kill()


def assert_alive(device: Device) -> None:
    """The firmware is still running: no exit, no exception escaped its loop."""
    assert device.poll() is None and device.exits == [], device.log()[-2000:]
    assert "Traceback" not in device.log(), device.log()[-2000:]


def meta_hub(sub: Subscriber) -> str:
    """The hub the device's latest health message says it is on."""
    return str(topics.parse_meta(sub.on(topics.meta_topic(sub.device))[-1].payload)["hub"])


FAULTS = {
    "silent": "accepts TCP and never answers CONNECT",
    "connack3": "refuses every CONNECT with CONNACK 3 (server unavailable)",
    "close": "closes every connection right after accepting it",
}


def _set_fault(proxy: FaultProxy, fault: str, on: bool, hub: HubProcess) -> None:
    if fault == "silent":
        proxy.blackhole = on
    elif fault == "connack3":
        proxy.connack = 3 if on else None
    else:
        proxy.upstream = None if on else (hub.host, hub.mqtt_port)


@pytest.mark.parametrize("fault", sorted(FAULTS))
def test_storm_fault_is_retried_and_every_reading_arrives(
    fault: str, hub: HubProcess, tmp_path: Path
) -> None:
    """Against a hub that never answers CONNECT, refuses it with CONNACK 3 or closes at once,
    the device keeps retrying within its bounds (never hangs, never exits) with backoff, keeps
    its readings in flash, and once the hub serves again they all arrive, none missing."""

    async def scenario() -> None:
        device_id = f"storm-{fault}"
        async with FaultProxy((hub.host, hub.mqtt_port)) as proxy:
            _set_fault(proxy, fault, True, hub)
            sub = await Subscriber.start(hub, device_id)
            hubs = [f"127.0.0.1:{proxy.port}"]
            with device_with_hubs(tmp_path, device_id, hubs, **FAST) as device:
                started = time.monotonic()
                # Each attempt ends within io_timeout (a CONNACK that never comes) and the
                # next starts within the largest backoff step.
                per_attempt = IO_TIMEOUT_S + BACKOFF_MAX_S + 1
                await sub.wait_until(
                    lambda: len(proxy.accepted_at) >= 6, 6 * per_attempt, "six attempts"
                )
                gaps = [
                    b - a for a, b in zip(proxy.accepted_at, proxy.accepted_at[1:], strict=False)
                ]
                assert max(gaps) <= scaled(per_attempt), gaps  # it never hung
                if fault == "connack3":
                    assert proxy.refused >= 6
                    assert "link: refused 3" in device.log()
                    # Backoff: the 4th wait is at least 4 x the minimum step (200 ms -> 800).
                    assert gaps[3] >= 4 * BACKOFF_MIN_S > gaps[0], gaps
                elif fault == "silent":
                    assert min(gaps) >= IO_TIMEOUT_S - 0.1, gaps  # each waited out its CONNACK
                    assert "link down (OSError(110,))" in device.log()  # ETIMEDOUT
                assert proxy.connections == 0 and sub.readings() == []  # nothing got through
                assert_alive(device)
                fault_s = time.monotonic() - started
                _set_fault(proxy, fault, False, hub)
                proxy.drop()  # a connection stuck in the silent hub goes with it
                await sub.wait_until(sub.online, IO_TIMEOUT_S + BACKOFF_MAX_S + 2, "online")
                # One reading a second went to the flash ring during the fault: all arrive.
                await sub.wait_readings(int(fault_s) + 1, 10)
                by_boot = assert_complete(sub.readings())  # seq 0, 1, 2, ...: none missing
                assert len(by_boot) == 1
                assert_alive(device)
            await sub.stop()

    asyncio.run(scenario())


def test_first_address_dead_second_serves_and_no_flapping(hub: HubProcess, tmp_path: Path) -> None:
    """With the first address a closed port, the device comes online on the second and stores
    readings there; when the first comes back the device stays on the second until it loses
    that link, then moves to the first; every reading arrives."""

    async def scenario() -> None:
        first = dead_port()
        upstream = (hub.host, hub.mqtt_port)
        async with FaultProxy(upstream) as second:
            sub = await Subscriber.start(hub, "fail-1")
            hubs = [f"127.0.0.1:{first}", f"127.0.0.1:{second.port}"]
            with device_with_hubs(tmp_path, "fail-1", hubs, **FAST) as device:
                await sub.wait_until(sub.online, 10, "online on the second address")
                await sub.wait_readings(3, 10)
                assert "link down (OSError(111,))" in device.log()  # refused by the first
                assert f"connected to 127.0.0.1:{second.port} as fail-1" in device.log()
                assert meta_hub(sub) == f"127.0.0.1:{second.port}"
                async with FaultProxy(upstream, port=first) as back:
                    # The first address serves again: the device stays where it is while
                    # readings keep coming through the second (and keepalive pings pass).
                    count = len(unique(sub.readings()))
                    await sub.wait_readings(count + 4, 10)
                    assert back.accepted_at == [] and second.connections == 1
                    onlines = len(sub.online())
                    second.upstream = None  # the second hub goes away
                    second.drop()
                    await sub.wait_until(
                        lambda: back.connections == 1, BACKOFF_MIN_S + 3, "a move to the first"
                    )
                    await sub.wait_until(lambda: len(sub.online()) > onlines, 5, "online again")
                    assert len(second.accepted_at) == 1  # it went to the next, not back
                    assert f"connected to 127.0.0.1:{first} as fail-1" in device.log()
                    await sub.wait_until(
                        lambda: meta_hub(sub) == f"127.0.0.1:{first}", 5, "health naming it"
                    )
                    count = len(unique(sub.readings()))
                    await sub.wait_readings(count + 2, 10)
                    assert_complete(sub.readings())
                    assert_alive(device)
            await sub.stop()

    asyncio.run(scenario())


def test_a_sleeping_device_tries_each_address_on_every_wake(
    hub: HubProcess, tmp_path: Path
) -> None:
    """A deep-sleep device whose first address is dead sends each wake's readings through the
    second, then sleeps: one try per address per wake, no backoff wait."""
    board = json.loads((mpunix.BOARDS_DIR / "unix-sim.json").read_text())
    board["deep_sleep_s"] = 60

    async def scenario() -> None:
        sub = await Subscriber.start(hub, "nap-2")
        hubs = [f"127.0.0.1:{dead_port()}", f"{hub.host}:{hub.mqtt_port}"]
        with device_with_hubs(tmp_path, "nap-2", hubs, board, **FAST) as device:
            await sub.wait_until(
                lambda: len({r.boot for r in sub.readings()}) >= 2, 15, "two wakes"
            )
            assert set(device.exits) == {mpunix.EXIT_DEEPSLEEP}
            log = device.log()
            assert log.count("link down (OSError(111,))") >= 2  # the dead one, every wake
            assert f"connected to {hub.host}:{hub.mqtt_port} as nap-2" in log
        assert topics.STATUS_ASLEEP in [m.payload for m in sub.on(topics.status_topic("nap-2"))]
        assert_complete(sub.readings())
        await sub.stop()

    asyncio.run(scenario())


def test_a_fleet_whose_hub_vanishes_does_not_reconnect_in_lock_step(
    hub: HubProcess, tmp_path: Path
) -> None:
    """Devices that lose their hub at the same instant make their first reconnect attempts
    spread over the spread window (0 to 2 x the minimum step, 2 s here), not all together, and
    each device chose a delay within that window."""
    count = 6
    settings = {**FAST, "backoff_min_ms": 1000, "keepalive_s": 30}

    async def scenario() -> list[float]:
        async with AsyncExitStack() as proxies_stack:
            upstream = (hub.host, hub.mqtt_port)
            proxies = [
                await proxies_stack.enter_async_context(FaultProxy(upstream)) for _ in range(count)
            ]
            with ExitStack() as stack:
                devices = [
                    stack.enter_context(
                        running_device(
                            tmp_path, hub, f"herd-{i}", port=p.port, period_s=5, **settings
                        )
                    )
                    for i, p in enumerate(proxies)
                ]
                await eventually_async(
                    lambda: all("connected to" in d.log() for d in devices), 20, "the fleet online"
                )
                logged = [len(d.log()) for d in devices]
                dropped = time.monotonic()
                for proxy in proxies:
                    proxy.drop()  # the hub vanishes for all of them at once
                await eventually_async(
                    lambda: all(len(p.accepted_at) >= 2 for p in proxies),
                    10,
                    "the fleet back",
                    poll=0.01,
                )
                for device, n in zip(devices, logged, strict=True):
                    assert_alive(device)
                    (_, delay), *_ = retry_delays(device.log()[n:])  # the link lost
                    assert 0 <= delay <= 2 * settings["backoff_min_ms"], delay
                return [p.accepted_at[1] - dropped for p in proxies]
        raise AssertionError("unreachable")

    delays = asyncio.run(scenario())
    spread = max(delays) - min(delays)
    # Lock-step would put them all within one 50 ms loop pass of each other; spread uniformly
    # over 2 s, six devices fall within 100 ms of each other about once in 500,000 runs.
    assert spread > 0.1, delays
    assert max(delays) <= scaled(2.0 + 1.0), delays  # the window, and slack for a busy CPU


def test_settings_update_of_the_hubs_goes_through_the_trial(
    hub: HubProcess, tmp_path: Path
) -> None:
    """A device deployed with hub_host/hub_port takes a `hubs` list over the air (bad lists are
    refused and change nothing), connects through it, a list with no reachable hub is rolled
    back to the one that worked, and hub_host/hub_port replace the list again."""

    async def scenario() -> None:
        sub = await Subscriber.start(hub, "trial-1")
        with running_device(tmp_path, hub, "trial-1", period_s=30, **FAST) as device:
            stored = device.folder / "settings.json"
            original = json.loads(stored.read_text())
            await sub.wait_until(sub.online, 10, "online")
            bad = await sub.command({"id": 1, "op": "settings", "set": {"hubs": ["nope"]}})
            assert not bad["ok"] and "setting 'hubs' must be a list" in bad["error"]
            both = {"hubs": ["127.0.0.1:1883"], "hub_port": 1883}
            bad = await sub.command({"id": 2, "op": "settings", "set": both})
            assert not bad["ok"] and "'hubs' or 'hub_host'/'hub_port', not both" in bad["error"]
            assert json.loads(stored.read_text()) == original  # nothing written
            dead = dead_port()
            hubs = [f"127.0.0.1:{dead}", f"{hub.host}:{hub.mqtt_port}"]
            good = await sub.command({"id": 3, "op": "settings", "set": {"hubs": hubs}}, 20)
            assert good == {"id": 3, "ok": True, "applied": True}
            now = json.loads(stored.read_text())
            assert now["hubs"] == hubs and "hub_host" not in now and "hub_port" not in now
            assert f"connected to {hub.host}:{hub.mqtt_port} as trial-1" in device.log()
            nowhere = [f"127.0.0.1:{dead}", f"127.0.0.1:{dead_port()}"]
            lost = await sub.command({"id": 4, "op": "settings", "set": {"hubs": nowhere}}, 30)
            assert not lost["ok"] and lost["error"].startswith("rolled back: no connection")
            assert json.loads(stored.read_text())["hubs"] == hubs
            assert device.exits == [75, 75, 75]  # applied, tried, rolled back
            assert (await sub.command({"id": 5, "op": "ping"}))["ok"] is True
            one = {"hub_host": hub.host, "hub_port": hub.mqtt_port}  # back to the single form
            back = await sub.command({"id": 6, "op": "settings", "set": one}, 20)
            assert back == {"id": 6, "ok": True, "applied": True}
            assert json.loads(stored.read_text()) == original  # `hubs` went with it
        await sub.stop()

    asyncio.run(scenario())
