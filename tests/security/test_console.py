"""The console's logins, sessions and roles against a real hub, over real HTTP and MQTT."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from http.cookies import Morsel, SimpleCookie
from pathlib import Path

import pytest
import websockets

from hub.web.app import ROUTES
from hub.web.auth import Access
from tests.security.conftest import with_accounts
from tests.security.test_access import Events, token
from tests.support.console import PASSWORD, Console
from tests.support.hubproc import HubProcess, provision, scaled, start_hub
from tests.support.mqtt import RawClient

PAGES = {"/", "/client", "/devices/{id}", "/rollouts"}


def run(coro):  # type: ignore[no-untyped-def]
    return asyncio.run(coro)


def example_path(path: str, device: str = "ghost", name: str = "nobody") -> str:
    return path.replace("{id}", device).replace("{name}", name).replace("{cid}", "1")


def session_cookie(console: Console) -> Morsel[str]:
    """The hub_session cookie the last response set, with its attributes."""
    cookie: SimpleCookie = SimpleCookie()
    for header in console.set_cookie:
        cookie.load(header)
    return cookie["hub_session"]


def test_login_session_and_logout(console_hub: HubProcess) -> None:
    """A login sets an HttpOnly, SameSite=Strict cookie (not Secure over http); the session
    opens the pages and /api/session; logout needs the CSRF token, ends it and clears it."""

    async def scenario() -> None:
        browser = Console.http(console_hub)
        reply = await browser.login("otto")
        assert reply.status == 200
        body = reply.json()
        assert (body["name"], body["role"]) == ("otto", "operator") and len(body["csrf"]) >= 32
        cookie = session_cookie(browser)
        assert (cookie["httponly"], cookie["samesite"], cookie["path"]) == (True, "Strict", "/")
        assert not cookie["secure"]
        session = await browser.request("GET", "/api/session")
        info = session.json()
        assert (info["name"], info["role"], info["csrf"]) == ("otto", "operator", browser.csrf)
        now = time.time()
        assert now < info["idle_expires"] <= info["expires"] <= now + 12 * 3600 + 5
        assert (await browser.request("GET", "/")).status == 200
        assert (await browser.request("GET", "/client")).status == 200
        refused = await browser.request("POST", "/api/logout", csrf=False)
        assert refused.status == 403 and "CSRF" in refused.error
        out = await browser.request("POST", "/api/logout")
        assert out.status == 204
        assert any("hub_session=" in h and "max-age=0" in h.lower() for h in browser.set_cookie)
        assert (await browser.request("GET", "/api/session")).status == 401
        page = await browser.request("GET", "/")
        assert page.status == 303 and page.headers["Location"] == "/login?next=/"

    run(scenario())


def test_login_refuses_another_sites_origin(console_hub: HubProcess) -> None:
    """POST /api/login with a foreign Origin is refused; the hub's own origin is fine."""

    async def scenario() -> None:
        browser = Console.http(console_hub)
        body = {"name": "vera", "password": PASSWORD}
        foreign = await browser.request(
            "POST", "/api/login", body, headers={"Origin": "http://evil.example"}
        )
        assert foreign.status == 403 and "another site" in foreign.error
        own = await browser.request(
            "POST", "/api/login", body, headers={"Origin": console_hub.http_url}
        )
        assert own.status == 200

    run(scenario())


def test_csrf_token_is_required_for_cookie_changes(console_hub: HubProcess) -> None:
    """A cookie-authenticated POST without X-CSRF-Token, or with a wrong one, gets 403; with
    the right one it reaches the handler; a Bearer request needs none."""

    async def scenario() -> None:
        admin = Console.http(console_hub)
        assert (await admin.login("ada")).status == 200
        body = {"id": "csrf-dev", "allow_insecure": True}
        missing = await admin.request("POST", "/api/devices", body, csrf=False)
        assert missing.status == 403 and "X-CSRF-Token" in missing.error
        wrong = await admin.request(
            "POST", "/api/devices", body, csrf=False, headers={"X-CSRF-Token": "x" * 43}
        )
        assert wrong.status == 403
        right = await admin.request("POST", "/api/devices", body)
        assert right.status == 201 and right.json()["id"] == "csrf-dev"
        bearer = await Console.http(console_hub).request(
            "DELETE", "/api/devices/csrf-dev", token=token(console_hub, "--admin")
        )
        assert bearer.status == 204

    run(scenario())


