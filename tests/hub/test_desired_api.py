"""The desired-state HTTP API against the real hub: reads, admin-only writes, conflicts, the
4 KB limit, bad settings and the groups listing."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

from tests.support.hubproc import HubProcess, hub_cli, provision, scaled


def token(hub: HubProcess, *args: str) -> str:
    result = hub_cli(hub.data_dir, "token", "create", *args)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip().splitlines()[-1]


def call(
    hub: HubProcess, method: str, path: str, tok: str | None = None, body: Any = None
) -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {tok}"} if tok else {}
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        headers["Content-Type"] = "application/json"
    request = urllib.request.Request(hub.http_url + path, data, headers, method=method)
    try:
        with urllib.request.urlopen(request, timeout=scaled(30)) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def test_reads_and_admin_only_writes(secure_hub: HubProcess) -> None:
    """A reader sees a device's desired state; only an admin changes it; anonymous is 401."""
    hub = secure_hub
    provision(hub, "api-d1")
    reader = token(hub, "--subscribe", "d/+/t/+")
    operator = token(hub, "--subscribe", "d/+/t/+", "--publish", "d/+/c")
    admin = token(hub, "--admin")
    path = "/api/devices/api-d1/desired"
    assert call(hub, "GET", path)[0] == 401
    status, body = call(hub, "GET", path, reader)
    assert status == 200 and body["version"] == 0 and body["desired"] == {}
    change = {"version": 0, "desired": {"period_s": 30}}
    assert call(hub, "PUT", path, reader, change)[0] == 403
    assert call(hub, "PUT", path, operator, change)[0] == 403
    status, body = call(hub, "PUT", path, admin, change)
    assert status == 200 and body["version"] == 1 and body["desired"] == {"period_s": 30}
    status, body = call(hub, "GET", path, reader)
    assert body["effective"] == {"period_s": 30} and body["sources"] == {"period_s": "device"}
    status, state = call(hub, "GET", "/api/devices/api-d1/state", reader)
    assert status == 200
    assert state["delta"] == {"period_s": 30} and state["reported"]["settings"] == {}
    other = token(hub, "--subscribe", "d/someone/t/+")
    assert call(hub, "GET", path, other)[0] == 403
    assert call(hub, "GET", "/api/devices/nobody/desired", admin)[0] == 404
    assert call(hub, "GET", "/api/devices/Bad!/desired", admin)[0] in (400, 404)


def test_conflicts_limits_and_bad_settings_are_refused(secure_hub: HubProcess) -> None:
    """A stale version is 409, a document over 4 KB 413 naming the limit, a bad setting 400
    naming it; none of them changes the stored document."""
    hub = secure_hub
    provision(hub, "api-d2")
    admin = token(hub, "--admin")
    path = "/api/devices/api-d2/desired"
    assert call(hub, "PUT", path, admin, {"version": 0, "desired": {"meta_s": 60}})[0] == 200
    status, body = call(hub, "PUT", path, admin, {"version": 0, "desired": {"meta_s": 90}})
    assert status == 409 and "at version 1, not 0" in body["error"]
    hubs = {"version": 1, "desired": {"hubs": ["h" * 250 + ":1"] * 7 + ["bad host:1"]}}
    status, body = call(hub, "PUT", path, admin, hubs)
    assert status == 400 and "'hubs'" in body["error"]  # each entry is checked
    huge = {"version": 1, "desired": {"wifi_ssid": "x" * 4200}}
    status, body = call(hub, "PUT", path, admin, huge)
    assert status == 413 and "limit is 4096 bytes" in body["error"]
    for desired, words in (
        ({"period_s": -1}, "'period_s' must be a whole number from 1 to 86400"),
        ({"warp": 9}, "unknown setting 'warp'"),
        ({"wifi_password": "x"}, "credentials"),
    ):
        status, body = call(hub, "PUT", path, admin, {"version": 1, "desired": desired})
        assert status == 400 and words in body["error"], body
    for bad in ({"desired": {}}, {"version": "1", "desired": {}}, {"version": 1}, [1]):
        assert call(hub, "PUT", path, admin, bad)[0] == 400
    status, body = call(hub, "PUT", path, admin, {"version": 1, "desired": {}, "x": 1})
    assert status == 400 and "unknown field 'x'" in body["error"]
    status, body = call(hub, "GET", path, admin)
    assert (body["version"], body["desired"]) == (1, {"meta_s": 60})


def test_groups_listing_and_group_documents(secure_hub: HubProcess) -> None:
    """Groups list with their size and document; an admin sets a group's document, which its
    devices inherit; a token for one device may not list groups."""
    hub = secure_hub
    provision(hub, "api-d3")
    provision(hub, "api-d4")
    assert (
        hub_cli(hub.data_dir, "group", "add", "pair", "--devices", "api-d3,api-d4").returncode == 0
    )
    admin = token(hub, "--admin")
    reader = token(hub, "--subscribe", "d/+/t/+")
    status, body = call(
        hub, "PUT", "/api/groups/pair/desired", admin, {"version": 0, "desired": {"meta_s": 120}}
    )
    assert status == 200 and body["version"] == 1
    assert (
        call(hub, "PUT", "/api/groups/pair/desired", reader, {"version": 1, "desired": {}})[0]
        == 403
    )
    status, body = call(hub, "GET", "/api/groups", reader)
    assert status == 200
    (group,) = body["groups"]
    assert (group["name"], group["kind"], group["size"], group["desired"]) == (
        "pair",
        "devices",
        2,
        {"meta_s": 120},
    )
    status, body = call(hub, "GET", "/api/groups/pair/desired", reader)
    assert body["members"] == ["api-d3", "api-d4"] and body["version"] == 1
    status, body = call(hub, "GET", "/api/devices/api-d4/state", reader)
    assert body["desired"] == {"meta_s": 120} and body["groups"] == ["pair"]
    assert body["sources"] == {"meta_s": "group:pair"}
    assert call(hub, "GET", "/api/groups/none/desired", reader)[0] == 404
    one = token(hub, "--subscribe", "d/api-d3/t/+")
    assert call(hub, "GET", "/api/groups", one)[0] == 403
