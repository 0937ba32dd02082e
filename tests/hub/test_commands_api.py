"""Commands through the HTTP API against the real hub: answered at once with wait=0, pending
for an offline device, sent again when it comes online, replies matched by id, expiry, and
the command history with who sent each one."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from tests.hub.fleet import admin_token, call, get, poll, raw_device
from tests.support.hubproc import HubProcess, start_hub


def post(hub: HubProcess, path: str, tok: str, body: object) -> tuple[int, Any]:
    status, _, raw = call(hub, path, tok, body)
    return status, json.loads(raw)


def test_offline_device_gets_its_pending_command_when_it_comes_online(tmp_path: Path) -> None:
    """A command to an offline device is pending (online false); when the device connects and
    says online it is delivered, the reply is matched by id and recorded in the history; one
    sent while the device is online is not sent again when it says online again."""
    hub = start_hub(tmp_path / "data")
    try:
        admin = admin_token(hub)

        async def scenario() -> None:
            first = await raw_device(hub, "late-1")
            await first.close()  # the will: offline
            await poll(lambda: get(hub, "/api/devices/late-1", admin)["status"] == "offline")
            status, sent = post(
                hub, "/api/devices/late-1/commands?wait=0", admin, {"op": "ping", "id": 999}
            )
            assert status == 202 and sent["status"] == "pending" and sent["online"] is False
            assert sent["expires_at"] > 0 and sent["id"] != 999
            path = f"/api/devices/late-1/commands/{sent['id']}"
            assert get(hub, path, admin)["status"] == "pending"
            device = await raw_device(hub, "late-1", status=b"")  # no status yet
            assert await device.subscribe([("d/late-1/c", 1)]) == [1]
            await device.publish("d/late-1/s", b"online", qos=1, retain=True)
            message = await device.next_message(timeout=10)
            command = json.loads(message.payload)
            assert command == {"op": "ping", "id": sent["id"]}
            await device.publish(
                "d/late-1/r",
                json.dumps({"id": sent["id"], "ok": True, "version": "0.1"}).encode(),
                qos=1,
            )
            done = await poll(lambda: (c := get(hub, path, admin))["status"] == "replied" and c)
            assert done["reply"] == {"id": sent["id"], "ok": True, "version": "0.1"}
            assert done["by"].startswith("token-") and done["op"] == "ping"
            assert done["replied_at"] >= done["sent_at"]

            def recorded() -> object:
                history = get(hub, "/api/devices/late-1/history", admin)
                return (
                    history
                    if history["commands"][:1] and history["commands"][0]["status"] == "replied"
                    else None
                )

            history = await poll(recorded, what="the command in the history")
            assert history["commands"][0]["id"] == sent["id"]
            # Sent while online it is delivered: saying online again does not repeat it.
            _, second = post(hub, "/api/devices/late-1/commands?wait=0", admin, {"op": "read"})
            assert second["online"] is True
            assert json.loads((await device.next_message(timeout=10)).payload)["op"] == "read"
            await device.publish("d/late-1/s", b"online", qos=1, retain=True, pid=3)
            _, third = post(hub, "/api/devices/late-1/commands?wait=0", admin, {"op": "ping"})
            following = json.loads((await device.next_message(timeout=10)).payload)
            assert following["id"] == third["id"]
            await device.close()

        asyncio.run(scenario())
    finally:
        hub.stop()


def test_pending_command_expires(tmp_path: Path) -> None:
    """A command nobody answers is pending until its ttl, then expired; a reply after that
    changes nothing."""
    hub = start_hub(tmp_path / "data")
    try:
        admin = admin_token(hub)

        async def scenario() -> None:
            device = await raw_device(hub, "mute-1")
            status, sent = post(
                hub, "/api/devices/mute-1/commands?wait=0&ttl=1", admin, {"op": "read"}
            )
            assert status == 202 and sent["online"] is True
            path = f"/api/devices/mute-1/commands/{sent['id']}"
            await poll(lambda: get(hub, path, admin)["status"] == "expired", what="expiry")
            await device.publish(
                "d/mute-1/r", json.dumps({"id": sent["id"], "ok": True}).encode(), qos=1
            )
            # A later command's reply, on the same connection, comes after the late one.
            _, second = post(hub, "/api/devices/mute-1/commands?wait=0", admin, {"op": "ping"})
            await device.publish(
                "d/mute-1/r", json.dumps({"id": second["id"], "ok": True}).encode(), qos=1, pid=2
            )
            later = f"/api/devices/mute-1/commands/{second['id']}"
            await poll(lambda: get(hub, later, admin)["status"] == "replied")
            assert get(hub, path, admin)["status"] == "expired"
            assert call(hub, "/api/devices/mute-1/commands/123456", admin)[0] == 404
            assert call(hub, "/api/devices/mute-1/commands/x1", admin)[0] == 400
            code, _, _ = call(hub, "/api/devices/mute-1/commands?wait=2", admin, {"op": "x"})
            assert code == 400
            await device.close()

        asyncio.run(scenario())
    finally:
        hub.stop()
