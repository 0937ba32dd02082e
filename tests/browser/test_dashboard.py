"""The dashboard page in a real browser: live readings from real firmware over WebSocket."""

import re
from pathlib import Path

from playwright.sync_api import Page, expect

from tests.browser.conftest import save_screenshot
from tests.support.devices import running_device
from tests.support.hubproc import HubProcess, provision, scaled


def test_dashboard_shows_live_readings_and_presence(
    secure_hub: HubProcess, page: Page, tmp_path: Path
) -> None:
    """On a hub with security on, a provisioned device's readings appear and update live in
    the dashboard (which reads with its read-only token); killing the device turns it offline."""
    hub = secure_hub
    credentials = provision(hub, "dash-1")
    page.goto(hub.http_url + "/")
    expect(page.locator("#link")).to_have_text("live", timeout=scaled(10) * 1000)
    with running_device(
        tmp_path, hub, "dash-1", period_s=1,
        username=credentials["username"], password=credentials["password"],
    ) as device:  # fmt: skip
        row = page.locator('tr[data-device="dash-1"][data-sensor="temp"]')
        expect(row.locator(".badge")).to_have_text("online", timeout=scaled(10) * 1000)
        expect(row.locator("td.value")).to_have_text(
            re.compile(r"^-?\d+(\.\d)?$"), timeout=scaled(10) * 1000
        )
        first_seq = int(row.locator("td").nth(4).inner_text())
        expect(row.locator("td").nth(4)).not_to_have_text(
            str(first_seq), timeout=scaled(10) * 1000
        )
        save_screenshot(page, "dashboard")
        device.kill()
        expect(row.locator(".badge")).to_have_text("offline", timeout=scaled(10) * 1000)
