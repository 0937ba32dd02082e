"""A device's own page (/devices/{id}) in a real browser against a real hub: time ranges, a gap
in the readings drawn as a gap, the CSV of the window shown, zoom by drag, the last known state
after a hub restart, and commands to an offline device (pending, replies matched by id)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from playwright.sync_api import Page, expect

from hub.topics import meta_topic, reply_topic, status_topic, telemetry_topic
from tests.browser.conftest import save_screenshot
from tests.browser.console import (
    MqttDevice,
    add_user,
    assert_no_script_ran,
    health_json,
    logged_in,
    login,
    ms,
    register,
)
from tests.support.hubproc import HubProcess, start_hub


def publish_burst(dev: MqttDevice, first: int, count: int) -> None:
    """Readings 0.2 s apart (the hub stamps arrival time: the spacing is what the page sees)."""
    for seq in range(first, first + count):
        dev.publish(telemetry_topic(dev.id, "temp"), f"1f,{seq},{20 + seq}.5")
        time.sleep(0.2)


def chart_state(page: Page) -> dict[str, Any]:
    """What the page holds for its temp chart and window."""
    return dict(
        page.evaluate(
            """() => {
              const s = window.deviceState;
              const cols = s.series.get("temp");
              return {since: s.since, until: s.until, live: s.live,
                      mean: cols ? cols.mean : null, t: cols ? cols.t : null};
            }"""
        )
    )


def test_device_page_ranges_gap_csv_and_zoom(secure_hub: HubProcess, page: Page) -> None:
    """Readings with a hole in time are charted with a null in the hole (a gap, not a line);
    the CSV link asks for exactly the window shown and holds its readings; the 24 h range and a
    custom window in the past change the window; a drag on the chart zooms to a custom one."""
    hub = secure_hub
    with MqttDevice(hub, register(hub, "gap-1")) as dev:
        dev.publish(status_topic("gap-1"), "online", retain=True)
        publish_burst(dev, 0, 6)
        time.sleep(3)  # the hole in time: 15 typical steps without a reading
        publish_burst(dev, 6, 6)
        logged_in(page, hub, "viewer", next_path="/devices/gap-1")
        chart = page.locator('#charts .chart[data-sensor="temp"]')
        expect(chart).to_have_attribute("data-nulls", "1", timeout=ms(10))
        state = chart_state(page)
        values = [v for v in state["mean"] if v is not None]
        assert values == [20.5 + i for i in range(12)], state["mean"]
        hole = state["mean"].index(None)
        assert state["mean"][hole - 1] == 25.5 and state["mean"][hole + 1] == 26.5
        assert state["live"] is True and 3590 <= state["until"] - state["since"] <= 3610

        href = page.locator("#csv").get_attribute("href") or ""
        assert href.startswith("/api/devices/gap-1/telemetry.csv?"), href
        assert f"since={state['since']:.3f}" in href and f"until={state['until']:.3f}" in href
        csv = page.request.get(hub.http_url + href)
        assert csv.ok, csv.status
        lines = [line for line in csv.text().splitlines()[1:] if line.strip()]
        assert len(lines) == 12, csv.text()

        page.select_option("#range", "86400")
        expect(page.locator("#csv")).not_to_have_attribute("href", href)
        day = chart_state(page)
        assert 86390 <= day["until"] - day["since"] <= 86410
        expect(chart).to_have_attribute("data-points", "13")

        # A drag across the chart zooms in: a custom window, fetched again.
        box = page.locator('#charts .sensor-chart[data-sensor="temp"] .u-over').bounding_box()
        assert box is not None
        y = box["y"] + box["height"] / 2
        page.mouse.move(box["x"] + box["width"] * 0.2, y)
        page.mouse.down()
        page.mouse.move(box["x"] + box["width"] * 0.8, y, steps=5)
        page.mouse.up()
        expect(page.locator("#range")).to_have_value("custom")
        zoomed = chart_state(page)
        assert zoomed["live"] is False
        assert zoomed["until"] - zoomed["since"] < day["until"] - day["since"]

        # A custom window in the past holds nothing: no chart, and a CSV of no readings.
        page.fill("#since", "2020-01-01T00:00:00")
        page.fill("#until", "2020-01-02T00:00:00")
        page.click("#range-apply")
        expect(page.locator("#no-readings")).to_be_visible()
        expect(page.locator("#charts .chart")).to_have_count(0)
        href = page.locator("#csv").get_attribute("href") or ""
        empty = page.request.get(hub.http_url + href)
        assert empty.ok and len(empty.text().strip().splitlines()) <= 1, empty.text()
        save_screenshot(page, "device-page")
    assert_no_script_ran(page)


def test_device_page_after_a_hub_restart(tmp_path: Path, page: Page) -> None:
    """After the hub restarts, a device that went offline is shown "offline since" a time, its
    health "as of" a time, and its readings are still charted."""
    data = tmp_path / "hub-data"
    hub = start_hub(data, secure=True)
    try:
        with MqttDevice(hub, register(hub, "rest-1")) as dev:
            dev.publish(status_topic("rest-1"), "online", retain=True)
            dev.publish(meta_topic("rest-1"), health_json(heap=41000), retain=True)
            publish_burst(dev, 0, 3)
            dev.publish(status_topic("rest-1"), "offline", retain=True)
        password = add_user(hub, "op", "operator")
    finally:
        hub.stop()
    hub = start_hub(data, secure=True)
    try:
        login(page, hub.http_url, "op", password, "/devices/rest-1")
        expect(page.locator("#status")).to_have_text("offline", timeout=ms(10))
        expect(page.locator("#status-detail")).to_contain_text("offline since")
        expect(page.locator("#health-at")).to_contain_text("as of")
        expect(page.locator('#health dd[data-field="heap"]')).to_have_text("41000")
        expect(page.locator('#charts .chart[data-sensor="temp"]')).to_have_attribute(
            "data-points", "3", timeout=ms(10)
        )
        assert_no_script_ran(page)
    finally:
        hub.stop()


def test_command_to_an_offline_device_is_pending_and_matched_by_id(
    secure_hub: HubProcess, page: Page
) -> None:
    """A command to an offline device shows pending, says the device is offline and until when
    it stays queued; a reply to another command id changes nothing in the form (it goes to the
    replies log); the reply with the command's id settles it, and the history lists it."""
    hub = secure_hub
    creds = register(hub, "off-1")
    with MqttDevice(hub, creds) as dev:
        dev.publish(status_topic("off-1"), "offline", retain=True)
    logged_in(page, hub, "operator", next_path="/devices/off-1")
    expect(page.locator("#status")).to_have_text("offline", timeout=ms(10))
    page.select_option("#command-op", "ping")
    page.click("#command-send")
    box = page.locator("#command-reply")
    expect(box).to_have_attribute("data-status", "pending", timeout=ms(10))
    expect(box).to_contain_text("offline")
    expect(box).to_contain_text("queued for it until")
    command_id = box.get_attribute("data-command")
    assert command_id, "the hub's answer named no command id"
    with MqttDevice(hub, creds) as dev:
        late = {"id": f"{command_id}-not-this-one", "ok": True, "late": "older command"}
        dev.publish(reply_topic("off-1"), json.dumps(late))
        expect(page.locator("#replies")).to_contain_text("older command", timeout=ms(10))
        expect(box).to_have_attribute("data-status", "pending")
        own_id: object = int(command_id) if command_id.isdigit() else command_id
        own = {"id": own_id, "ok": True, "version": "9.9"}
        dev.publish(reply_topic("off-1"), json.dumps(own))
        expect(box).to_have_attribute("data-status", "replied", timeout=ms(10))
        expect(box).to_contain_text("version: 9.9")
    expect(page.locator(f'#commands li[data-command="{command_id}"]')).to_contain_text(
        "operator-user", timeout=ms(20)
    )
    assert_no_script_ran(page)
