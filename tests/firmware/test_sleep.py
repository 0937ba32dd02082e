"""Deep-sleep mode (board setting deep_sleep_s): wake, read, publish or queue, sleep."""

import asyncio
import json
from pathlib import Path

from hub import topics
from tests.ota.conftest import assign, build, firmware_version, ota_reports
from tests.support.devices import running_device
from tests.support.firmware import FAST, Subscriber, assert_complete
from tests.support.hubproc import HubProcess, hub_cli, scaled
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


def test_sleeping_device_takes_an_update_across_wakes_and_sleeps_after_its_trial(
    hub: HubProcess, tmp_path: Path
) -> None:
    """An update assigned to a deep-sleep device is offered when it wakes; each wake downloads
    for at most update_awake_s, then sleeps, and the next resumes at the chunk it had reached;
    the new app's trial settles (updated) in its wake, and the device sleeps on with fw 1.2.0."""
    bundle = build(tmp_path / "app.tar", "1.2.0")
    assert hub_cli(hub.data_dir, "app", "add", str(bundle)).returncode == 0
    board = json.loads((mpunix.BOARDS_DIR / "unix-sim.json").read_text())
    board.update(deep_sleep_s=60, update_awake_s=1)

    async def scenario() -> None:
        sub = await Subscriber.start(hub, "nap-2")
        with running_device(tmp_path, hub, "nap-2", board_json=board, ota_trial_s=20) as device:
            await sub.wait_until(lambda: firmware_version(sub) == "0.1.0", scaled(20), "a wake")
            assign(hub, "nap-2", "1.2.0")

            def updated() -> bool:
                return any(r["ota"] == "updated" for r in ota_reports(sub))

            await sub.wait_until(updated, scaled(120), "the update to end")
            slept = len(device.exits)
            await sub.wait_until(
                lambda: firmware_version(sub) == "1.2.0" and len(device.exits) > slept + 1,
                scaled(30),
                "wakes of the new app",
            )
            assert device.poll() is None, device.log()
            exits = list(device.exits)
        await sub.stop()
        reports = ota_reports(sub)
        asked = [r["n"] for r in reports if r["ota"] == "downloading"]
        # never from the start again: each wake asks for the chunk the last one had reached
        assert asked == sorted(asked) and max(asked) == reports[0]["of"] - 1, asked
        # more than one wake downloaded: sleeps (76) before the install's reboot (75)
        before_install = exits[: exits.index(mpunix.EXIT_REBOOT)]
        assert before_install.count(mpunix.EXIT_DEEPSLEEP) >= 2, exits
        seen = [r["ota"] for r in reports if r["ota"] != "downloading"]
        assert seen == ["installing", "trial", "updated"], seen
        # two reboots (to install, into the new app), then it sleeps again, wake after wake
        last = len(exits) - 1 - exits[::-1].index(mpunix.EXIT_REBOOT)
        assert exits.count(mpunix.EXIT_REBOOT) == 2, exits
        assert exits[last + 1 :] and set(exits[last + 1 :]) == {mpunix.EXIT_DEEPSLEEP}, exits

    asyncio.run(scenario())

