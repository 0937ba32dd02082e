"""Hostile HTTP input to every route of the app's table: never a 500, always a clear error."""

from __future__ import annotations

import asyncio

from hub.web.app import ROUTES
from tests.security.test_access import token
from tests.support.console import Console, Reply
from tests.support.hubproc import HubProcess, provision

QUERIES = [
    "?limit=nan",
    "?limit=inf",
    "?limit=-inf",
    "?limit=1e999",
    "?limit=99999999999999999999999999999",
    "?since=nan&until=inf",
    "?since=1e308&until=-1e308",
    "?timeout=nan",
    "?timeout=1e999",
    "?sensor=" + "x" * 5000,
    "?sensor=%ff%fe",
    "?limit=" + "9" * 6000,
]
BODIES: list[tuple[bytes, str]] = [
    (b"[" * 100_000, "application/json"),  # deeper than any parser, and over the size limit
    (b"[" * 50_000, "application/json"),  # under the size limit, too deep to parse
    (b'{"op": ' * 20_000 + b"1" + b"}" * 20_000, "application/json"),
    (b"\xff\xfe\x00{not utf-8", "application/json"),
    (b'{"op": "ping", "id": "x"}', "text/plain"),
    (b"op=ping", "application/x-www-form-urlencoded"),
    (b"x" * 200_000, "application/json"),
    (b'["ping"]', "application/json"),
    (b"null", "application/json"),
    (b'{"name": 1, "password": [], "id": {}, "role": null, "tls_policy": 7}', "application/json"),
    (b"", "application/json"),
]
PATH_VALUES = ["known", "%ff", "x" * 300, "a%2Fb"]


def _check(reply: Reply, what: str) -> None:
    # 503 only for a page or library the set-up step has not installed (login.html comes
    # with the console pages); an input never causes a 5xx.
    assert reply.status < 500 or (reply.status == 503 and "not installed" in reply.error), (
        what,
        reply.status,
        reply.body[:200],
    )
    if reply.status >= 400:
        assert reply.headers["Content-Type"].startswith("application/json"), what
        assert reply.error, what


def test_no_route_answers_hostile_input_with_a_500(console_hub: HubProcess) -> None:
    """Every route (with an admin token, and with an admin's session) answers non-finite and
    huge numbers, oversized query strings and bodies, deep nesting, non-UTF-8 bodies and wrong
    content types with a 4xx JSON error (or success), never a 500."""
    provision(console_hub, "known")
    admin = token(console_hub, "--admin")
    # Deleting comes last, so the other routes meet a registered device.
    routes = sorted(ROUTES, key=lambda r: r.method == "DELETE")

    async def scenario() -> None:
        client = Console.http(console_hub)
        session = Console.http(console_hub)
        assert (await session.login("ada")).status == 200
        for route in routes:
            paths = {
                route.path.replace("{id}", v).replace("{name}", v).replace("{cid}", v)
                for v in PATH_VALUES
            }
            if route.method == "DELETE":
                paths.discard(route.path.replace("{id}", "known"))  # the other cases' device
            for path in sorted(paths):
                for query in QUERIES:
                    what = f"{route.method} {path}{query[:30]}"
                    _check(await client.request(route.method, path + query, token=admin), what)
                for raw, ctype in BODIES:
                    what = f"{route.method} {path} body {raw[:20]!r} {ctype}"
                    for browser, bearer in ((client, admin), (session, None)):
                        reply = await browser.request(
                            route.method,
                            path,
                            raw=raw,
                            token=bearer,
                            headers={"Content-Type": ctype},
                        )
                        _check(reply, what)
                        if route.path != "/api/logout":
                            continue
                        assert (await session.login("ada")).status == 200  # logged out: again

    asyncio.run(scenario())


def test_oversized_request_lines_are_refused(console_hub: HubProcess) -> None:
    """A query string past the HTTP parser's line limit is refused with a 4xx."""

    async def scenario() -> None:
        reply = await Console.http(console_hub).request(
            "GET", "/api/devices?sensor=" + "x" * 20_000
        )
        assert 400 <= reply.status < 500

    asyncio.run(scenario())


def test_each_malformed_body_gets_its_own_message(console_hub: HubProcess) -> None:
    """The command endpoint names what is wrong: size (413), nesting, encoding, JSON, type
    (400) and content type (415)."""
    provision(console_hub, "msgs")
    admin = token(console_hub, "--admin")
    cases = [
        (b"[" * 100_000, "application/json", 413),
        (b"[" * 50_000, "application/json", 400, "nested too deeply"),
        (b"\xff\xfe{}", "application/json", 400, "not UTF-8"),
        (b"{op", "application/json", 400, "not JSON"),
        (b"[]", "application/json", 400, "JSON object"),
        (b'{"op": "ping"}', "text/plain", 415, "application/json"),
    ]

    async def scenario() -> None:
        client = Console.http(console_hub)
        for raw, ctype, status, *message in cases:
            reply = await client.request(
                "POST",
                "/api/devices/msgs/commands?timeout=nan",
                raw=raw,
                token=admin,
                headers={"Content-Type": ctype},
            )
            assert reply.status == status, (raw[:10], reply.body)
            assert not message or message[0] in reply.error
        reply = await client.request("GET", "/api/devices/msgs/telemetry?limit=inf", token=admin)
        assert reply.status == 400 and "limit must be a number" in reply.error

    asyncio.run(scenario())
