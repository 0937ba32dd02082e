"""The web MQTT client page in a real browser: with the session's token or typed credentials."""

from __future__ import annotations

from playwright.sync_api import Page, expect

from hub.topics import status_topic
from tests.browser.conftest import save_screenshot
from tests.browser.console import MqttDevice, assert_no_script_ran, logged_in, ms, register
from tests.support.hubproc import HubProcess, hub_cli


def _token(hub: HubProcess, *args: str) -> str:
    result = hub_cli(hub.data_dir, "token", "create", *args)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip().splitlines()[-1]


def test_client_uses_the_session_token(secure_hub: HubProcess, page: Page) -> None:
    """Logged in as a viewer, the client is filled in with this origin's WebSocket URL and the
    session's MQTT token; it connects, gets a device's retained status, and a filter outside
    the viewer's scope is shown as refused."""
    hub = secure_hub
    with MqttDevice(hub, register(hub, "cli-1")) as dev:
        dev.publish(status_topic("cli-1"), "online", retain=True)
    logged_in(page, hub, "viewer", next_path="/client")
    expect(page.locator("#url")).to_have_value(f"ws://127.0.0.1:{hub.http_port}/mqtt")
    expect(page.locator("#username")).to_have_value("token")
    expect(page.locator("#password")).not_to_have_value("", timeout=ms(10))
    page.click("#connect")
    expect(page.locator("#status")).to_have_text("connected", timeout=ms(10))
    page.fill("#sub-filter", "d/+/s")
    page.click("#subscribe")
    expect(page.locator('#subscriptions li[data-filter="d/+/s"]')).to_contain_text(
        "granted", timeout=ms(5)
    )
    message = page.locator('#messages li[data-topic="d/cli-1/s"]').first
    expect(message.locator(".payload")).to_have_text("online", timeout=ms(5))
    expect(message.locator(".meta")).to_contain_text("retained")
    page.fill("#sub-filter", "$hub/events/#")
    page.click("#subscribe")
    expect(page.locator('#subscriptions li[data-filter="$hub/events/#"]')).to_contain_text(
        "refused", timeout=ms(5)
    )
    assert_no_script_ran(page)


def test_client_with_typed_credentials_publishes_and_sees_its_message(
    secure_hub: HubProcess, page: Page
) -> None:
    """With a scoped token typed in: subscribe, publish, see the message as text, JSON and
    hex; a subscription outside the token's scope is shown as refused."""
    hub = secure_hub
    token = _token(hub, "--subscribe", "lab/#", "--publish", "lab/#")
    logged_in(page, hub, "viewer", next_path="/client")
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
    assert_no_script_ran(page)


def test_refused_login_shows_an_error(secure_hub: HubProcess, page: Page) -> None:
    """A wrong token typed in is refused and the page says why."""
    logged_in(page, secure_hub, "viewer", next_path="/client")
    page.fill("#password", "v1.not.valid")
    page.click("#connect")
    expect(page.locator("#status")).to_have_text("refused", timeout=ms(10))
    expect(page.locator("#status-detail")).to_contain_text("bad user name or password")
    expect(page.locator("#subscribe")).to_be_disabled()
