"""The dashboard in a real browser: fleet, live chart, commands, hub events, presence."""

from __future__ import annotations

import re
from pathlib import Path

import paho.mqtt.client as paho
from playwright.sync_api import Page, expect

from tests.browser.conftest import save_screenshot
from tests.support.devices import running_device
from tests.support.hubproc import HubProcess, hub_cli, provision, scaled


def _token(hub: HubProcess, *args: str) -> str:
    result = hub_cli(hub.data_dir, "token", "create", *args)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip().splitlines()[-1]


def _publish(hub: HubProcess, token: str, topic: str, payload: bytes) -> None:
    """Publishes like a device would, over TCP, with a token allowed to publish there."""
    client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id="test-publisher")
    client.username_pw_set("token", token)
    client.connect(hub.host, hub.mqtt_port)
    client.loop_start()
    try:
        client.publish(topic, payload, qos=1).wait_for_publish(timeout=scaled(5))
    finally:
        client.loop_stop()
        client.disconnect()


def ms(seconds: float) -> float:
    return scaled(seconds) * 1000


def test_dashboard_fleet_chart_commands_events_presence(
    secure_hub: HubProcess, page: Page, tmp_path: Path
) -> None:
    """With security on: a provisioned device shows online with its health; its chart is
    backfilled and gains a point within a second of a publish; with an admin token a command
    button reaches the device and its reply appears, and hub events show; killing the device
    turns it offline."""
    hub = secure_hub
    creds = provision(hub, "dash-1")
    publisher = _token(hub, "--publish", "d/dash-1/t/+")
    page.goto(hub.http_url + "/")
    expect(page.locator("#link")).to_have_text("live", timeout=ms(10))
    expect(page.locator("#token-mode")).to_have_text("read-only")
    with running_device(tmp_path, hub, "dash-1", period_s=30, meta_s=1,
                        username="dash-1", password=creds["password"]) as device:  # fmt: skip
        row = page.locator('#fleet li[data-device="dash-1"]')
        expect(row.locator(".status")).to_have_text("online", timeout=ms(10))
        expect(row.locator(".facts")).to_contain_text("heap", timeout=ms(10))
        expect(row.locator(".facts")).to_contain_text("plain allowed")
        row.click()
        chart = page.locator("#chart")
        expect(chart).not_to_have_attribute("data-points", "0", timeout=ms(10))
        before = int(chart.get_attribute("data-points") or 0)
        _publish(hub, publisher, "d/dash-1/t/temp", b"abcd,500,42.5")
        expect(chart).to_have_attribute("data-points", str(before + 1), timeout=ms(1))
        expect(page.locator("#latest")).to_contain_text("42.5")

        page.fill("#token-input", _token(hub, "--admin"))
        page.click("#token-save")
        expect(page.locator("#token-mode")).to_have_text("admin")
        expect(page.locator("#events-panel")).to_be_visible()
        expect(page.locator("#link")).to_have_text("live", timeout=ms(10))
        page.select_option("#command-op", "ping")
        page.click("#command-send")
        expect(page.locator("#command-reply")).to_contain_text('"ok":true', timeout=ms(10))
        page.select_option("#command-op", "period")
        page.fill("#command-args", '{"s": 0}')
        page.click("#command-send")
        expect(page.locator("#command-reply")).to_contain_text("whole seconds", timeout=ms(10))
        save_screenshot(page, "dashboard")
        device.kill()
        expect(row.locator(".status")).to_have_text("offline", timeout=ms(10))
        expect(page.locator("#events")).to_contain_text(
            re.compile(r"disconnected dash-1 \((will|lost)\)"), timeout=ms(10)
        )


def test_dashboard_fits_a_phone(secure_hub: HubProcess, page: Page) -> None:
    """On a phone-sized screen the page has no horizontal scroll."""
    provision(secure_hub, "phone-1")
    page.set_viewport_size({"width": 390, "height": 844})
    page.goto(secure_hub.http_url + "/")
    expect(page.locator("#link")).to_have_text("live", timeout=ms(10))
    expect(page.locator('#fleet li[data-device="phone-1"]')).to_be_visible(timeout=ms(10))
    overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
    assert overflow <= 0
    save_screenshot(page, "dashboard-phone")
