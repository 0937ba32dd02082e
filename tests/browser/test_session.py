"""Logging in and out of the console in a real browser: errors, throttling, next, logout."""

from __future__ import annotations

import contextlib
import re
import time
from pathlib import Path

from playwright.sync_api import Error as PlaywrightError
from playwright.sync_api import Page, Route, expect

from tests.browser.console import (
    add_user,
    assert_no_script_ran,
    logged_in,
    login,
    ms,
    register,
)
from tests.support.hubproc import HubProcess, start_hub


def test_pages_send_strangers_to_the_login_page(secure_hub: HubProcess, page: Page) -> None:
    """Without a session, the dashboard and the client go to the login page, which keeps
    where to go next; a wrong password is shown as an error and the page stays."""
    add_user(secure_hub, "ann", "viewer", "right-password-123")
    page.goto(secure_hub.http_url + "/client")
    expect(page).to_have_url(re.compile(r"/login\?next=(%2F|/)client$"), timeout=ms(10))
    page.fill("#name", "ann")
    page.fill("#password", "wrong-password-123")
    page.click("#login")
    expect(page.locator("#error")).to_be_visible(timeout=ms(10))
    expect(page.locator("#error")).not_to_be_empty()
    expect(page).to_have_url(re.compile(r"/login"))
    page.fill("#password", "right-password-123")
    page.click("#login")
    expect(page).to_have_url(secure_hub.http_url + "/client", timeout=ms(10))
    expect(page.locator("#who")).to_have_text("ann · viewer", timeout=ms(10))
    assert_no_script_ran(page)


def test_login_refuses_to_send_anyone_off_the_hub(secure_hub: HubProcess, page: Page) -> None:
    """A `next` that leads to another site lands on the dashboard instead."""
    add_user(secure_hub, "bob", "viewer", "right-password-456")
    for bad in ("//example.invalid/x", "https://example.invalid/", "/\\example.invalid"):
        page.goto("about:blank")  # the dashboard's own requests would go to /login meanwhile
        page.context.clear_cookies()
        page.goto(f"{secure_hub.http_url}/login?next={bad}")
        page.fill("#name", "bob")
        page.fill("#password", "right-password-456")
        page.click("#login")
        expect(page).to_have_url(secure_hub.http_url + "/", timeout=ms(10))


def test_repeated_wrong_passwords_are_throttled_with_the_wait_shown(
    secure_hub: HubProcess, page: Page
) -> None:
    """After too many wrong passwords the hub throttles logins and the page says how long to
    wait, with the button disabled meanwhile."""
    add_user(secure_hub, "cat", "viewer", "right-password-789")
    page.goto(secure_hub.http_url + "/login")
    error = page.locator("#error")
    for _ in range(30):
        page.fill("#name", "cat")
        page.fill("#password", "wrong")
        page.click("#login")
        expect(error).to_be_visible(timeout=ms(10))
        if "try again in" in error.inner_text():
            break
        expect(page.locator("#login")).to_be_enabled(timeout=ms(10))
    expect(error).to_contain_text(re.compile(r"try again in \d+ s"))
    expect(page.locator("#login")).to_be_disabled()


def test_logout_ends_the_session_for_good(secure_hub: HubProcess, page: Page) -> None:
    """Logout returns to the login page; the old session cookie no longer opens the
    dashboard or the API, and a page still open on the old session goes to /login on its next
    API call."""
    hub = secure_hub
    login(page, hub.http_url, "dan", add_user(hub, "dan", "admin"))
    expect(page.locator("#link")).to_have_text("live", timeout=ms(10))
    cookies = page.context.cookies()
    assert [c for c in cookies if c["name"] == "hub_session" and c["httpOnly"]]
    assert "hub_session" not in page.evaluate("document.cookie")
    other = page.context.new_page()  # a second tab on the same session
    other.goto(hub.http_url + "/")
    expect(other.locator("#who")).to_contain_text("dan", timeout=ms(10))

    page.click("#logout")
    expect(page).to_have_url(re.compile(r"/login"), timeout=ms(10))
    # The tab left open on the ended session is sent to the login page by its next API call
    # (its own refresh may make that call first: then it is on its way there already).
    if "/login" not in other.url:
        with contextlib.suppress(PlaywrightError):  # the page left for /login meanwhile
            other.evaluate("() => { if (window.hub) hub.api('/api/devices'); }")
    expect(other).to_have_url(re.compile(r"/login"), timeout=ms(10))

    # The old cookie, replayed, is refused.
    replay = page.context.browser.new_context()  # type: ignore[union-attr]
    try:
        replay.add_cookies(cookies)  # type: ignore[arg-type]
        answer = replay.request.get(hub.http_url + "/api/session")
        assert answer.status == 401
        answer = replay.request.get(hub.http_url + "/", max_redirects=0)
        assert answer.status == 303
        assert answer.headers["location"].startswith("/login")
    finally:
        replay.close()
    assert page.evaluate("localStorage.length + sessionStorage.length") == 0


