"""Alarms against the real hub: a rule added over HTTP raises an alarm on a reading, clears
with hysteresis, is acknowledged, each with its hub event; rules survive a restart."""

from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from tests.hub.fleet import admin_token, get, poll, raw_device, token
from tests.support.hubproc import HubProcess, scaled, start_hub
from tests.support.mqtt import RawClient


def send(hub: HubProcess, method: str, path: str, tok: str, body: Any = None) -> tuple[int, Any]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(
        hub.http_url + path,
        data=data,
        method=method,
        headers={"Authorization": f"Bearer {tok}", "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=scaled(30)) as response:
            raw = response.read()
            return response.status, json.loads(raw) if raw else None
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read() or b"null")


RULE = {
    "name": "too hot",
    "scope": {"device": "oven-1"},
    "kind": "above",
    "sensor": "temp",
    "threshold": 30,
    "clear_hysteresis": 2,
}


def test_alarm_raised_cleared_with_hysteresis_and_acknowledged(tmp_path: Path) -> None:
    """Above 30 raises; 29 (within the hysteresis) keeps it; 27 clears it; each change and
    the acknowledgement are hub events, and the device's history lists them."""
    data = tmp_path / "data"
    hub = start_hub(data)
    try:
        admin = admin_token(hub)
        status, rule = send(hub, "POST", "/api/alarms/rules", admin, RULE)
        assert status == 201 and rule["id"] >= 1 and rule["for_s"] == 0 and rule["enabled"]
        assert send(hub, "POST", "/api/alarms/rules", admin, {**RULE, "kind": "hot"})[0] == 400
        reader = token(hub, "--subscribe", "d/+/t/+")
        assert send(hub, "POST", "/api/alarms/rules", reader, RULE)[0] == 403

        async def scenario() -> None:
            watcher = await RawClient.tcp(hub.host, hub.mqtt_port)
            await watcher.connect("watcher", username="token", password=admin)
            await watcher.subscribe([("$hub/events/device/oven-1/#", 1)])
            oven = await raw_device(hub, "oven-1")
            seq = iter(range(100))

            async def reading(value: float) -> None:
                await oven.publish("d/oven-1/t/temp", b"a1,%d,%.1f" % (next(seq), value), qos=1)

            async def event(kind: str) -> dict[str, Any]:
                while True:
                    body = json.loads((await watcher.next_message(timeout=10)).payload)
                    if body["event"] == kind:
                        return body

            await reading(25)
            await reading(31)
            raised = await event("alarm_raised")
            assert (raised["rule"], raised["value"]) == (rule["id"], 31.0)
            assert raised["rule_name"] == "too hot"
            (alarm,) = get(hub, "/api/alarms", admin)
            assert alarm["state"] == "active" and alarm["device"] == "oven-1"
            assert get(hub, "/api/devices/oven-1", admin)["alarms"] == 1
            assert get(hub, "/api/fleet?state=alarm", admin)["total"] == 1
            await reading(29)  # below 30, not below 30 - 2
            await reading(27)
            cleared = await event("alarm_cleared")
            assert cleared["alarm"] == alarm["id"] and cleared["value"] == 27.0
            (after,) = get(hub, "/api/alarms?state=all", admin)
            assert after["state"] == "cleared" and after["cleared_at"] >= after["raised_at"]
            assert get(hub, "/api/alarms", admin) == []
            assert send(hub, "POST", f"/api/alarms/{alarm['id']}/ack", reader)[0] == 403
            status, acked = send(hub, "POST", f"/api/alarms/{alarm['id']}/ack", admin)
            assert status == 200 and acked["acknowledged_by"].startswith("token-")
            assert (await event("alarm_acknowledged"))["by"] == acked["acknowledged_by"]
            assert send(hub, "POST", "/api/alarms/999/ack", admin)[0] == 404

            def listed() -> object:
                events = get(hub, "/api/devices/oven-1/history", admin)["events"]
                kinds = [e["event"] for e in events]
                return kinds if "alarm_acknowledged" in kinds else None

            kinds = await poll(listed, what="alarm events in the history")
            assert kinds[:3] == ["alarm_acknowledged", "alarm_cleared", "alarm_raised"]
            await oven.close()
            await watcher.close()

        asyncio.run(scenario())
    finally:
        hub.stop()
    hub = start_hub(data)
    try:
        rules = get(hub, "/api/alarms/rules", admin)
        assert [r["name"] for r in rules] == ["too hot"] and rules[0]["id"] == rule["id"]
        (kept,) = get(hub, "/api/alarms?state=all", admin)
        assert kept["acknowledged_by"] is not None and kept["state"] == "cleared"
        status, _ = send(hub, "DELETE", f"/api/alarms/rules/{rule['id']}", admin)
        assert status == 204 and get(hub, "/api/alarms/rules", admin) == []
        assert send(hub, "DELETE", f"/api/alarms/rules/{rule['id']}", admin)[0] == 404
    finally:
        hub.stop()
