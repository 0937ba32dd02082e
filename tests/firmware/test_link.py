"""node.link.Link under MicroPython, driven directly against the real hub."""

import asyncio
from pathlib import Path

from tests.support.hubproc import HubProcess, scaled
from tests.support.micropython import run_mp
from tests.support.mqtt import RawClient

TOTAL = 65_600


def test_packet_ids_wrap_to_one_and_the_65536th_publish_arrives(
    hub: HubProcess, tmp_path: Path
) -> None:
    """65,600 QoS 1 publishes: ids go 65535 -> 1 (never 0), every one is acknowledged, and a
    subscriber receives all of them, the 65,536th included."""

    async def scenario() -> tuple[str, list[int]]:
        sub = await RawClient.tcp(hub.host, hub.mqtt_port)
        await sub.connect("wrap-watcher")
        assert await sub.subscribe([("d/wrap-1/t/n", 0)]) == [0]
        args = ("link_wrap.py", tmp_path, hub.host, str(hub.mqtt_port), str(TOTAL))
        device = asyncio.create_task(asyncio.to_thread(run_mp, *args))
        received: list[int] = []
        while not received or received[-1] != TOTAL:
            received.append(int((await sub.next_message(scaled(20))).payload))
        output = await device
        await sub.close()
        return output, received

    output, received = asyncio.run(scenario())
    assert f"sent {TOTAL} unacked 0" in output
    assert "pid 65535 65535" in output
    assert "pid 65536 1" in output and "pid 65537 2" in output
    assert received == list(range(1, TOTAL + 1))
