"""Logging in and out of the console in a real browser: errors, throttling, next, logout."""

from __future__ import annotations

import re

from playwright.sync_api import Page, expect

from tests.browser.console import add_user, assert_no_script_ran, login, ms
from tests.support.hubproc import HubProcess


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
    # The tab left open on the ended session is sent to the login page by its next API call.
    other.evaluate("() => { hub.api('/api/devices'); }")
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
