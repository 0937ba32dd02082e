"""A download resumes where it stopped: after a cut connection, a device reboot (SIGKILL) and a
hub restart, all in one update, never starting again from chunk 0."""

from __future__ import annotations

import asyncio
from pathlib import Path

from tests.ota.conftest import assign, chunks_sent, firmware_version, ota_reports
from tests.support.devices import running_device
from tests.support.faultproxy import FaultProxy
from tests.support.firmware import Subscriber
from tests.support.hubproc import hub_cli, scaled, start_hub


def test_download_resumes_after_cut_reboot_and_hub_restart(
    tmp_path: Path, bundles: dict[str, Path]
) -> None:
    """Cut at a third of the chunks, SIGKILL of the device at a half, hub restart (same data dir
    and port) at two thirds: each time the next request names the chunk after the last one
    written, and the update ends with the new version running."""
    hub = start_hub(tmp_path / "hub-data")
    assert hub_cli(hub.data_dir, "app", "add", str(bundles["good"])).returncode == 0

    async def scenario() -> None:
        nonlocal hub
        subs = [await Subscriber.start(hub, "res-1")]

        def reports() -> list[dict[str, object]]:
            return [r for s in subs for r in ota_reports(s)]

        def sent() -> list[int]:
            return [n for s in subs for n in chunks_sent(s)]

        async with FaultProxy((hub.host, hub.mqtt_port)) as proxy:
            with running_device(
                tmp_path, hub, "res-1", port=proxy.port, ota_trial_s=10, backoff_min_ms=200
            ) as device:
                await subs[0].wait_until(lambda: firmware_version(subs[0]), scaled(20), "health")
                assign(hub, "res-1", "1.2.0")
                await subs[0].wait_until(lambda: len(sent()) >= 8, scaled(30), "8 chunks")
                total = int(reports()[0]["of"])  # type: ignore[call-overload]
                proxy.drop()  # the connection cut
                await subs[0].wait_until(lambda: len(set(sent())) >= 14, scaled(30), "14 chunks")
                device.kill()  # power off mid-download, then on again
                device.start()
                await subs[0].wait_until(lambda: len(set(sent())) >= 20, scaled(30), "20 chunks")
                assert len(set(sent())) < total, "the download ended before the hub restart"
                port, ws = hub.mqtt_port, hub.ws_port
                hub.stop()
                await subs[0].stop()
                hub = start_hub(hub.data_dir, "--mqtt-port", str(port), "--ws-port", str(ws))
                subs.append(await Subscriber.start(hub, "res-1"))
                await subs[-1].wait_until(
                    lambda: any(r["ota"] == "updated" for r in reports()),
                    scaled(60),
                    "the update to end",
                )
                await subs[-1].wait_until(
                    lambda: firmware_version(subs[-1]) == "1.2.0", scaled(10), "fw 1.2.0"
                )
                assert device.exits and device.exits[0] < 0, device.exits  # it was killed
        await subs[-1].stop()
        asked = [r["n"] for r in reports() if r["ota"] == "downloading"]
        assert asked.count(0) == 1, f"a download started again from chunk 0: {asked}"
        assert sorted(set(sent())) == list(range(total))
        assert len(sent()) < total + 8, "resumed downloads resent most of the bundle"

    try:
        asyncio.run(scenario())
    finally:
        hub.stop()
