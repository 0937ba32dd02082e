"""The dashboard in a real browser, logged in: fleet, live chart, commands, presence, phones."""

from __future__ import annotations

from pathlib import Path

from playwright.sync_api import Page, expect

from hub.topics import meta_topic, status_topic, telemetry_topic
from tests.browser.conftest import save_screenshot
from tests.browser.console import (
    MqttDevice,
    assert_no_script_ran,
    health_json,
    logged_in,
    ms,
    register,
)
from tests.support.devices import running_device
from tests.support.hubproc import HubProcess


def test_operator_sees_the_fleet_live_and_commands_a_device(
    secure_hub: HubProcess, page: Page, tmp_path: Path
) -> None:
    """Logged in as an operator: a real device shows online with its health in the fleet; its
    row opens its page, where its chart is backfilled and gains a point within a second of a
    publish; the command form reaches the device and its reply appears (a refused argument as
    an error); killing the device turns it offline; the fleet page has no device management or
    hub events panel."""
    hub = secure_hub
    creds = register(hub, "dash-1")
    other = register(hub, "dash-2")  # publishes the extra reading as a device of its own
    logged_in(page, hub, "operator")
    expect(page.locator("#link")).to_have_text("live", timeout=ms(10))
    expect(page.locator("#devices-panel")).to_have_count(0)
    expect(page.locator("#events-panel")).to_have_count(0)
    with running_device(
        tmp_path,
        hub,
        "dash-1",
        period_s=30,
        meta_s=1,
        username="dash-1",
        password=creds["password"],
    ) as device:
        row = page.locator('#fleet li[data-device="dash-1"]')
        expect(row.locator(".status")).to_have_text("online", timeout=ms(10))
        expect(row.locator(".facts")).to_contain_text("heap", timeout=ms(10))
        expect(row.locator(".facts")).to_contain_text("plain allowed")
        row.click()
        expect(page).to_have_url(f"{hub.http_url}/devices/dash-1", timeout=ms(10))
        expect(page.locator("#command-form")).to_be_visible()
        expect(page.locator('#health dd[data-field="board"]')).to_have_text("unix-sim")
        expect(page.locator("#status")).to_have_text("online", timeout=ms(10))
        chart = page.locator("#charts .chart").first
        expect(chart).not_to_have_attribute("data-points", "0", timeout=ms(10))
        sensor = chart.get_attribute("data-sensor")
        chart = page.locator(f'#charts .chart[data-sensor="{sensor}"]')
        before = int(chart.get_attribute("data-points") or 0)
        with MqttDevice(hub, other) as publisher:
            # The reading of another device must not land on this one's chart...
            publisher.publish(telemetry_topic("dash-2", sensor or "temp"), "abcd,500,42.5")
        expect(page.locator("#latest")).not_to_contain_text("42.5")
        expect(chart).to_have_attribute("data-points", str(before))
        # ...but the device's own next reading does, at once ("read now").
        page.select_option("#command-op", "read")
        page.click("#command-send")
        expect(page.locator("#command-reply")).to_contain_text("ok: true", timeout=ms(10))
        expect(chart).not_to_have_attribute("data-points", str(before), timeout=ms(5))
        page.select_option("#command-op", "ping")
        page.click("#command-send")
        expect(page.locator("#command-reply")).to_contain_text("version:", timeout=ms(10))
        page.select_option("#command-op", "period")
        page.fill("#command-args", '{"s": 0}')
        page.click("#command-send")
        expect(page.locator("#command-reply")).to_contain_text("whole seconds", timeout=ms(10))
        expect(page.locator("#command-reply")).to_have_class("reply error")
        expect(page.locator("#replies li").first).to_contain_text("ok: false", timeout=ms(5))
        save_screenshot(page, "dashboard")
        device.kill()
        expect(page.locator("#status")).to_have_text("offline", timeout=ms(10))
    assert_no_script_ran(page)
    assert page.evaluate("localStorage.length + sessionStorage.length") == 0


def test_viewer_sees_fleet_and_health_but_no_commands_or_management(
    secure_hub: HubProcess, page: Page
) -> None:
    """Logged in as a viewer: the fleet, health and the device's page with live readings are
    there; the command form, device management, alarm rules and the hub events panel are not
    in the pages at all."""
    hub = secure_hub
    creds = register(hub, "view-1")
    with MqttDevice(hub, creds) as dev:
        dev.publish(status_topic("view-1"), "online", retain=True)
        dev.publish(meta_topic("view-1"), health_json(fw="9.9.9"), retain=True)
        logged_in(page, hub, "viewer")
        expect(page.locator("#who")).to_contain_text("viewer")
        expect(page.locator("#link")).to_have_text("live", timeout=ms(10))
        row = page.locator('#fleet li[data-device="view-1"]')
        expect(row.locator(".status")).to_have_text("online", timeout=ms(10))
        expect(row.locator(".facts")).to_contain_text("fw 9.9.9")
        for gone in ("#devices-panel", "#events-panel", "#rules-admin", "#alarms .ack"):
            expect(page.locator(gone)).to_have_count(0)
        row.click()
        expect(page).to_have_url(f"{hub.http_url}/devices/view-1", timeout=ms(10))
        expect(page.locator("#link")).to_have_text("live", timeout=ms(10))
        dev.publish(telemetry_topic("view-1", "temp"), "1f,0,21.5")
        expect(page.locator("#latest")).to_contain_text("temp 21.5", timeout=ms(5))
    expect(page.locator("#command-form")).to_have_count(0)
    assert_no_script_ran(page)


def test_dashboard_fits_a_phone(secure_hub: HubProcess, page: Page) -> None:
    """On a phone-sized screen the logged-in admin's page has no horizontal scroll."""
    register(secure_hub, "phone-1")
    page.set_viewport_size({"width": 390, "height": 844})
    logged_in(page, secure_hub, "admin")
    expect(page.locator("#link")).to_have_text("live", timeout=ms(10))
    expect(page.locator('#fleet li[data-device="phone-1"]')).to_be_visible(timeout=ms(10))
    expect(page.locator('#registry li[data-device="phone-1"]')).to_be_visible()
    overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
    assert overflow <= 0
    save_screenshot(page, "dashboard-phone")


def test_an_empty_retained_message_brings_no_device_into_the_list(
    secure_hub: HubProcess, page: Page
) -> None:
    """An empty retained status (what the hub sends when it clears a removed device's topics)
    does not put a device the page does not know into the fleet list."""
    hub = secure_hub
    known = register(hub, "known-1")
    logged_in(page, hub, "viewer")
    expect(page.locator('#fleet li[data-device="known-1"]')).to_be_visible(timeout=ms(10))
    ghost = register(hub, "ghost-1")  # registered after the page read the list
    with MqttDevice(hub, ghost) as dev:
        dev.publish(status_topic("ghost-1"), "", retain=True)
    with MqttDevice(hub, known) as dev:  # routed after the ghost's message: a marker
        dev.publish(telemetry_topic("known-1", "temp"), "1f,0,5.5")
    expect(page.locator('#fleet li[data-device="known-1"] .values')).to_have_text(
        "temp 5.5", timeout=ms(5)
    )
    expect(page.locator('#fleet li[data-device="ghost-1"]')).to_have_count(0)
