"""`hub alarm` against a running hub: a rule added from the CLI is picked up, an offline
rule raises on the periodic tick and clears when the device is back, and an acknowledgement
from the CLI becomes an alarm_acknowledged event."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from tests.hub.fleet import admin_token, get, poll, raw_device
from tests.support.hubproc import hub_cli, start_hub
from tests.support.mqtt import RawClient


def test_offline_rule_from_the_cli_raises_clears_and_is_acknowledged(tmp_path: Path) -> None:
    """`hub alarm rule add --kind offline` raises for a device silent past the threshold,
    clears when it reconnects; `hub alarm ack` acknowledges it with an event; bad rules and
    unknown ids are clear errors."""
    hub = start_hub(tmp_path / "data")
    try:
        admin = admin_token(hub)
        added = hub_cli(
            hub.data_dir,
            "alarm",
            "rule",
            "add",
            "--name",
            "gone",
            "--kind",
            "offline",
            "--device",
            "far-1",
            "--threshold",
            "0.02",
        )
        assert added.returncode == 0, added.stderr
        rule = json.loads(added.stdout)
        assert rule["scope"] == {"device": "far-1"} and rule["threshold"] == 0.02
        bad = hub_cli(
            hub.data_dir,
            "alarm",
            "rule",
            "add",
            "--name",
            "x",
            "--kind",
            "above",
            "--threshold",
            "1",
        )
        assert bad.returncode == 2 and '"sensor"' in bad.stderr
        listed = hub_cli(hub.data_dir, "alarm", "rule", "list")
        assert [json.loads(line)["id"] for line in listed.stdout.splitlines()] == [rule["id"]]
        assert hub_cli(hub.data_dir, "alarm", "ack", "4242").returncode == 2

        async def scenario() -> None:
            watcher = await RawClient.tcp(hub.host, hub.mqtt_port)
            await watcher.connect("watcher", username="token", password=admin)
            await watcher.subscribe([("$hub/events/device/far-1/#", 1)])

            async def event(kind: str) -> dict[str, Any]:
                while True:
                    body = json.loads((await watcher.next_message(timeout=30)).payload)
                    if body["event"] == kind:
                        return body

            await poll(lambda: get(hub, "/api/alarms/rules", admin), what="the CLI's rule")
            device = await raw_device(hub, "far-1")
            await device.close()  # its will: offline
            raised = await event("alarm_raised")
            assert raised["rule"] == rule["id"] and raised["value"] >= 0.02
            back = await raw_device(hub, "far-1")
            cleared = await event("alarm_cleared")
            assert cleared["alarm"] == raised["alarm"]
            await poll(lambda: "gone" in hub_cli(hub.data_dir, "alarm", "list", "--all").stdout)
            acked = hub_cli(hub.data_dir, "alarm", "ack", str(raised["alarm"]), "--by", "ada")
            assert acked.returncode == 0, acked.stderr
            assert (await event("alarm_acknowledged"))["by"] == "ada"
            (alarm,) = get(hub, "/api/alarms?state=all", admin)
            assert (alarm["acknowledged_by"], alarm["state"]) == ("ada", "cleared")
            again = hub_cli(hub.data_dir, "alarm", "ack", str(raised["alarm"]))
            assert again.returncode == 2 and "already" in again.stderr
            await back.close()
            await watcher.close()

        asyncio.run(scenario())
        removed = hub_cli(hub.data_dir, "alarm", "rule", "remove", str(rule["id"]))
        assert removed.returncode == 0, removed.stderr
        assert hub_cli(hub.data_dir, "alarm", "rule", "list").stdout == ""
    finally:
        hub.stop()
