"""`python -m tools.bench.acl`: what the per-publish topic check costs, three ways.

1. Through amqtt's plugin manager (``Broker._topic_filtering``): a task per plugin per call.
2. The plugin's synchronous ``allows``, called directly by the core.
3. The core's per-connection verdict cache (``BrokerCore.may_publish_now``), the hot path.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from pathlib import Path

from amqtt.contexts import Action

from hub.broker import BrokerSettings, EmbeddedBroker
from hub.broker.core import PluginView
from hub.security import Identity


class _Conn:
    """The two fields may_publish_now reads from a connection."""

    def __init__(self, view: object) -> None:
        self.plugin_session = view
        self.acl: dict[str, bool] = {}


async def measure(calls: int = 20_000) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        broker = EmbeddedBroker(BrokerSettings(), data_dir=Path(tmp))
        await broker.start()
        try:
            core, amqtt = broker.core, broker._amqtt
            assert core is not None and amqtt is not None
            identity = Identity("device", "dev-1", ("d/dev-1/t/+", "d/dev-1/s", "d/dev-1/m"))
            view = PluginView.__new__(PluginView)
            view.identity, view.client_id, view.username = identity, "dev-1", "dev-1"
            topic = "d/dev-1/t/temp"
            out: dict[str, float] = {}
            t0 = time.perf_counter()
            for _ in range(calls):
                assert await amqtt._topic_filtering(view, topic, Action.PUBLISH)  # type: ignore[arg-type]
            out["amqtt_plugin_manager_us"] = (time.perf_counter() - t0) / calls * 1e6
            allows = core._sync_acl
            assert allows is not None
            t0 = time.perf_counter()
            for _ in range(calls):
                assert all(check(view, topic, Action.PUBLISH) for check in allows)
            out["plugin_allows_direct_us"] = (time.perf_counter() - t0) / calls * 1e6
            conn = _Conn(view)
            t0 = time.perf_counter()
            for _ in range(calls):
                assert core.may_publish_now(conn, topic)  # type: ignore[arg-type]
            out["core_cached_us"] = (time.perf_counter() - t0) / calls * 1e6
            return {k: round(v, 3) for k, v in out.items()}
        finally:
            await broker.stop()


def main() -> None:
    for name, us in asyncio.run(measure()).items():
        print(f"{name:28s} {us:8.3f} us/call")


if __name__ == "__main__":
    main()
