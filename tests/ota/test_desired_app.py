"""A desired `app` becomes an app update (real firmware on the unix port, a real hub): applied
once the device reports the version; one that rolls back is desired_failed once and never
assigned again for the same version."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from tests.ota.conftest import firmware_version, update_row
from tests.support.devices import running_device
from tests.support.durable import Events
from tests.support.firmware import Subscriber
from tests.support.hubproc import HubProcess, hub_cli, scaled

TRIAL_S = 8


def desired(hub: HubProcess, *args: str) -> dict[str, Any]:
    result = hub_cli(hub.data_dir, "desired", *args)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout) if args[0] == "show" else {}


def mine(events: Events, kind: str, device: str) -> list[dict[str, Any]]:
    return [e for e in events.seen if e["event"] == kind and e.get("name") == device]


def health_since(sub: Subscriber, onlines: int) -> bool:
    """A health message has come after the device's next `online` (its count was onlines)."""
    seen = 0
    for _, msg in sub.messages:
        if msg.topic == f"d/{sub.device}/s" and msg.payload == b"online":
            seen += 1
        elif msg.topic == f"d/{sub.device}/m" and seen > onlines:
            return True
    return False


def test_desired_app_is_updated_and_reported_applied(ota_hub: HubProcess, tmp_path: Path) -> None:
    """Setting a device's desired app assigns the update; once the device runs it (its health
    says so) the hub raises desired_applied and nothing is pending."""

    async def scenario() -> None:
        events = await Events.watch(ota_hub.host, ota_hub.mqtt_port)
        sub = await Subscriber.start(ota_hub, "want-app")
        with running_device(tmp_path, ota_hub, "want-app", ota_trial_s=TRIAL_S) as device:
            await sub.wait_until(lambda: firmware_version(sub) == "0.1.0", scaled(20), "health")
            desired(ota_hub, "set", "want-app", "app=1.2.0")
            await sub.wait_until(
                lambda: mine(events, "desired_applied", "want-app"), scaled(90), "applied"
            )
            assert firmware_version(sub) == "1.2.0"
            assert device.poll() is None, device.log()
        state = desired(ota_hub, "show", "want-app")
        assert state["delta"] == {} and state["reported"]["fw"] == "1.2.0"
        row = update_row(ota_hub, "want-app")
        assert row is not None and (row["version"], row["state"]) == ("1.2.0", "updated")
        await sub.stop()
        await events.close()

    asyncio.run(scenario())


def test_desired_app_that_rolls_back_fails_once_and_is_not_retried(
    ota_hub: HubProcess, tmp_path: Path
) -> None:
    """A desired app that crashes at start rolls back on the device; the hub raises
    desired_failed with the reason and does not assign it again when the device reconnects."""

    async def scenario() -> None:
        events = await Events.watch(ota_hub.host, ota_hub.mqtt_port)
        sub = await Subscriber.start(ota_hub, "want-crash")
        with running_device(tmp_path, ota_hub, "want-crash", ota_trial_s=TRIAL_S) as device:
            await sub.wait_until(lambda: firmware_version(sub) == "0.1.0", scaled(20), "health")
            desired(ota_hub, "set", "want-crash", "app=9.0.0-crash")
            failed = await sub.wait_until(
                lambda: mine(events, "desired_failed", "want-crash"), scaled(90), "failed"
            )
            assert "rolled_back" in failed[0]["reason"] and "boom" in failed[0]["reason"]
            tag = update_row(ota_hub, "want-crash")["tag"]  # type: ignore[index]
            onlines = len(sub.online())
            device.kill()  # a power cut, and on again: the update is not assigned again
            device.start()
            await sub.wait_until(
                lambda: health_since(sub, onlines), scaled(30), "back online, and its health"
            )
        assert len(mine(events, "desired_failed", "want-crash")) == 1
        row = update_row(ota_hub, "want-crash")
        assert row is not None and (row["state"], row["tag"]) == ("rolled_back", tag)
        state = desired(ota_hub, "show", "want-crash")
        assert state["outcome"]["app_failed"] == "9.0.0-crash"
        assert "app_pending" not in state["outcome"]
        assert state["delta"] == {"app": "9.0.0-crash"}
        await sub.stop()
        await events.close()

    asyncio.run(scenario())
