"""App updates over MQTT, end to end: real firmware on the unix port (64 KB heap), a real hub."""

from __future__ import annotations

import asyncio
from pathlib import Path

from tests.ota.conftest import assign, chunks_sent, firmware_version, ota_reports, update_row
from tests.support.devices import running_device
from tests.support.firmware import Subscriber
from tests.support.hubproc import HubProcess, scaled
from tests.support.mqtt import PUBACK, RawClient, publish_packet

TRIAL_S = 8  # ota_trial_s of the test devices: a new app must report healthy within this


def states(sub: Subscriber) -> list[str]:
    return [r["ota"] for r in ota_reports(sub)]


async def settle(sub: Subscriber, final: tuple[str, ...], timeout: float = 60) -> str:
    """Waits until the device reports one of the final states; returns it."""

    def done() -> str | None:
        return next((s for s in reversed(states(sub)) if s in final), None)

    found: str = await sub.wait_until(done, scaled(timeout), f"an update report in {final}")
    return found


def test_update_downloads_installs_and_keeps_the_new_app(
    ota_hub: HubProcess, tmp_path: Path
) -> None:
    """A device downloads a bundle chunk by chunk (one request, one chunk), installs it at the
    next boot, reports installing, trial and updated, and runs the new version as its fw."""

    async def scenario() -> None:
        sub = await Subscriber.start(ota_hub, "up-1")
        with running_device(tmp_path, ota_hub, "up-1", ota_trial_s=TRIAL_S) as device:
            await sub.wait_until(lambda: firmware_version(sub) == "0.1.0", scaled(20), "health")
            assign(ota_hub, "up-1", "1.2.0")
            assert await settle(sub, ("updated", "failed", "rolled_back")) == "updated"
            await sub.wait_until(
                lambda: firmware_version(sub) == "1.2.0", scaled(10), "health with fw 1.2.0"
            )
            assert device.poll() is None, device.log()
        await sub.stop()
        reports = ota_reports(sub)
        asked = [r["n"] for r in reports if r["ota"] == "downloading"]
        total = reports[0]["of"]
        assert asked[0] == 0 and max(asked) == total - 1
        assert sorted(set(chunks_sent(sub))) == list(range(total))  # each asked for, in turn
        seen = [s for s in states(sub) if s != "downloading"]
        assert seen == ["installing", "trial", "updated"], seen
        assert reports[0]["mp"] == "1.25.0/6.3" and reports[0]["board"] == "unix-sim"
        row = update_row(ota_hub, "up-1")
        assert row is not None and row["state"] == "updated" and row["version"] == "1.2.0"

    asyncio.run(scenario())


def test_app_that_crashes_at_start_rolls_back_by_itself(
    ota_hub: HubProcess, tmp_path: Path
) -> None:
    """A bundle whose app raises at start: the trial boot crashes, the device returns to the
    previous app by itself and reports rolled_back with the crash; fw stays 0.1.0."""

    async def scenario() -> None:
        sub = await Subscriber.start(ota_hub, "crash-1")
        with running_device(tmp_path, ota_hub, "crash-1", ota_trial_s=TRIAL_S) as device:
            await sub.wait_until(lambda: firmware_version(sub) == "0.1.0", scaled(20), "health")
            assign(ota_hub, "crash-1", "9.0.0-crash")
            assert await settle(sub, ("updated", "rolled_back", "failed")) == "rolled_back"
            assert device.poll() is None, device.log()
            assert "boom" in ota_reports(sub)[-1]["error"]
            assert "app on trial crashed" in device.log()
        await sub.stop()
        assert firmware_version(sub) == "0.1.0"
        row = update_row(ota_hub, "crash-1")
        assert row is not None and row["state"] == "rolled_back" and "boom" in row["error"]

    asyncio.run(scenario())


