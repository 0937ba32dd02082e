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
    expect(page.locator('#subscriptions li[data-filter="lab/#"] .text')).to_have_text(
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


def test_client_unsubscribes_shows_pubacks_and_clears_retained(
    secure_hub: HubProcess, page: Page
) -> None:
    """Publishes at QoS 1 show the hub's PUBACK and at QoS 0 that none comes; an empty
    retained publish clears the retained message; after unsubscribe no more messages arrive;
    a new connection starts with an empty subscription list."""
    hub = secure_hub
    token = _token(hub, "--subscribe", "lab/#", "--publish", "lab/#")
    logged_in(page, hub, "viewer", next_path="/client")
    page.fill("#password", token)
    page.click("#connect")
    expect(page.locator("#status")).to_have_text("connected", timeout=ms(10))
    page.fill("#pub-topic", "lab/keep")
    page.fill("#pub-payload", "kept")
    page.check("#pub-retain")
    page.select_option("#pub-qos", "1")
    page.click("#publish")
    ack = page.locator('#publishes li[data-topic="lab/keep"]').first
    expect(ack).to_have_attribute("data-state", "acknowledged", timeout=ms(5))
    expect(ack).to_contain_text("PUBACK")
    page.select_option("#pub-qos", "0")
    page.uncheck("#pub-retain")
    page.fill("#pub-topic", "lab/zero")
    page.click("#publish")
    zero = page.locator('#publishes li[data-topic="lab/zero"]').first
    expect(zero).to_contain_text("no acknowledgement at QoS 0", timeout=ms(5))

    page.fill("#sub-filter", "lab/#")
    page.click("#subscribe")
    sub = page.locator('#subscriptions li[data-filter="lab/#"]')
    expect(sub).to_contain_text("granted", timeout=ms(5))
    kept = page.locator('#messages li[data-topic="lab/keep"]')
    expect(kept).to_have_count(1, timeout=ms(5))  # the retained message
    page.fill("#pub-topic", "lab/keep")
    page.select_option("#pub-qos", "1")
    page.click("#clear-retained")
    cleared = page.locator('#publishes li[data-topic="lab/keep"]').first
    expect(cleared).to_contain_text("(retained) (empty): PUBACK", timeout=ms(5))
    expect(kept).to_have_count(2, timeout=ms(5))  # the empty message, delivered live

    sub.locator("button.unsubscribe").click()
    expect(sub).to_have_count(0, timeout=ms(5))
    page.fill("#pub-topic", "lab/after")
    page.click("#publish")
    expect(page.locator('#publishes li[data-topic="lab/after"]').first).to_contain_text(
        "PUBACK", timeout=ms(5)
    )
    # A marker through a fresh subscription proves the earlier message had time to arrive.
    page.fill("#sub-filter", "lab/marker")
    page.click("#subscribe")
    expect(page.locator('#subscriptions li[data-filter="lab/marker"]')).to_contain_text(
        "granted", timeout=ms(5)
    )
    page.fill("#pub-topic", "lab/marker")
    page.click("#publish")
    expect(page.locator('#messages li[data-topic="lab/marker"]')).to_have_count(1, timeout=ms(5))
    expect(page.locator('#messages li[data-topic="lab/after"]')).to_have_count(0)

    # Reconnecting (a new login) starts with no subscriptions, and the retained one is gone.
    page.click("#disconnect")
    page.click("#connect")
    expect(page.locator("#status")).to_have_text("connected", timeout=ms(10))
    expect(page.locator("#subscriptions li")).to_have_count(0)
    page.click("#clear")
    page.fill("#sub-filter", "lab/#")
    page.click("#subscribe")
    expect(page.locator('#subscriptions li[data-filter="lab/#"]')).to_contain_text(
        "granted", timeout=ms(5)
    )
    page.fill("#pub-topic", "lab/marker")
    page.click("#publish")
    expect(page.locator('#messages li[data-topic="lab/marker"]')).to_have_count(1, timeout=ms(5))
    expect(page.locator('#messages li[data-topic="lab/keep"]')).to_have_count(0)
    assert_no_script_ran(page)


def test_client_hints_at_client_id_for_a_device_login(secure_hub: HubProcess, page: Page) -> None:
    """Typing a device's user name with another client id shows the hint that a device logs in
    with client id = device id; matching them hides it."""
    logged_in(page, secure_hub, "viewer", next_path="/client")
    expect(page.locator("#password")).not_to_have_value("", timeout=ms(10))
    hint = page.locator("#client-id-hint")
    expect(hint).to_be_hidden()
    page.fill("#username", "kitchen-1")
    expect(hint).to_be_visible()
    expect(hint).to_contain_text('client id "kitchen-1"')
    page.fill("#client-id", "kitchen-1")
    expect(hint).to_be_hidden()
