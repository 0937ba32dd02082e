"""The fleet view in a real browser against a real hub with 150 registered devices: counts,
search, filters, sort, pages, and live rows."""

from __future__ import annotations

from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from hub.topics import meta_topic, status_topic, telemetry_topic
from tests.browser.console import MqttDevice, assert_no_script_ran, health_json, logged_in, ms
from tests.browser.console import register as register_device
from tests.support.hubproc import HubProcess, start_hub
from tests.support.waits import eventually

FLEET = [f"fl-{i:03d}" for i in range(150)]
ONLINE = {"fl-007": "unix-sim", "fl-042": "esp32-c3", "fl-120": "esp32-c3"}


def test_fleet_counts_search_filters_and_pages(secure_hub: HubProcess, page: Page) -> None:
    """With 150 registered devices and 3 online: the counts say so, the list shows pages of 100,
    search by id, filters by state and board, sort by last seen, and a live reading updates a
    row on the page."""
    hub = secure_hub
    creds = {i: register_device(hub, i) for i in FLEET}
    devices = [MqttDevice(hub, creds[i]) for i in ONLINE]
    try:
        for dev in devices:
            dev.publish(status_topic(dev.id), "online", retain=True)
            dev.publish(
                meta_topic(dev.id), health_json(board=ONLINE[dev.id], fw="2.0.0"), retain=True
            )
        # fl-120 is the last one heard from: newest first, it leads the list.
        devices[2].publish(telemetry_topic("fl-120", "temp"), "1f,1,20.5")
        logged_in(page, hub, "viewer")
        expect(page.locator('#counts [data-count="all"]')).to_have_text("150", timeout=ms(10))
        expect(page.locator('#counts [data-count="online"]')).to_have_text("3", timeout=ms(10))
        expect(page.locator('#counts [data-count="never"]')).to_have_text("147")
        rows = page.locator("#fleet li[data-device]")
        expect(rows).to_have_count(100)
        expect(rows.first).to_have_attribute("data-device", "fl-000")
        expect(page.locator("#page-info")).to_have_text("1-100 of 150")
        page.click("#page-next")
        expect(rows).to_have_count(50)
        expect(rows.first).to_have_attribute("data-device", "fl-100")
        expect(page.locator("#page-next")).to_be_disabled()
        page.click("#page-prev")
        expect(rows.first).to_have_attribute("data-device", "fl-000")

        page.fill("#fleet-q", "fl-04")
        expect(rows).to_have_count(10)
        expect(page.locator("#fleet-count")).to_have_text("(10)")
        page.fill("#fleet-q", "")
        page.select_option("#fleet-state", "online")
        expect(rows).to_have_count(3)
        expect(page.locator("#fleet li .status").first).to_have_text("online")
        page.select_option("#fleet-board", "esp32-c3")
        expect(rows).to_have_count(2)
        expect(page.locator('#fleet li[data-device="fl-007"]')).to_have_count(0)
        page.select_option("#fleet-board", "")
        page.select_option("#fleet-sort", "-last_seen")
        expect(rows.first).to_have_attribute("data-device", "fl-120")
        page.select_option("#fleet-state", "never")
        expect(page.locator("#fleet-count")).to_have_text("(147)")
        page.select_option("#fleet-state", "")
        page.select_option("#fleet-tls", "tls-required")
        expect(page.locator("#empty")).to_have_text("No device matches.")
        expect(rows).to_have_count(0)
        page.select_option("#fleet-tls", "allow-insecure")
        expect(page.locator("#fleet-count")).to_have_text("(150)")

        # A live reading lands on its row (the row is on the page: fl-042 is online).
        page.select_option("#fleet-state", "online")
        devices[1].publish(telemetry_topic("fl-042", "temp"), "1f,2,33.5")
        expect(page.locator('#fleet li[data-device="fl-042"] .values')).to_have_text(
            "temp 33.5", timeout=ms(5)
        )
        # A click on a row opens the device's page.
        page.click('#fleet li[data-device="fl-042"] .facts')
        expect(page).to_have_url(f"{hub.http_url}/devices/fl-042", timeout=ms(10))
        assert_no_script_ran(page)
    finally:
        for dev in devices:
            dev.close()


@pytest.mark.parametrize(
    ("quotas", "expected_filters"),
    [((), "per device"), (("--max-subscriptions", "20"), "fleet-wide")],
    ids=["per-device-filters", "wildcards-when-the-quota-is-small"],
)
def test_a_full_page_of_rows_stays_live_within_the_subscription_quotas(
    tmp_path: Path, page: Page, quotas: tuple[str, ...], expected_filters: str
) -> None:
    """A page of 100 rows subscribes within the hub's quotas (8 filters per SUBSCRIBE, 400 per
    session by default: 3 filters a row in SUBSCRIBEs of 8; under a smaller session quota, the
    fleet-wide filters): the link reads "live" and a reading of the page's last row lands on it."""
    log_path = tmp_path / "hub.log"
    with log_path.open("w") as log:
        hub = start_hub(tmp_path / "hub-data", *quotas, stderr=log, secure=True)
    try:
        ids = [f"q-{i:03d}" for i in range(100)]
        creds = {i: register_device(hub, i) for i in ids}
        last = MqttDevice(hub, creds["q-099"])
        try:
            logged_in(page, hub, "viewer")
            rows = page.locator("#fleet li[data-device]")
            expect(rows).to_have_count(100, timeout=ms(10))
            expect(page.locator("#link")).to_have_text("live", timeout=ms(10))
            last.publish(telemetry_topic("q-099", "temp"), "1f,1,12.5")
            expect(page.locator('#fleet li[data-device="q-099"] .values')).to_have_text(
                "temp 12.5", timeout=ms(5)
            )
            assert_no_script_ran(page)
        finally:
            last.close()
    finally:
        hub.stop()
    assert "quota_exceeded" not in log_path.read_text(), f"the {expected_filters} filters"


def test_a_refresh_keeps_the_rows_that_did_not_change(secure_hub: HubProcess, page: Page) -> None:
    """A reading redraws its own row; the fleet's refresh then keeps every row whose content
    is unchanged (the same node, so the browser lays nothing out again) with the reading on it."""
    hub = secure_hub
    creds = {i: register_device(hub, i) for i in ("rr-a", "rr-b", "rr-c")}
    device = MqttDevice(hub, creds["rr-a"])
    try:
        logged_in(page, hub, "viewer")
        rows = page.locator("#fleet li[data-device]")
        expect(rows).to_have_count(3, timeout=ms(10))
        expect(page.locator("#link")).to_have_text("live", timeout=ms(10))
        device.publish(telemetry_topic("rr-a", "temp"), "1f,1,7.5")
        reading = page.locator('#fleet li[data-device="rr-a"] .values')
        expect(reading).to_have_text("temp 7.5", timeout=ms(5))
        page.evaluate(
            """() => {
              window.__before = fleetState.rows;
              for (const li of document.querySelectorAll("#fleet li")) li.__kept = true;
            }"""
        )
        page.dispatch_event("#fleet-filter", "submit")  # the same query: a refresh
        eventually(
            lambda: page.evaluate("() => fleetState.rows !== window.__before"),
            10,
            "the fleet's refresh",
        )
        kept = page.evaluate(
            """() => [...document.querySelectorAll("#fleet li")]
                .filter((li) => li.__kept).map((li) => li.dataset.device)"""
        )
        assert kept == ["rr-a", "rr-b", "rr-c"]
        expect(reading).to_have_text("temp 7.5")
        assert_no_script_ran(page)
    finally:
        device.close()