@pytest.mark.parametrize(
    ("name", "command", "manage"), [("vera", 403, 403), ("otto", 504, 403), ("ada", 504, 201)]
)
def test_each_role_over_the_http_api(
    console_hub: HubProcess, name: str, command: int, manage: int
) -> None:
    """A viewer reads; an operator also commands (504: the device is offline, past the role
    check); only an admin adds devices and lists accounts."""
    provision(console_hub, f"role-{name}")

    async def scenario() -> None:
        browser = Console.http(console_hub)
        assert (await browser.login(name)).status == 200
        devices = await browser.request("GET", "/api/devices")
        assert devices.status == 200 and f"role-{name}" in {d["id"] for d in devices.json()}
        telemetry = await browser.request("GET", f"/api/devices/role-{name}/telemetry")
        assert telemetry.status == 200 and telemetry.json() == []
        sent = await browser.request(
            "POST", f"/api/devices/role-{name}/commands?timeout=0.2", {"op": "ping"}
        )
        assert sent.status == command, sent.body
        added = await browser.request("POST", "/api/devices", {"id": f"new-{name}"})
        assert added.status == manage
        users = await browser.request("GET", "/api/users")
        assert users.status == (200 if name == "ada" else 403)

    run(scenario())


@pytest.mark.parametrize("name", ["vera", "otto", "ada"])
def test_each_roles_mqtt_token(console_hub: HubProcess, name: str) -> None:
    """/api/hub gives a 10-minute token scoped to the role: everyone reads the fleet, the
    operator and admin also command devices, only the admin reads hub events."""
    role = {"vera": "viewer", "otto": "operator", "ada": "admin"}[name]

    async def scenario() -> None:
        browser = Console.http(console_hub)
        assert (await browser.login(name)).status == 200
        info = (await browser.request("GET", "/api/hub")).json()
        assert (info["ws_path"], info["username"], info["role"], info["name"]) == (
            "/mqtt",
            "token",
            role,
            name,
        )
        assert "ws_port" not in info and info["topics"]["command"] == "d/{device}/c"
        assert time.time() + 500 < info["token_expires"] <= time.time() + 601
        spy, code = await _mqtt(console_hub, "spy", token(console_hub, "--admin"))
        assert code == 0 and await spy.subscribe([("d/+/c", 1)]) == [1]
        client, code = await _mqtt(console_hub, f"console-{name}", info["token"])
        assert code == 0
        granted = await client.subscribe(
            [("d/+/t/+", 0), ("d/+/s", 0), ("d/+/m", 0), ("d/+/r", 0), ("$hub/events/#", 0)]
        )
        assert granted == [0, 0, 0, 0, 0 if role == "admin" else 0x80]
        await client.publish("d/tgt/c", b'{"op":"ping"}', qos=1)
        if role == "viewer":
            await spy.recv_nothing(scaled(1))
        else:
            assert (await spy.next_message(scaled(3))).topic == "d/tgt/c"
        await client.close()
        await spy.close()

    run(scenario())


async def _mqtt(hub: HubProcess, client_id: str, tok: str) -> tuple[RawClient, int]:
    client = await RawClient.websocket(hub.ws_url)
    _, code = await client.connect(client_id, username="token", password=tok)
    return client, code