def test_the_mqtt_token_is_renewed_before_it_expires(secure_hub: HubProcess, page: Page) -> None:
    """With the page's clock run forward past 80 % of the token's life, the client page asks
    /api/hub for a fresh token and puts it in place of the old one (in memory, not storage)."""
    page.clock.install()
    login(page, secure_hub.http_url, "eve", add_user(secure_hub, "eve", "viewer"), "/client")
    password = page.locator("#password")
    expect(password).not_to_have_value("", timeout=ms(10))
    old = password.input_value()
    with page.expect_request(lambda r: r.url.endswith("/api/hub"), timeout=ms(10)):
        page.clock.fast_forward("09:00")
    expect(password).not_to_have_value(old, timeout=ms(10))
    assert password.input_value().startswith(old.split(".")[0])  # a token of the same kind
    assert page.evaluate("localStorage.length + sessionStorage.length") == 0


def test_public_view_shows_the_fleet_without_a_login(tmp_path: Path, page: Page) -> None:
    """With `hub serve --public-view` the dashboard opens without a login, read-only: the
    fleet is there, with a login link instead of a logout button and no command form."""
    hub = start_hub(tmp_path / "hub-data", "--public-view", secure=True)
    try:
        register(hub, "pub-1")
        page.goto(hub.http_url + "/")
        expect(page).to_have_url(hub.http_url + "/")
        expect(page.locator("#who")).to_have_text("public view", timeout=ms(10))
        expect(page.locator("#link")).to_have_text("live", timeout=ms(10))
        expect(page.locator('#fleet li[data-device="pub-1"]')).to_be_visible(timeout=ms(10))
        expect(page.locator("#login-link")).to_be_visible()
        expect(page.locator("#logout")).to_be_hidden()
        for gone in ("#command-form", "#devices-panel", "#events-panel"):
            expect(page.locator(gone)).to_have_count(0)
        assert_no_script_ran(page)
    finally:
        hub.stop()


def test_a_browser_clock_an_hour_ahead_does_not_renew_in_a_loop(
    secure_hub: HubProcess, page: Page
) -> None:
    """With the browser's clock an hour ahead of the hub's, the token (valid for 10 minutes by
    the hub's clock) is not taken for expired: no renewal in the first minute, one by the
    ninth."""
    page.clock.install(time=time.time() + 3600)
    login(page, secure_hub.http_url, "fay", add_user(secure_hub, "fay", "viewer"), "/client")
    expect(page.locator("#password")).not_to_have_value("", timeout=ms(10))
    asked: list[str] = []
    page.on("request", lambda r: asked.append(r.url) if r.url.endswith("/api/hub") else None)
    page.clock.fast_forward("01:00")
    page.wait_for_function("() => true")  # let the page run what the minute made due
    assert asked == []
    with page.expect_request(lambda r: r.url.endswith("/api/hub"), timeout=ms(10)):
        page.clock.fast_forward("08:00")


def test_a_refused_token_is_replaced_at_once(secure_hub: HubProcess, page: Page) -> None:
    """When the hub refuses the dashboard's MQTT token (as after sleeping past its expiry;
    here the first token's signature is spoilt on its way), the page asks /api/hub for a fresh
    one at once and goes live."""
    spoilt: list[str] = []

    def spoil_first(route: Route) -> None:
        response = route.fetch()
        body = response.json()
        if not spoilt:
            spoilt.append(body["token"])
            body["token"] = body["token"][:-4] + (
                "AAAA" if body["token"][-4:] != "AAAA" else "BBBB"
            )
        route.fulfill(response=response, json=body)

    page.route("**/api/hub", spoil_first)
    logged_in(page, secure_hub, "viewer")
    expect(page.locator("#link")).to_contain_text("refused", timeout=ms(10))
    expect(page.locator("#link")).to_have_text("live", timeout=ms(15))
    assert spoilt
