"""Full firmware images over the air, end to end: the real firmware on the unix port (64 KB heap)
with the fake esp32.Partition (tools/unixport/esp32.py: two app slots and the bootloader's
otadata, as files), a real hub."""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from hub import topics
from tests.ota.conftest import (
    assign,
    build_image,
    chunks_sent,
    fake_image,
    firmware_version,
    ota_reports,
    update_row,
)
from tests.support.devices import Device, running_device
from tests.support.faultproxy import FaultProxy
from tests.support.firmware import Subscriber
from tests.support.hubproc import HubProcess, hub_cli, scaled, start_hub
from tools import bundle, mpunix

TRIAL_S = 8
FINAL = ("updated", "rolled_back", "failed")
IMAGE_SIZE = 40 * 1024 + 123  # 41 chunks, the last one short; 11 blocks, the last one partial


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The raw images: one good, and one for the corruption test (its own version)."""
    tmp = tmp_path_factory.mktemp("images")
    return {
        "good": fake_image(tmp / "good.bin", IMAGE_SIZE, seed=1),
        "bad": fake_image(tmp / "bad.bin", IMAGE_SIZE, seed=2),
    }


@pytest.fixture(scope="module")
def image_hub(
    tmp_path_factory: pytest.TempPathFactory, images: dict[str, Path]
) -> Iterator[HubProcess]:
    """A hub with image 2.0.0 and 2.0.1 (to be damaged) registered for unix-sim-ota."""
    tmp = tmp_path_factory.mktemp("image-bundles")
    hub = start_hub(tmp_path_factory.mktemp("image-hub"))
    try:
        for version, image in (("2.0.0", images["good"]), ("2.0.1", images["bad"])):
            path = build_image(tmp / f"{version}.tar", version, image)
            result = hub_cli(hub.data_dir, "app", "add", str(path))
            assert result.returncode == 0, result.stderr
            assert "added firmware image" in result.stdout
        yield hub
    finally:
        hub.stop()


def states(sub: Subscriber) -> list[str]:
    return [r["ota"] for r in ota_reports(sub)]


async def settle(sub: Subscriber, timeout: float = 60) -> str:
    def done() -> str | None:
        return next((s for s in reversed(states(sub)) if s in FINAL), None)

    found: str = await sub.wait_until(done, scaled(timeout), f"an update report in {FINAL}")
    return found


def otadata(device: Device) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((device.folder / "flash" / "otadata.json").read_text())
    return data


def slot_digest(device: Device, label: str, size: int) -> str:
    return hashlib.sha256(
        (device.folder / "flash" / f"{label}.bin").read_bytes()[:size]
    ).hexdigest()


# The firmware's 64 KB plus what the fake esp32 module (Python, in this heap) takes: a board has
# esp32 in its firmware, in flash. tests/firmware/test_ota_memory.py measures the download
# within 64 KB without the fake.
HEAP = "68K"


def image_device(tmp_path: Path, hub: HubProcess, name: str, **kw: Any) -> Any:
    return running_device(
        tmp_path, hub, name, board="unix-sim-ota", ota_trial_s=TRIAL_S, heap=HEAP, **kw
    )


def test_image_update_writes_the_next_slot_boots_it_and_marks_it_valid(
    image_hub: HubProcess, images: dict[str, Path], tmp_path: Path
) -> None:
    """Chunk by chunk into the next slot, verified, set_boot, a reboot into the trial, marked
    valid once the hub has the trial's report; the device then reports fw 2.0.0."""

    async def scenario() -> None:
        sub = await Subscriber.start(image_hub, "img-1")
        with image_device(tmp_path, image_hub, "img-1") as device:
            await sub.wait_until(lambda: firmware_version(sub) == "0.1.0", scaled(20), "health")
            assign(image_hub, "img-1", "2.0.0")
            assert await settle(sub) == "updated", device.log()
            await sub.wait_until(
                lambda: firmware_version(sub) == "2.0.0", scaled(10), "health with fw 2.0.0"
            )
            assert otadata(device) == {
                "boot": "ota_1",
                "running": "ota_1",
                "prev": "ota_0",
                "state": "valid",
            }
            want = hashlib.sha256(images["good"].read_bytes()).hexdigest()
            assert slot_digest(device, "ota_1", IMAGE_SIZE) == want
            assert device.poll() is None, device.log()
        await sub.stop()
        reports = ota_reports(sub)
        total = reports[0]["of"]
        assert total == 41 and sorted(set(chunks_sent(sub))) == list(range(total))
        seen = [s for s in states(sub) if s != "downloading"]
        assert seen == ["verifying", "installing", "trial", "updated"], seen
        row = update_row(image_hub, "img-1")
        assert row is not None and row["state"] == "updated" and row["version"] == "2.0.0"

    asyncio.run(scenario())


