"""The firmware in a connection storm, on the unix port: a hub that refuses CONNECTs while it
is overloaded, and one slow to answer them, through a fault proxy (tests/support/faultproxy.py).

A fleet refused together retries spread out (jitter), backing off up to its maximum and never
giving up; a CONNACK that comes late but within the I/O timeout is a slow hub, not a dead one;
one that comes too late is abandoned and retried. Every reading arrives in the end.
"""

from __future__ import annotations

import asyncio
import itertools
from contextlib import AsyncExitStack, ExitStack
from pathlib import Path

from tests.support.devices import Device, running_device
from tests.support.faultproxy import FaultProxy
from tests.support.firmware import (
    FAST,
    Subscriber,
    assert_backoff,
    assert_complete,
    retry_delays,
)
from tests.support.hubproc import HubProcess, scaled

BACKOFF_MIN_S = FAST["backoff_min_ms"] / 1000  # 0.2 s
BACKOFF_MAX_S = FAST["backoff_max_ms"] / 1000  # 2 s
IO_TIMEOUT_S = FAST["io_timeout_s"]


def assert_alive(device: Device) -> None:
    """The firmware is still running: no exit, no exception escaped its loop."""
    assert device.poll() is None and device.exits == [], device.log()[-2000:]
    assert "Traceback" not in device.log(), device.log()[-2000:]


def test_a_fleet_refused_in_a_storm_spreads_its_retries_and_never_gives_up(
    hub: HubProcess, tmp_path: Path
) -> None:
    """Six devices lose their hub at the same instant and are then refused with CONNACK 3 (an
    overloaded hub): each retries first within the spread window (0 to 2 x the minimum step),
    then waits half to all of a step that starts at the minimum, doubles up to the maximum and
    stays there; their attempts drift apart instead of arriving together, and once the hub
    admits them all are online again with every reading."""
    count = 6
    attempts = 7  # after the drop: 0 to 0.4 s (lost), then steps 0.2, 0.4, 0.8, 1.6, 2, 2 s
    steps_ms = [200, 400, 800, 1600, 2000, 2000]

    async def scenario() -> None:
        async with AsyncExitStack() as stack:
            upstream = (hub.host, hub.mqtt_port)
            proxies = [await stack.enter_async_context(FaultProxy(upstream)) for _ in range(count)]
            subs = [await Subscriber.start(hub, f"refused-{i}") for i in range(count)]
            with ExitStack() as devices_stack:
                devices = [
                    devices_stack.enter_context(
                        running_device(tmp_path, hub, f"refused-{i}", port=p.port, **FAST)
                    )
                    for i, p in enumerate(proxies)
                ]
                for sub in subs:
                    await sub.wait_until(sub.online, 20, "the fleet online")
                first = [len(p.accepted_at) for p in proxies]
                logged = [len(d.log()) for d in devices]
                for proxy in proxies:
                    proxy.connack = 3  # overloaded from now on
                for proxy in proxies:
                    proxy.drop()  # and the fleet loses it at once
                await subs[0].wait_until(
                    lambda: all(p.refused >= attempts for p in proxies),
                    IO_TIMEOUT_S + attempts * (BACKOFF_MAX_S + 1),
                    f"{attempts} refused attempts per device",
                )
                for proxy, device, k, n in zip(proxies, devices, first, logged, strict=True):
                    at = proxy.accepted_at[k : k + attempts]
                    gaps = [b - a for a, b in itertools.pairwise(at)]
                    # Half to all of each step (plus the attempt itself on a busy machine):
                    # the step starts at the minimum after the lost session's quick retry.
                    for gap, step in zip(gaps, steps_ms, strict=True):
                        assert gap >= step / 2000 - 0.02, (gaps, steps_ms)
                    assert max(gaps) <= scaled(BACKOFF_MAX_S + 0.5), gaps  # capped, no hang
                    # The delays the firmware chose, exactly: the lost link's within the spread
                    # window, then each refusal's half to all of its step.
                    delays = [ms for _, ms in retry_delays(device.log()[n:])]
                    assert_backoff(delays, 2 * FAST["backoff_min_ms"], steps_ms)
                    assert "link: refused 3" in device.log()
                    assert_alive(device)
                # Jitter: lock-step devices would make their 7th attempt within one 50 ms pass
                # of their loops; with jitter, six of them fall within 0.1 s of each other
                # about once in 50,000 runs.
                last = [
                    p.accepted_at[k + attempts - 1] for p, k in zip(proxies, first, strict=True)
                ]
                assert max(last) - min(last) > 0.1, last
                for proxy in proxies:
                    proxy.connack = None  # the hub admits them again
                for sub in subs:
                    await sub.wait_until(
                        lambda sub=sub: len(sub.online()) >= 2, scaled(BACKOFF_MAX_S + 3),
                        "online again",
                    )
                for sub in subs:
                    # The readings of the refused time waited in flash: all arrive.
                    await sub.wait_readings(attempts + 3, 15)
                    assert_complete(sub.readings())
                for device in devices:
                    assert_alive(device)
            for sub in subs:
                await sub.stop()

    asyncio.run(scenario())


def test_a_slow_connack_is_waited_for_and_a_too_slow_one_retried(
    hub: HubProcess, tmp_path: Path
) -> None:
    """A hub that answers CONNECT after 1 s (within the 2 s I/O timeout) is a slow hub, not a
    dead one: the device waits and connects on that attempt. One that answers after 3 s is
    given up on at the timeout and retried with backoff, and once the hub is quick again the
    device is online with every reading."""

    async def scenario() -> None:
        async with FaultProxy((hub.host, hub.mqtt_port)) as proxy:
            proxy.connack_delay = 1.0
            sub = await Subscriber.start(hub, "slow-1")
            with running_device(tmp_path, hub, "slow-1", port=proxy.port, **FAST) as device:
                await sub.wait_until(sub.online, scaled(5), "online through a slow CONNACK")
                assert len(proxy.accepted_at) == 1  # the first attempt, waited out
                await sub.wait_readings(2, 10)
                proxy.connack_delay = IO_TIMEOUT_S + 1.0
                seen = len(proxy.accepted_at)
                proxy.drop()
                await sub.wait_until(
                    lambda: len(proxy.accepted_at) >= seen + 3,
                    3 * (IO_TIMEOUT_S + BACKOFF_MAX_S + 1),
                    "three attempts against a CONNACK that comes too late",
                )
                at = proxy.accepted_at[seen:]
                gaps = [b - a for a, b in itertools.pairwise(at)]
                assert min(gaps) >= IO_TIMEOUT_S - 0.1, gaps  # each waited out its timeout
                assert "link down (OSError(110,))" in device.log()
                assert_alive(device)
                onlines = len(sub.online())
                proxy.connack_delay = 0.0
                await sub.wait_until(
                    lambda: len(sub.online()) > onlines,
                    scaled(IO_TIMEOUT_S + BACKOFF_MAX_S + 2),
                    "online once the hub is quick again",
                )
                before = max(r.seq for r in sub.readings())
                await sub.wait_until(
                    lambda: max(r.seq for r in sub.readings()) >= before + 2, 10, "new readings"
                )
                assert_complete(sub.readings())
                assert_alive(device)
            await sub.stop()

    asyncio.run(scenario())
