"""The device page's desired-state panel and the groups panel in a real browser against a real
hub: desired, reported and pending values, an admin's edit (and a refused stale one), a
viewer's read-only view, and hostile values shown as text."""

from __future__ import annotations

from typing import Any

from playwright.sync_api import Page, expect

from hub.topics import meta_topic, status_topic
from tests.browser.console import (
    MqttDevice,
    assert_no_script_ran,
    health_json,
    hub_api,
    logged_in,
    ms,
    register,
)
from tests.support.hubproc import HubProcess, hub_cli

HOSTILE = '<img src=x onerror="window.__pwned.push(1)">'


def cli(hub: HubProcess, *args: str) -> None:
    result = hub_cli(hub.data_dir, *args)
    assert result.returncode == 0, result.stderr


def row(page: Page, key: str) -> Any:
    return page.locator(f'#desired-rows tr[data-key="{key}"]')


def test_admin_edits_desired_state_and_sees_it_pending_then_applied(
    secure_hub: HubProcess, page: Page
) -> None:
    """An admin sets a setting for an offline device: it shows as pending; once the device
    connects and accepts it, the reported value matches and nothing is pending. A group's
    hostile text value is shown as text, and a write based on a stale version is refused."""
    hub = secure_hub
    creds = register(hub, "want-1")
    cli(hub, "group", "add", "grp", "--devices", "want-1")
    cli(hub, "desired", "set", "--group", "grp", f"wifi_ssid={HOSTILE}")
    logged_in(page, hub, "admin", next_path="/devices/want-1")
    expect(row(page, "wifi_ssid").locator(".desired-value")).to_have_text(HOSTILE)
    expect(row(page, "wifi_ssid").locator("td").nth(2)).to_have_text("group:grp")

    page.fill("#desired-key", "period_s")
    page.fill("#desired-value", "30")
    page.click("#desired-set")
    expect(page.locator("#desired-reply")).to_have_text("saved: version 1")
    expect(row(page, "period_s").locator(".desired-value")).to_have_text("30")
    expect(row(page, "period_s").locator(".delta")).to_have_text("pending: 30")
    expect(page.locator("#desired-outcome")).to_contain_text("pending: period_s, wifi_ssid")

    answered: list[dict[str, Any]] = []

    def answer(command: dict[str, Any]) -> dict[str, Any]:
        answered.append(command)
        return {"ok": True, "applied": True}

    with MqttDevice(hub, creds, answer) as dev:
        dev.publish(status_topic("want-1"), "online", retain=True)
        dev.publish(meta_topic("want-1"), health_json(), retain=True)
        expect(row(page, "period_s").locator(".reported-value")).to_have_text("30", timeout=ms(20))
        expect(row(page, "wifi_ssid").locator(".reported-value")).to_have_text(HOSTILE)
        expect(row(page, "period_s").locator(".delta")).to_have_text("")
        expect(page.locator("#desired-outcome")).to_contain_text("nothing pending")
    assert answered and answered[0]["set"] == {"period_s": 30, "wifi_ssid": HOSTILE}

    # Someone else changes the document: this page's write, based on version 1, is refused.
    status, _ = hub_api(
        hub, "PUT", "/api/devices/want-1/desired", {"version": 1, "desired": {"period_s": 40}}
    )
    assert status == 200
    page.fill("#desired-key", "meta_s")
    page.fill("#desired-value", "100")
    page.click("#desired-set")
    expect(page.locator("#desired-reply")).to_contain_text("at version 2, not 1")
    expect(row(page, "period_s").locator(".desired-value")).to_have_text("40")
    expect(row(page, "meta_s")).to_have_count(0)
    # A bad value is refused with the hub's reason.
    page.fill("#desired-key", "period_s")
    page.fill("#desired-value", "0")
    page.click("#desired-set")
    expect(page.locator("#desired-reply")).to_contain_text("from 1 to 86400")
    assert_no_script_ran(page)


def test_viewer_sees_desired_state_without_the_form_and_admin_sees_groups(
    secure_hub: HubProcess, page: Page
) -> None:
    """A viewer sees the desired-state table but no edit form; the fleet page's groups panel is
    for admins and lists each group's selector, size and document as text."""
    hub = secure_hub
    register(hub, "want-2")
    cli(hub, "group", "add", "mine", "--devices", "want-2", "--priority", "4")
    cli(hub, "desired", "set", "--group", "mine", "meta_s=600", f"wifi_ssid={HOSTILE}")
    logged_in(page, hub, "viewer", next_path="/devices/want-2")
    expect(row(page, "meta_s").locator(".desired-value")).to_have_text("600")
    expect(page.locator("#desired-form")).to_have_count(0)
    assert page.locator("#groups-panel").count() == 0
    page.goto(hub.http_url + "/")
    expect(page.locator("#groups-panel")).to_have_count(0)  # removed for a viewer
    assert_no_script_ran(page)

    page.context.clear_cookies()
    logged_in(page, hub, "admin", next_path="/")
    group = page.locator('#groups li[data-group="mine"]')
    expect(group).to_contain_text("devices=want-2")
    expect(group).to_contain_text("priority 4")
    expect(group).to_contain_text("1 devices")
    expect(group).to_contain_text(f"meta_s=600 wifi_ssid={HOSTILE}")
    assert_no_script_ran(page)