def test_image_trial_that_cannot_reach_the_hub_is_rolled_back_by_the_bootloader(
    image_hub: HubProcess, tmp_path: Path
) -> None:
    """The new image never reaches the hub (every CONNECT refused during its trial): after
    ota_trial_s it reboots unmarked, the bootloader boots the old slot, whose app reports
    rolled_back; fw stays 0.1.0."""

    async def scenario() -> None:
        sub = await Subscriber.start(image_hub, "img-2")
        async with FaultProxy((image_hub.host, image_hub.mqtt_port)) as proxy:
            with image_device(
                tmp_path, image_hub, "img-2", port=proxy.port, backoff_min_ms=200
            ) as device:
                await sub.wait_until(lambda: firmware_version(sub), scaled(20), "health")
                assign(image_hub, "img-2", "2.0.0")
                await sub.wait_until(lambda: "installing" in states(sub), scaled(60), "install")
                proxy.connack = 3  # server unavailable: the trial never reaches the hub
                await sub.wait_until(
                    lambda: "was not marked valid: back to ota_0" in device.log(),
                    scaled(60),
                    "the bootloader's rollback",
                )
                proxy.connack = None
                assert await settle(sub) == "rolled_back"
                assert "no healthy report" in ota_reports(sub)[-1]["error"]
                assert otadata(device)["running"] == "ota_0"
                assert otadata(device)["state"] == "aborted"
                assert device.poll() is None, device.log()
        await sub.stop()
        assert "trial" not in states(sub) and firmware_version(sub) == "0.1.0"
        row = update_row(image_hub, "img-2")
        assert row is not None and row["state"] == "rolled_back"

    asyncio.run(scenario())


