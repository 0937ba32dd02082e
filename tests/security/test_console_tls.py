"""The console over https once TLS is set up: pages, API and cookies on the wss port, and
what the plain HTTP port still does."""

from __future__ import annotations

import asyncio
from http.cookies import SimpleCookie

import websockets

from tests.security.test_access import token
from tests.support.console import Console, https_context
from tests.support.hubproc import HubProcess
from tests.support.mqtt import RawClient


def test_https_console_sets_a_secure_cookie(console_tls_hub: HubProcess) -> None:
    """Over https the login's cookie is Secure, HttpOnly and SameSite=Strict; the pages, the
    session and /api/hub work there, and the CSP names the https origin's wss."""
    hub = console_tls_hub

    async def scenario() -> None:
        browser = Console.https(hub)
        assert (await browser.login("ada")).status == 200
        cookie: SimpleCookie = SimpleCookie()
        for header in browser.set_cookie:
            cookie.load(header)
        morsel = cookie["hub_session"]
        assert (morsel["secure"], morsel["httponly"], morsel["samesite"]) == (True, True, "Strict")
        page = await browser.request("GET", "/")
        assert page.status == 200
        assert f"wss://localhost:{hub.wss_port}" in page.headers["Content-Security-Policy"]
        assert (await browser.request("GET", "/api/session")).json()["name"] == "ada"
        info = (await browser.request("GET", "/api/hub")).json()
        assert "ws_port" not in info and info["ws_path"] == "/mqtt"
        added = await browser.request("POST", "/api/devices", {"id": "tls-added"})
        assert added.status == 201

    asyncio.run(scenario())


def test_the_page_token_logs_in_on_wss_of_the_same_origin(console_tls_hub: HubProcess) -> None:
    """The https page's MQTT URL is wss://<its own host:port>/mqtt: the token from /api/hub
    logs in there."""
    hub = console_tls_hub

    async def scenario() -> None:
        browser = Console.https(hub)
        assert (await browser.login("vera")).status == 200
        info = (await browser.request("GET", "/api/hub")).json()
        client = RawClient()
        client._ws = await websockets.connect(
            f"wss://localhost:{hub.wss_port}{info['ws_path']}",
            ssl=https_context(hub),
            subprotocols=[websockets.Subprotocol("mqtt")],
        )
        assert await client.connect("page-1", username="token", password=info["token"]) == (
            False,
            0,
        )
        await client.close()

    asyncio.run(scenario())


def test_plain_http_redirects_pages_and_refuses_cookie_changes(
    console_tls_hub: HubProcess,
) -> None:
    """With TLS set up, the plain port redirects pages to the https console, refuses logins
    and cookie-authenticated changes, and still serves Bearer scripts."""
    hub = console_tls_hub
    secure = f"https://127.0.0.1:{hub.wss_port}"

    async def scenario() -> None:
        plain = Console.http(hub)
        for path in ("/", "/client", "/login?next=/client"):
            reply = await plain.request("GET", path)
            assert reply.status == 307 and reply.headers["Location"] == secure + path, path
        login = await plain.login("ada")
        assert login.status == 403 and "https" in login.error
        browser = Console.https(hub)
        assert (await browser.login("ada")).status == 200
        plain.cookie, plain.csrf = browser.cookie, browser.csrf  # a cookie sent over http
        refused = await plain.request("POST", "/api/devices", {"id": "over-http"})
        assert refused.status == 403 and "https" in refused.error
        reads = await plain.request("GET", "/api/devices", token=token(hub, "--admin"))
        assert reads.status == 200
        added = await plain.request(
            "POST", "/api/devices", {"id": "by-script"}, token=token(hub, "--admin"), cookie=False
        )
        assert added.status == 201

    asyncio.run(scenario())
