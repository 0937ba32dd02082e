"""The HTTP API against the real hub: tokens, devices, telemetry (JSON and CSV), commands."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from tests.support.devices import running_device
from tests.support.hubproc import HubProcess, hub_cli, provision, scaled
from tests.support.waits import eventually


def token(hub: HubProcess, *args: str) -> str:
    result = hub_cli(hub.data_dir, "token", "create", *args)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip().splitlines()[-1]


def call(
    hub: HubProcess, path: str, tok: str | None = None, body: Any = None, raw: bytes | None = None
) -> tuple[int, str, bytes]:
    headers = {"Authorization": f"Bearer {tok}"} if tok else {}
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    if data is not None:
        headers["Content-Type"] = "application/json"
    request = urllib.request.Request(hub.http_url + path, data=data, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=scaled(30)) as response:
            return response.status, response.headers.get("Content-Type", ""), response.read()
    except urllib.error.HTTPError as err:
        return err.code, err.headers.get("Content-Type", ""), err.read()


@pytest.fixture
def device_on_hub(secure_hub: HubProcess, tmp_path: Path):
    creds = provision(secure_hub, "api-1")
    with running_device(
        tmp_path, secure_hub, "api-1", period_s=1, username="api-1", password=creds["password"]
    ) as device:
        yield secure_hub, device


def test_devices_telemetry_and_csv(device_on_hub: tuple[HubProcess, Any]) -> None:
    """A reader token lists the device (online, TLS posture, health) and reads its history as
    JSON and CSV; the dashboard's own token works too."""
    hub, _ = device_on_hub
    reader = token(hub, "--subscribe", "d/+/t/+")

    def rows() -> list[dict[str, Any]]:
        return json.loads(call(hub, "/api/devices/api-1/telemetry", reader)[2])

    eventually(lambda: len(rows()) >= 3, 15, "3 readings stored")
    status, ctype, body = call(hub, "/api/devices", reader)
    assert status == 200 and ctype.startswith("application/json")
    (entry,) = json.loads(body)
    assert (entry["id"], entry["online"], entry["tls_policy"]) == ("api-1", True, "allow-insecure")
    # The registry records the connect within a poll of the hub's registry watcher.
    assert entry["last_seen_at"] is not None and time.time() - entry["last_seen_at"] < 60
    eventually(lambda: json.loads(call(hub, "/api/devices", reader)[2])[0]["health"], 10, "health")
    readings = rows()
    seqs = [r["seq"] for r in readings]
    assert seqs == sorted(seqs) and {r["sensor"] for r in readings} >= {"temp"}
    newest = readings[-1]
    window = call(
        hub, f"/api/devices/api-1/telemetry?since={newest['received_at']}&limit=5", reader
    )
    assert [r["seq"] for r in json.loads(window[2])] == [newest["seq"]]
    status, ctype, body = call(hub, "/api/devices/api-1/telemetry.csv?sensor=temp", reader)
    lines = body.decode().splitlines()
    assert status == 200 and ctype.startswith("text/csv")
    assert lines[0] == "received_at,sensor,boot,seq,value" and len(lines) >= 4
    page = json.loads(call(hub, "/api/hub", reader)[2])  # a page's token, no wider than ours
    assert page["role"] == "viewer" and call(hub, "/api/devices", page["token"])[0] == 200


def test_command_reaches_the_device_and_its_reply_comes_back(
    device_on_hub: tuple[HubProcess, Any],
) -> None:
    """POST a command: the hub numbers it, the firmware answers, the reply is the response."""
    hub, _ = device_on_hub
    operator = token(hub, "--subscribe", "d/api-1/#", "--publish", "d/api-1/c")
    eventually(
        lambda: json.loads(call(hub, "/api/devices", operator)[2])[0]["online"], 15, "online"
    )
    status, _, body = call(hub, "/api/devices/api-1/commands", operator, {"op": "ping"})
    reply = json.loads(body)
    assert status == 200 and reply["ok"] is True and "version" in reply
    status, _, body = call(hub, "/api/devices/api-1/commands", operator, {"op": "period", "s": 0})
    assert status == 200 and json.loads(body)["ok"] is False  # the device's own refusal
    reader = token(hub, "--subscribe", "d/#")
    assert call(hub, "/api/devices/api-1/commands", reader, {"op": "ping"})[0] == 403


@pytest.mark.parametrize(
    ("path", "auth", "status", "message"),
    [
        ("/api/devices", None, 401, "Bearer"),
        ("/api/devices", "forged", 401, "signature"),
        ("/api/devices/known/telemetry?limit=2.5", "reader", 400, "limit"),
        ("/api/devices/ghost/telemetry", "reader", 404, "no device"),
        ("/api/devices/BAD!/telemetry", "reader", 400, "bad device id"),
        ("/api/devices/known/telemetry?limit=0", "reader", 400, "limit"),
        ("/api/devices/known/telemetry?since=yesterday", "reader", 400, "since must be a number"),
        ("/api/devices/known/telemetry?colour=red", "reader", 400, "unknown parameter"),
        ("/api/devices/known/telemetry", "other", 403, "may not read"),
    ],
)
def test_bad_requests_get_clear_errors(
    secure_hub: HubProcess, path: str, auth: str | None, status: int, message: str
) -> None:
    """Missing or bad tokens, unknown devices and bad parameters get 4xx with a JSON message."""
    provision(secure_hub, "known")
    tokens = {
        "reader": token(secure_hub, "--subscribe", "d/+/t/+"),
        "other": token(secure_hub, "--subscribe", "d/someone/t/+"),
        "forged": "v1.abc.def",
        None: None,
    }
    code, ctype, body = call(secure_hub, path, tokens[auth])
    assert code == status and ctype.startswith("application/json")
    assert message in json.loads(body)["error"]


def test_command_errors(secure_hub: HubProcess) -> None:
    """A body that is not a command gets 400; a device that never answers gets 504."""
    provision(secure_hub, "silent")
    admin = token(secure_hub, "--admin")
    path = "/api/devices/silent/commands"
    assert call(secure_hub, path, admin, raw=b"{not json")[0] == 400
    assert call(secure_hub, path, admin, ["ping"])[0] == 400
    assert call(secure_hub, path + "?timeout=500", admin, {"op": "ping"})[0] == 400
    code, _, body = call(secure_hub, path + "?timeout=0.5", admin, {"op": "ping"})
    assert code == 504 and "no reply" in json.loads(body)["error"]


def test_status_reports_storage_and_free_space_to_admins(secure_hub: HubProcess) -> None:
    """GET /api/status shows an admin the storage counters and the data dir's free space; a
    token that only reads telemetry is refused."""
    admin = token(secure_hub, "--admin")
    reader = token(secure_hub, "--subscribe", "d/+/t/+")

    def storage() -> dict[str, Any]:
        status, _, body = call(secure_hub, "/api/status", admin)
        assert status == 200, body
        return dict(json.loads(body)["storage"])

    eventually(lambda: storage()["disk_free_bytes"] is not None, 15, "a free-space figure")
    seen = storage()
    assert 0 < seen["disk_free_bytes"] <= seen["disk_total_bytes"]
    assert seen["store_failing"] is False and seen["pending"] >= 0
    assert call(secure_hub, "/api/status", reader)[0] == 403
    assert call(secure_hub, "/api/status")[0] == 401
