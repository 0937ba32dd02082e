"""The web MQTT client page in a real browser, against a hub with security on."""

from __future__ import annotations

from playwright.sync_api import Page, expect

from tests.browser.conftest import save_screenshot
from tests.browser.test_dashboard import _token, ms
from tests.support.hubproc import HubProcess


def test_client_subscribes_publishes_and_sees_its_own_message(
    secure_hub: HubProcess, page: Page
) -> None:
    """With a scoped token: subscribe, publish, see the message as text, JSON and hex; a
    subscription outside the token's scope is shown as refused."""
    token = _token(secure_hub, "--subscribe", "lab/#", "--publish", "lab/#")
    page.goto(secure_hub.http_url + "/client")
    expect(page.locator("#url")).to_have_value(f"ws://127.0.0.1:{secure_hub.ws_port}/mqtt")
    page.fill("#password", token)
    page.click("#connect")
    expect(page.locator("#status")).to_have_text("connected", timeout=ms(10))
    page.fill("#sub-filter", "lab/#")
    page.click("#subscribe")
    expect(page.locator('#subscriptions li[data-filter="lab/#"]')).to_have_text(
        "lab/#: granted QoS 1", timeout=ms(5)
    )
    page.fill("#sub-filter", "d/#")
    page.click("#subscribe")
    expect(page.locator('#subscriptions li[data-filter="d/#"]')).to_contain_text(
        "refused", timeout=ms(5)
    )
    page.fill("#pub-topic", "lab/hello")
    page.fill("#pub-payload", '{"a": 1}')
    page.check("#pub-retain")
    page.click("#publish")
    message = page.locator('#messages li[data-topic="lab/hello"]').first
    expect(message.locator(".payload")).to_have_text('{"a": 1}', timeout=ms(5))
    expect(message.locator(".meta")).to_contain_text("QoS 1")
    page.select_option("#view", "json")
    expect(message.locator(".payload")).to_have_text('{\n  "a": 1\n}')
    page.select_option("#view", "hex")
    expect(message.locator(".payload")).to_have_text("7b 22 61 22 3a 20 31 7d")
    save_screenshot(page, "client")


def test_refused_login_shows_an_error(secure_hub: HubProcess, page: Page) -> None:
    """A wrong token is refused and the page says why."""
    page.goto(secure_hub.http_url + "/client")
    expect(page.locator("#url")).not_to_have_value("", timeout=ms(5))
    page.fill("#password", "v1.not.valid")
    page.click("#connect")
    expect(page.locator("#status")).to_have_text("refused", timeout=ms(10))
    expect(page.locator("#status-detail")).to_contain_text("bad user name or password")
    expect(page.locator("#subscribe")).to_be_disabled()
