"""Deep-sleep mode (board setting deep_sleep_s): wake, read, publish or queue, sleep."""

import asyncio
import json
from pathlib import Path

from hub import topics
from tests.support.firmware import FAST, Subscriber, assert_complete
from tests.support.devices import running_device
from tests.support.hubproc import HubProcess
from tools import mpunix


def test_deep_sleep_cycles_publish_and_sleep(hub: HubProcess, tmp_path: Path) -> None:
    """Each wake (a reset, cause deep-sleep) sends its readings, says `asleep` and sleeps for
    the board's period less the time awake; the fake machine.deepsleep records it."""
    board = json.loads((mpunix.BOARDS_DIR / "unix-sim.json").read_text())
    board["deep_sleep_s"] = 60

    async def scenario() -> None:
        sub = await Subscriber.start(hub, "nap-1")
        with running_device(tmp_path, hub, "nap-1", board_json=board, **FAST) as device:
            await sub.wait_until(
                lambda: len({r.boot for r in sub.readings()}) >= 3, 15, "three wakes"
            )
            assert set(device.exits) == {mpunix.EXIT_DEEPSLEEP}
            slept = int((device.folder / "deepsleep.ms").read_text())
            assert 55_000 <= slept <= 60_000
        status = [m.payload for m in sub.on(topics.status_topic("nap-1"))]
        assert topics.STATUS_ASLEEP in status and topics.STATUS_OFFLINE not in status
        meta = topics.parse_meta(sub.on(topics.meta_topic("nap-1"))[-1].payload)
        assert meta["reset"] == "deep-sleep"
        assert_complete(sub.readings())
        await sub.stop()

    asyncio.run(scenario())