def test_corrupted_image_is_refused_and_the_slot_never_set_to_boot(
    image_hub: HubProcess, tmp_path: Path
) -> None:
    """An image whose stored bytes were damaged after registration: the SHA-256 over the written
    slot differs, the device reports failed and never calls set_boot."""
    payload = image_hub.data_dir / "apps" / "2.0.1" / "payload.bin"
    data = bytearray(payload.read_bytes())
    data[len(data) // 2] ^= 0xFF
    payload.write_bytes(bytes(data))

    async def scenario() -> None:
        sub = await Subscriber.start(image_hub, "img-3")
        with image_device(tmp_path, image_hub, "img-3") as device:
            await sub.wait_until(lambda: firmware_version(sub), scaled(20), "health")
            assign(image_hub, "img-3", "2.0.1")
            assert await settle(sub) == "failed"
            assert "sha256 mismatch" in ota_reports(sub)[-1]["error"]
            assert not (device.folder / "flash" / "otadata.json").exists()  # no set_boot ever
            assert (device.folder / "flash" / "ota_1.bin").stat().st_size >= IMAGE_SIZE
            assert device.poll() is None, device.log()
            assert not (device.folder / "ota" / "img.json").exists()
        await sub.stop()
        assert "installing" not in states(sub) and firmware_version(sub) == "0.1.0"

    asyncio.run(scenario())


def test_wrong_board_images_are_refused_by_the_tool_the_hub_and_the_device(
    image_hub: HubProcess, images: dict[str, Path], tmp_path: Path
) -> None:
    """The tool builds no image for a board without ota_image; `hub app add` refuses an image
    bundle for such a board; the hub sends no chunk to a unix-sim device; and a device whose own
    board file takes no images refuses the offer before any chunk."""
    with pytest.raises(bundle.BundleError, match="does not take firmware images"):
        bundle.build_image("unix-sim", "3.0.0", images["good"], tmp_path / "x.tar")
    forged = tmp_path / "forged.tar"
    data = images["good"].read_bytes()
    manifest = bundle.image_manifest("3.0.0", {"name": "unix-sim"}, "1.25.0", data)
    bundle.write_bundle(forged, manifest, {bundle.IMAGE: data})
    result = hub_cli(image_hub.data_dir, "app", "add", str(forged))
    assert result.returncode == 2 and "does not take firmware images" in result.stderr
    board = json.loads((mpunix.BOARDS_DIR / "unix-sim-ota.json").read_text())
    board["ota_image"] = False  # the device's own board file says no

    async def scenario() -> None:
        plain = await Subscriber.start(image_hub, "img-4")
        own = await Subscriber.start(image_hub, "img-5", name="watcher-5")
        with (
            running_device(tmp_path, image_hub, "img-4"),
            running_device(tmp_path, image_hub, "img-5", board_json=board) as device,
        ):
            await plain.wait_until(lambda: firmware_version(plain), scaled(20), "health 4")
            await own.wait_until(lambda: firmware_version(own), scaled(20), "health 5")
            assign(image_hub, "img-4", "2.0.0")
            assign(image_hub, "img-5", "2.0.0")

            def failed(device: str) -> dict[str, Any] | None:
                row = update_row(image_hub, device)
                return row if row is not None and row["state"] == "failed" else None

            row = await plain.wait_until(lambda: failed("img-4"), scaled(20), "refused 4")
            assert "wrong board" in str(row["error"])
            row = await own.wait_until(lambda: failed("img-5"), scaled(20), "refused 5")
            assert "takes no firmware images" in str(row["error"])
            assert not (device.folder / "flash").exists()
        await plain.stop()
        await own.stop()
        assert chunks_sent(plain) == [] and ota_reports(plain) == []
        assert chunks_sent(own) == []

    asyncio.run(scenario())


def test_power_cuts_mid_download_and_after_set_boot_leave_a_bootable_slot(
    image_hub: HubProcess, images: dict[str, Path], tmp_path: Path
) -> None:
    """SIGKILL a third of the way through the download: the next boot runs the old slot and
    resumes at the last whole block. A cut right after set_boot (the fake's flash/cut): the next
    boot is the new slot's trial, which ends updated."""

    async def scenario() -> None:
        sub = await Subscriber.start(image_hub, "img-6")
        with image_device(tmp_path, image_hub, "img-6") as device:
            await sub.wait_until(lambda: firmware_version(sub), scaled(20), "health")
            assign(image_hub, "img-6", "2.0.0")
            await sub.wait_until(lambda: len(set(chunks_sent(sub))) >= 14, scaled(30), "chunks")
            device.kill()
            last = max(chunks_sent(sub))
            killed = time.monotonic()
            assert json.loads((device.folder / "ota" / "img.json").read_text())["st"] == "dl"
            (device.folder / "flash" / "cut").write_text("")
            device.start()
            await sub.wait_until(
                lambda: "power cut after set_boot" in device.log(), scaled(60), "the cut"
            )
            await sub.wait_until(lambda: device.poll() is not None, scaled(10), "the stop")
            assert otadata(device)["boot"] == "ota_1" and otadata(device)["state"] == "new"
            assert otadata(device)["running"] == "ota_0"  # still the old slot until a reset
            device.start()
            assert await settle(sub) == "updated", device.log()
            await sub.wait_until(lambda: firmware_version(sub) == "2.0.0", scaled(10), "fw")
            assert otadata(device)["state"] == "valid"
            want = hashlib.sha256(images["good"].read_bytes()).hexdigest()
            assert slot_digest(device, "ota_1", IMAGE_SIZE) == want
            assert device.exits[:2] == [-9, 99], device.exits
        await sub.stop()
        asked = [r["n"] for r in ota_reports(sub) if r["ota"] == "downloading"]
        assert asked.count(0) == 1, f"the download started again from chunk 0: {asked}"
        # the restarted device's first request (it boots for 0.5 s first: what arrives sooner
        # was sent before the kill)
        again = next(
            json.loads(m.payload)["n"]
            for at, m in sub.messages
            if at > killed + 0.4
            and m.topic == topics.reply_topic("img-6")
            and b'"downloading"' in m.payload
        )
        # resumed at the last whole block (4 chunks of 1 KB) written before the cut
        assert again % 4 == 0 and last - 4 < again <= last + 1, (again, last)

    asyncio.run(scenario())
