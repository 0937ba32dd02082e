"""`python -m tools.bench.acl`: what the per-publish topic check costs, two ways.

1. The hub's rule (``Identity.may_publish``) called directly, as the broker does for devices
   and tokens on a cache miss (hits cost one dictionary look-up).
2. The same rule awaited in a task per call, as amqtt's plugin manager (``map_plugin_topic``)
   runs every topic plugin: the cost the hub avoids by keeping its own rules out of amqtt's
   plugin path (only clients the users' amqtt plugins admitted pay it).
"""

from __future__ import annotations

import asyncio
import time

from hub.security import Identity


async def measure(calls: int = 20_000) -> dict[str, float]:
    identity = Identity("device", "dev-1", ("d/dev-1/t/+", "d/dev-1/s", "d/dev-1/m"))
    topic = "d/dev-1/t/temp"
    out: dict[str, float] = {}
    t0 = time.perf_counter()
    for _ in range(calls):
        assert identity.may_publish(topic)
    out["rule_direct_us"] = (time.perf_counter() - t0) / calls * 1e6

    async def plugin() -> bool:
        return identity.may_publish(topic)

    t0 = time.perf_counter()
    for _ in range(calls):
        assert all(await asyncio.gather(asyncio.ensure_future(plugin())))
    out["rule_in_a_task_us"] = (time.perf_counter() - t0) / calls * 1e6
    return {k: round(v, 3) for k, v in out.items()}


def main() -> None:
    for name, us in asyncio.run(measure()).items():
        print(f"{name:28s} {us:8.3f} us/call")


if __name__ == "__main__":
    main()