def test_anonymous_requests_to_every_route_are_refused(console_hub: HubProcess) -> None:
    """Without a session or token, every route of the app's table that is not open refuses:
    pages redirect to /login, API calls get 401 with a JSON error."""
    checked = 0

    async def scenario() -> None:
        nonlocal checked
        anonymous = Console.http(console_hub)
        for route in ROUTES:
            if route.access is Access.OPEN:
                continue
            path = example_path(route.path)
            reply = await anonymous.request(route.method, path, {"op": "ping"})
            if route.path in PAGES:
                assert reply.status == 303, route
                assert reply.headers["Location"] == f"/login?next={path}"
            else:
                assert reply.status == 401, (route, reply.status, reply.body)
                assert reply.headers["Content-Type"].startswith("application/json")
                assert reply.error
            checked += 1

    run(scenario())
    assert checked >= 20


def test_security_headers_on_every_page(console_hub: HubProcess) -> None:
    """Pages, scripts, libraries, API answers and errors all carry the strict CSP and the
    other security headers; the CSP allows WebSockets to the hub's own origin only."""
    host = f"{console_hub.host}:{console_hub.http_port}"
    csp = (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        f"connect-src 'self' ws://{host} wss://{host}; font-src 'self'; base-uri 'none'; "
        "form-action 'self'; object-src 'none'; frame-ancestors 'none'"
    )

    async def scenario() -> None:
        browser = Console.http(console_hub)
        assert (await browser.login("vera")).status == 200
        paths = [
            "/",
            "/client",
            "/login",
            "/static/dashboard.js",
            "/vendor/mqtt.min.js",
            "/api/devices",
            "/api/hub",
            "/api/session",
            "/nope",
            "/mqtt",
        ]
        for path in paths:
            reply = await browser.request("GET", path)
            assert reply.headers["Content-Security-Policy"] == csp, path
            assert reply.headers["X-Content-Type-Options"] == "nosniff", path
            assert reply.headers["Referrer-Policy"] == "no-referrer", path
            assert reply.headers["X-Frame-Options"] == "DENY", path
            if reply.status >= 400:
                assert reply.error, path
        login = await browser.login("vera")
        assert login.headers["Content-Security-Policy"] == csp

    run(scenario())


@pytest.fixture
def throttled_hub(tmp_path: Path) -> Iterator[HubProcess]:
    process = start_hub(with_accounts(tmp_path / "data"), secure=True)
    yield process
    process.stop()


def test_wrong_passwords_are_throttled_and_reported(throttled_hub: HubProcess) -> None:
    """A wrong name and a wrong password get the same 401; after five failures the account
    and the address get 429 with Retry-After, even with the right password; each failure is
    a login_failure event with the name tried and the peer, never the password."""
    hub = throttled_hub

    async def scenario() -> None:
        events = await Events.watch(hub)
        browser = Console.http(hub)
        unknown = await browser.login("nobody", "guess-number-0")
        assert unknown.status == 401
        for attempt in range(1, 5):
            reply = await browser.login("vera", f"guess-number-{attempt}")
            assert reply.status == 401 and reply.error == unknown.error
        seen = []
        for _ in range(5):
            topic, body = await events.expect("login_failure")
            seen.append((topic, body))
        assert seen[0][0] == "$hub/events/account/nobody/warning"
        assert {b["name"] for _, b in seen} == {"nobody", "vera"}
        assert all(b["peer"] == "127.0.0.1" for _, b in seen)
        assert not any("guess-number" in json.dumps(b) for _, b in seen)
        refused = await browser.login("vera", PASSWORD)
        assert refused.status == 429
        retry = int(refused.headers["Retry-After"])
        assert retry >= 1 and refused.json()["retry_after"] == retry
        _, body = await events.expect("login_failure", name="vera")
        assert body["reason"] == "throttled"
        other = await browser.login("ada", PASSWORD)  # same address: throttled too
        assert other.status == 429

    run(scenario())


@pytest.fixture
def short_sessions_hub(tmp_path: Path) -> Iterator[HubProcess]:
    process = start_hub(
        with_accounts(tmp_path / "data"), "--session-idle", "1", "--session-max", "3", secure=True
    )
    yield process
    process.stop()


