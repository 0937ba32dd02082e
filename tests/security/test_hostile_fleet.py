"""Hostile input to the fleet console's endpoints (fleet, series, health, history, commands,
alarms): a clear 4xx JSON error, never a 500; and who may do what with alarms and commands."""

from __future__ import annotations

import asyncio
from pathlib import Path

from tests.security.test_access import token
from tests.support.console import Console, Reply
from tests.support.hubproc import HubProcess, provision, start_hub

BAD_READS = [
    "/api/fleet?limit=0",
    "/api/fleet?limit=501",
    "/api/fleet?offset=1e300",
    "/api/fleet?offset=-5",
    "/api/fleet?state=%ff",
    "/api/fleet?sort=" + "x" * 3000,
    "/api/fleet?tls=none",
    "/api/fleet?limit=1&limit=2&colour=1",
    "/api/devices/target/series?points=0",
    "/api/devices/target/series?points=10001",
    "/api/devices/target/series?points=2.5",
    "/api/devices/target/series?since=5&until=5",
    "/api/devices/target/series?since=-1e300&until=1e300",
    "/api/devices/target/series?" + "&".join(f"sensor=s{i}" for i in range(40)),
    "/api/devices/target/series?sensor=../../etc",
    "/api/devices/target/health?until=nan",
    "/api/devices/target/health?points=-1",
    "/api/devices/target/history?limit=1001",
    "/api/devices/target/history?limit=abc",
    "/api/devices/target/commands/99999999999999999999",
    "/api/devices/target/commands/-1",
    "/api/alarms?state=everything",
]
BAD_RULES = [
    {"name": "x" * 65, "kind": "offline", "threshold": 1},
    {"name": "x", "kind": "offline", "threshold": 1e400},
    {"name": "x", "kind": "offline", "threshold": "1"},
    {"name": "x", "kind": "above", "sensor": "t" * 40, "threshold": 1},
    {"name": "x", "kind": "offline", "threshold": 1, "scope": {"device": "a", "board": "b"}},
    {"name": "x", "kind": "offline", "threshold": 1, "scope": [1]},
    {"name": "x", "kind": "offline", "threshold": 1, "for_s": -1},
    {"name": ["x"], "kind": "offline", "threshold": 1},
    {"name": "x", "kind": "offline", "threshold": 10**400},
]


def _client_error(reply: Reply, what: str) -> None:
    assert 400 <= reply.status < 500, (what, reply.status, reply.body[:200])
    assert reply.headers["Content-Type"].startswith("application/json") and reply.error, what


def test_bad_parameters_and_bodies_get_4xx(console_hub: HubProcess) -> None:
    """Out-of-range, non-numeric, repeated and oversized parameters, bad rules and bad ids
    on the new endpoints are refused with a JSON 4xx."""
    provision(console_hub, "target")
    admin = token(console_hub, "--admin")

    async def scenario() -> None:
        client = Console.http(console_hub)
        for path in BAD_READS:
            _client_error(await client.request("GET", path, token=admin), path)
        for rule in BAD_RULES:
            reply = await client.request("POST", "/api/alarms/rules", rule, token=admin)
            _client_error(reply, str(rule)[:60])
        for path in ("/api/alarms/x/ack", "/api/alarms/1e3/ack", "/api/alarms/77/ack"):
            _client_error(await client.request("POST", path, token=admin), path)
        for path in ("/api/alarms/rules/abc", "/api/alarms/rules/123456"):
            _client_error(await client.request("DELETE", path, token=admin), path)
        bad_commands = [
            ("?wait=0&ttl=0", {"op": "ping"}),
            ("?wait=0&ttl=1e9", {"op": "ping"}),
            ("?wait=yes", {"op": "ping"}),
            ("?wait=0", {"op": "x" * 65}),
            ("?wait=0", {"op": 5}),
            ("?wait=0", {"op": "ping\u0000"}),
        ]
        for query, body in bad_commands:
            path = "/api/devices/target/commands" + query
            _client_error(await client.request("POST", path, body, token=admin), query)

    asyncio.run(scenario())


def test_roles_on_alarms_and_pending_commands(console_hub: HubProcess) -> None:
    """A viewer reads alarms and rules but may not add rules or command; an operator may
    send a pending command but not add a rule; anonymous callers get 401."""
    provision(console_hub, "roles-1")

    async def scenario() -> None:
        viewer, operator, anonymous = (Console.http(console_hub) for _ in range(3))
        assert (await viewer.login("vera")).status == 200
        assert (await operator.login("otto")).status == 200
        rule = {"name": "r", "kind": "offline", "threshold": 5}
        assert (await viewer.request("GET", "/api/alarms/rules")).status == 200
        assert (await viewer.request("GET", "/api/alarms")).status == 200
        assert (await viewer.request("POST", "/api/alarms/rules", rule)).status == 403
        assert (await operator.request("POST", "/api/alarms/rules", rule)).status == 403
        path = "/api/devices/roles-1/commands?wait=0"
        assert (await viewer.request("POST", path, {"op": "ping"})).status == 403
        sent = await operator.request("POST", path, {"op": "ping"})
        assert sent.status == 202 and sent.json()["status"] == "pending"
        assert sent.json()["online"] is False
        command = await viewer.request("GET", f"/api/devices/roles-1/commands/{sent.json()['id']}")
        assert command.status == 200 and command.json()["by"] == "otto"
        for path in ("/api/fleet", "/api/alarms", "/api/devices/roles-1/series"):
            assert (await anonymous.request("GET", path)).status == 401, path

    asyncio.run(scenario())


def test_public_view_shows_state_and_charts_but_no_history_or_alarms(tmp_path: Path) -> None:
    """With --public-view anyone reads the fleet, a device, its series and health; its
    command and event history, commands and alarms still need a login."""
    hub = start_hub(tmp_path / "data", "--public-view", secure=True)
    try:
        provision(hub, "pub-2")

        async def scenario() -> None:
            anonymous = Console.http(hub)
            for path in (
                "/api/fleet",
                "/api/devices/pub-2",
                "/api/devices/pub-2/series",
                "/api/devices/pub-2/health",
            ):
                assert (await anonymous.request("GET", path)).status == 200, path
            for path in (
                "/api/devices/pub-2/history",
                "/api/devices/pub-2/commands/1",
                "/api/alarms",
                "/api/alarms/rules",
            ):
                assert (await anonymous.request("GET", path)).status == 401, path

        asyncio.run(scenario())
    finally:
        hub.stop()