def test_app_that_cannot_reach_the_hub_rolls_back_after_its_deadline(
    ota_hub: HubProcess, tmp_path: Path
) -> None:
    """A bundle whose app never reaches the hub: after ota_trial_s the device goes back to the
    previous app, which reports rolled_back (no healthy report) and runs on."""

    async def scenario() -> None:
        sub = await Subscriber.start(ota_hub, "lost-1")
        with running_device(tmp_path, ota_hub, "lost-1", ota_trial_s=TRIAL_S) as device:
            await sub.wait_until(lambda: firmware_version(sub) == "0.1.0", scaled(20), "health")
            assign(ota_hub, "lost-1", "9.0.0-lost")
            assert await settle(sub, ("updated", "rolled_back", "failed"), 90) == "rolled_back"
            assert "no healthy report" in ota_reports(sub)[-1]["error"]
            assert device.poll() is None, device.log()
        await sub.stop()
        assert "trial" not in states(sub)  # the new app never reached the hub
        assert firmware_version(sub) == "0.1.0"

    asyncio.run(scenario())


def test_wrong_board_bundle_is_refused_by_the_hub_before_any_chunk(
    ota_hub: HubProcess, tmp_path: Path
) -> None:
    """A bundle for another board: the hub refuses it (failed, wrong board) and sends neither
    the offer's chunks nor anything the device could install."""

    async def scenario() -> None:
        sub = await Subscriber.start(ota_hub, "board-1")
        with running_device(tmp_path, ota_hub, "board-1", ota_trial_s=TRIAL_S):
            await sub.wait_until(lambda: firmware_version(sub) == "0.1.0", scaled(20), "health")
            assign(ota_hub, "board-1", "1.2.0-esp32")

            def failed() -> dict[str, object] | None:
                row = update_row(ota_hub, "board-1")
                return row if row is not None and row["state"] == "failed" else None

            row = await sub.wait_until(failed, scaled(20), "the update failed")
            assert "wrong board" in str(row["error"])
        await sub.stop()
        assert chunks_sent(sub) == [] and ota_reports(sub) == []

    asyncio.run(scenario())


def test_corrupted_chunk_is_refused_by_the_device(ota_hub: HubProcess, tmp_path: Path) -> None:
    """A bundle whose stored bytes were damaged after it was registered: the device checks
    every file's SHA-256, refuses to install, reports failed naming the file, keeps its app."""
    payload = ota_hub.data_dir / "apps" / "1.2.1" / "payload.bin"
    data = bytearray(payload.read_bytes())
    data[len(data) // 2] ^= 0xFF
    payload.write_bytes(bytes(data))

    async def scenario() -> None:
        sub = await Subscriber.start(ota_hub, "bad-1")
        with running_device(tmp_path, ota_hub, "bad-1", ota_trial_s=TRIAL_S) as device:
            await sub.wait_until(lambda: firmware_version(sub) == "0.1.0", scaled(20), "health")
            assign(ota_hub, "bad-1", "1.2.1")
            assert await settle(sub, ("updated", "rolled_back", "failed")) == "failed"
            assert "sha256 mismatch" in ota_reports(sub)[-1]["error"]
            assert device.poll() is None, device.log()
            assert not (device.folder / "ota" / "stage.bin").exists()
        await sub.stop()
        assert "trial" not in states(sub) and firmware_version(sub) == "0.1.0"

    asyncio.run(scenario())


def test_only_the_hub_sends_updates_on_a_real_hub(ota_hub: HubProcess) -> None:
    """A client (here anonymous, in development mode, which may publish anywhere) publishing an
    `ota` offer or a chunk on a device's command topic: acknowledged, never delivered, while
    its ordinary command is."""

    async def scenario() -> None:
        sub = await Subscriber.start(ota_hub, "guard-1")
        client = await RawClient.tcp(ota_hub.host, ota_hub.mqtt_port)
        assert await client.connect("intruder") == (False, 0)
        topic = "d/guard-1/c"
        for i, payload in enumerate(
            [
                b'{"id": 0, "op": "ota", "v": "6.6.6", "tag": "00000000"}',
                b"\x01\x00\x00\x00\x00\x00\x00\x00\x00evil",
                b'{"id": 7, "op": "ping"}',
            ],
            start=1,
        ):
            await client.send(publish_packet(topic, payload, qos=1, pid=i))
            await client.expect(PUBACK)  # refused messages are acknowledged too
        await sub.wait_until(lambda: sub.on(topic), scaled(10), "the ping delivered")
        await client.close()
        await sub.stop()
        assert [m.payload for m in sub.on(topic)] == [b'{"id": 7, "op": "ping"}']

    asyncio.run(scenario())