def test_sessions_expire_when_idle_and_after_their_maximum(short_sessions_hub: HubProcess) -> None:
    """With --session-idle 1 --session-max 3: an unused session ends after a second; one used
    all the time lives past its idle limit but ends at its maximum."""
    hub = short_sessions_hub

    async def poll_until_refused(browser: Console, every: float) -> float:
        start = time.monotonic()
        deadline = start + scaled(10)
        while (await browser.request("GET", "/api/session")).status == 200:
            assert time.monotonic() < deadline, "the session did not expire"
            await asyncio.sleep(every)
        return time.monotonic() - start

    async def scenario() -> None:
        idle = Console.http(hub)
        assert (await idle.login("vera")).status == 200
        await asyncio.sleep(1.2)  # let it idle past its limit
        assert (await idle.request("GET", "/api/session")).status == 401
        busy = Console.http(hub)
        assert (await busy.login("vera")).status == 200
        lived = await poll_until_refused(busy, 0.2)
        assert lived > 1.5  # used every 0.2 s, it outlived the idle limit
        assert (await busy.request("GET", "/")).status == 303

    run(scenario())


def test_public_view_only_when_configured(tmp_path: Path) -> None:
    """--public-view shows /, /api/hub (a viewer token), the device list and telemetry without
    a login, and logs a warning; nothing else opens."""
    data = with_accounts(tmp_path / "data")
    log = (tmp_path / "hub.log").open("w+")
    hub = start_hub(data, "--public-view", secure=True, stderr=log)
    try:
        provision(hub, "pub-1")

        async def scenario() -> None:
            anonymous = Console.http(hub)
            assert (await anonymous.request("GET", "/")).status == 200
            info = await anonymous.request("GET", "/api/hub")
            assert info.status == 200 and info.json()["role"] == "viewer"
            assert (await anonymous.request("GET", "/api/devices")).status == 200
            history = await anonymous.request("GET", "/api/devices/pub-1/telemetry")
            assert history.status == 200
            for method, path in [
                ("GET", "/client"),
                ("GET", "/api/session"),
                ("GET", "/api/users"),
                ("POST", "/api/devices/pub-1/commands"),
                ("POST", "/api/devices/pub-1/disable"),
            ]:
                reply = await anonymous.request(method, path, {"op": "ping"})
                assert reply.status in (303, 401), (path, reply.status)

        run(scenario())
    finally:
        hub.stop()
    log.seek(0)
    assert "PUBLIC VIEW" in log.read()


def test_a_login_flood_is_bounded(throttled_hub: HubProcess) -> None:
    """Of many simultaneous logins, at most a few are checked at once: the rest get 429 with
    Retry-After at once instead of queueing for the password hasher."""

    async def scenario() -> None:
        browsers = [Console.http(throttled_hub) for _ in range(30)]
        replies = await asyncio.gather(*(b.login("vera") for b in browsers))
        statuses = [r.status for r in replies]
        assert set(statuses) <= {200, 429} and 200 in statuses
        busy = [r for r in replies if r.status == 429]
        assert busy and all("at once" in r.error and r.headers["Retry-After"] for r in busy)

    run(scenario())


def test_the_session_cookie_opens_nothing_on_mqtt(console_hub: HubProcess) -> None:
    """/mqtt ignores the console's cookie: a WebSocket client that sends an admin's session
    cookie but no MQTT credentials is refused like any other."""

    async def scenario() -> None:
        admin = Console.http(console_hub)
        assert (await admin.login("ada")).status == 200
        client = RawClient()
        client._ws = await websockets.connect(
            console_hub.ws_url,
            subprotocols=[websockets.Subprotocol("mqtt")],
            additional_headers={"Cookie": f"hub_session={admin.cookie}"},
        )
        _, code = await client.connect("cookie-only")
        assert code == 4
        await client.close()

    run(scenario())
