"""Device management in the console, as an admin, against a real hub and real MQTT logins."""

from __future__ import annotations

import threading

import paho.mqtt.client as paho
from playwright.sync_api import Page, expect

from tests.browser.conftest import save_screenshot
from tests.browser.console import assert_no_script_ran, logged_in, ms, register, registry
from tests.support.hubproc import HubProcess, scaled


def mqtt_login(hub: HubProcess, username: str, password: str) -> bool:
    """Whether the hub accepts a device's MQTT CONNECT with these credentials (over TCP)."""
    client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=username)
    client.username_pw_set(username, password)
    answered = threading.Event()
    accepted: list[bool] = []

    def on_connect(
        c: paho.Client, u: object, f: object, reason: paho.ReasonCode, p: object
    ) -> None:
        accepted.append(not reason.is_failure)
        answered.set()

    client.on_connect = on_connect
    client.connect(hub.host, hub.mqtt_port, keepalive=10)
    client.loop_start()
    try:
        assert answered.wait(scaled(10)), "no CONNACK"
        return accepted[0]
    finally:
        client.loop_stop()
        client.disconnect()


def shown_secret(page: Page) -> dict[str, str]:
    panel = page.locator("#secret")
    expect(panel).to_be_visible(timeout=ms(10))
    fields = panel.locator("#secret-fields dd")
    return {
        fields.nth(i).get_attribute("data-field") or "": fields.nth(i).inner_text()
        for i in range(fields.count())
    }


def test_admin_adds_disables_rotates_and_removes_a_device(
    secure_hub: HubProcess, page: Page
) -> None:
    """An admin adds a device (its secret shown once logs in over MQTT), disables it (refused)
    and enables it, rotates its secret (old refused, new accepted), changes its TLS policy, is
    told as text that the hub has no CA for a certificate, and removes it after confirming."""
    hub = secure_hub
    logged_in(page, hub, "admin")
    expect(page.locator("#devices-panel")).to_be_visible()
    expect(page.locator("#events-panel")).to_be_visible()
    page.fill("#add-device-id", "new-1")
    page.check("#add-device-insecure")
    page.click("#add-device")
    secret = shown_secret(page)
    assert secret["id"] == "new-1" and secret["username"] == "new-1"
    assert mqtt_login(hub, "new-1", secret["password"])
    page.click("#secret-close")
    expect(page.locator("#secret")).to_be_hidden()
    assert secret["password"] not in page.content()  # shown once, then gone from the page

    row = page.locator('#registry li[data-device="new-1"]')
    expect(row.locator(".state")).to_have_text("enabled", timeout=ms(10))
    expect(page.locator('#fleet li[data-device="new-1"]')).to_be_visible()
    row.locator("button.disable").click()
    expect(row.locator(".state")).to_have_text("disabled", timeout=ms(10))
    assert registry(hub)["new-1"]["enabled"] is False
    assert not mqtt_login(hub, "new-1", secret["password"])
    row.locator("button.enable").click()
    expect(row.locator(".state")).to_have_text("enabled", timeout=ms(10))

    row.locator("button.rotate").click()
    rotated = shown_secret(page)
    assert rotated["password"] != secret["password"]
    assert not mqtt_login(hub, "new-1", secret["password"])
    assert mqtt_login(hub, "new-1", rotated["password"])

    assert registry(hub)["new-1"]["tls_policy"] == "allow-insecure"
    row.locator("select.tls-policy").select_option("tls-required")
    expect(row.locator("select.tls-policy")).to_have_value("tls-required", timeout=ms(10))
    expect(page.locator('#fleet li[data-device="new-1"] .facts')).to_contain_text("TLS")
    assert registry(hub)["new-1"]["tls_policy"] == "tls-required"

    row.locator("button.cert").click()  # this hub has no CA: a readable error, as text
    expect(page.locator("#manage-error")).to_be_visible(timeout=ms(10))
    expect(page.locator("#manage-error")).not_to_be_empty()

    row.locator("button.remove").click()
    expect(row).to_contain_text("for good?")
    row.locator("button.cancel-remove").click()
    expect(row.locator("button.remove")).to_be_visible()
    assert "new-1" in registry(hub)
    row.locator("button.remove").click()
    row.locator("button.confirm-remove").click()
    expect(row).to_have_count(0, timeout=ms(10))
    expect(page.locator('#fleet li[data-device="new-1"]')).to_have_count(0)
    assert "new-1" not in registry(hub)
    save_screenshot(page, "admin-devices")
    assert_no_script_ran(page)


def test_admin_sees_refusals_as_text(secure_hub: HubProcess, page: Page) -> None:
    """Adding a device whose id breaks the rules, or one that exists, shows the hub's error
    as text and changes nothing."""
    register(secure_hub, "taken-1")
    logged_in(page, secure_hub, "admin")
    for bad in ("taken-1", "<b>Bad ID</b>"):
        page.fill("#add-device-id", bad)
        page.click("#add-device")
        expect(page.locator("#manage-error")).to_be_visible(timeout=ms(10))
        expect(page.locator("#secret")).to_be_hidden()
    assert set(registry(secure_hub)) == {"taken-1"}
    assert_no_script_ran(page)


def api_login(page: Page, hub: HubProcess, name: str, password: str) -> int:
    """The status of POST /api/login for these credentials, from a context of its own."""
    browser = page.context.browser
    assert browser is not None
    other = browser.new_context()
    try:
        answer = other.request.post(
            hub.http_url + "/api/login", data={"name": name, "password": password}
        )
        return answer.status
    finally:
        other.close()


def test_admin_manages_console_accounts(secure_hub: HubProcess, page: Page) -> None:
    """An admin adds an operator account (its one-time password, shown once, logs in),
    disables it (its logins are refused) and enables it, and removes it after confirming; the
    admin's own account offers no disable or remove."""
    hub = secure_hub
    me = logged_in(page, hub, "admin")
    expect(page.locator(f'#users li[data-user="{me}"] .actions')).to_have_text("you")
    page.fill("#add-user-name", "olga")
    page.select_option("#add-user-role", "operator")
    page.click("#add-user")
    expect(page.locator("#user-secret")).to_be_visible(timeout=ms(10))
    password = page.locator('#user-secret-fields dd[data-field="password"]').inner_text()
    assert api_login(page, hub, "olga", password) == 200
    page.click("#user-secret-close")
    assert password not in page.content()

    row = page.locator('#users li[data-user="olga"]')
    expect(row.locator(".role")).to_have_text("operator")
    row.locator("button.disable").click()
    expect(row.locator(".state")).to_have_text("disabled", timeout=ms(10))
    assert api_login(page, hub, "olga", password) == 401
    row.locator("button.enable").click()
    expect(row.locator(".state")).to_have_text("enabled", timeout=ms(10))
    assert api_login(page, hub, "olga", password) == 200
    row.locator("button.remove").click()
    row.locator("button.confirm-remove").click()
    expect(row).to_have_count(0, timeout=ms(10))
    assert api_login(page, hub, "olga", password) == 401
    assert_no_script_ran(page)
