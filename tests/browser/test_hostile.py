"""A hostile device: markup and script in every field it controls, retained and live, reach the
dashboard and the web client only as literal text, and nothing it sent ever runs.

Each test runs twice: with the hub's Content-Security-Policy (no violation may come from our
pages) and with the policy bypassed, so that markup that slipped into the page would run and
call the trap (``window.__pwned``). The hub may refuse some of these payloads (status, health
that breaks the contract, sensor names); the device sends those at QoS 0 (nothing to wait
for or resend if the hub drops them or the device) and the tests pass either way, but the
health message's string fields and the command reply are valid by contract, go at QoS 1, and
must be shown, as they are.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from playwright.sync_api import Browser, Page, expect

from hub.topics import meta_topic, reply_topic, status_topic, telemetry_topic
from tests.browser.conftest import save_screenshot
from tests.browser.console import (
    TRAP_SCRIPT,
    MqttDevice,
    assert_no_script_ran,
    health_json,
    hub_api,
    logged_in,
    ms,
    register,
)
from tests.support.hubproc import HubProcess, scaled

DEVICE = "evil-1"


def trap(tag: str) -> str:
    """Markup that calls the trap if it ever becomes part of the page."""
    return f"<img src=x onerror=\"__pwned.push('{tag}')\">"


def payloads(phase: str) -> dict[str, str]:
    """A different payload for each string field of health, by phase (retained or live)."""
    return {
        "fw": trap(f"{phase}-fw"),
        "board": f"<script>__pwned.push('{phase}-board')</script>",
        "reset": f'"><svg onload="__pwned.push(\'{phase}-reset\')">',
        "boot": f"javascript:__pwned.push('{phase}-boot')",
        "error": f"</dd><iframe src=\"javascript:__pwned.push('{phase}-error')\"></iframe>",
    }


# Numbers that are strings (the contract says integers): shown as nothing, never as markup.
NUMBERS_AS_STRINGS = {
    "up": trap("up"),
    "heap": trap("heap"),
    "rssi": "<b>-40</b>",
    "reconnects": "1e9",
    "queue": trap("queue"),
    "dropped": "javascript:__pwned.push('dropped')",
    "seq": "7",
}
HOSTILE_SENSORS = [trap("sensor"), "javascript:__pwned.push('sensor-href')"]
REPLY_TEXT = trap("reply")
REPLY_KEY = "<svg onload=__pwned.push(9)>"  # the page shows keys up to 40 characters


def hostile_answer(command: dict[str, Any]) -> dict[str, Any]:
    """What the hostile device answers to any command: markup in a valid reply."""
    return {"ok": True, "version": REPLY_TEXT, REPLY_KEY: "x"}


@pytest.fixture(params=[False, True], ids=["with-csp", "csp-bypassed"])
def hostile_page(browser: Browser, request: pytest.FixtureRequest) -> Iterator[Page]:
    """A page with the trap, with the hub's CSP enforced or bypassed (then the trap is live)."""
    context = browser.new_context(
        viewport={"width": 1024, "height": 900}, bypass_csp=request.param
    )
    context.add_init_script(TRAP_SCRIPT)
    page = context.new_page()
    request.node._page = page
    yield page
    context.close()


def publish_retained(dev: MqttDevice) -> None:
    """Retained markup: status, health that breaks the contract, then health that keeps it."""
    dev.attempt(status_topic(DEVICE), trap("status"), retain=True)
    dev.attempt(meta_topic(DEVICE), health_json(**NUMBERS_AS_STRINGS), retain=True)
    dev.publish(meta_topic(DEVICE), health_json(**payloads("retained")), retain=True)
    dev.attempt(
        reply_topic(DEVICE), json.dumps({"id": 1, "ok": True, "x": trap("old-reply")}), retain=True
    )


def publish_live(dev: MqttDevice) -> None:
    """Live markup: status, health, readings on hostile sensor names and values, a reply, and
    a publish outside the device's topic rules (the hub reports its topic as an event)."""
    dev.attempt(status_topic(DEVICE), f"<b>{trap('live-status')}</b>")
    dev.attempt(meta_topic(DEVICE), health_json(**NUMBERS_AS_STRINGS))
    for seq, sensor in enumerate(HOSTILE_SENSORS):
        dev.attempt(telemetry_topic(DEVICE, sensor), f"1f,{seq},1.5")
    dev.attempt(telemetry_topic(DEVICE, "temp"), f"1f,9,{trap('value')}")
    dev.attempt(reply_topic(DEVICE), json.dumps({"id": 2, "ok": False, "error": trap("err")}))
    dev.attempt(f"d/{DEVICE}/{trap('topic')}", trap("outside"))
    dev.publish(meta_topic(DEVICE), health_json(**payloads("live")))


def login_status(hub: HubProcess, name: str, password: str) -> int:
    """POST /api/login from outside the browser; returns the status."""
    body = json.dumps({"name": name, "password": password}).encode()
    request = urllib.request.Request(
        hub.http_url + "/api/login",
        data=body,
        method="POST",
        headers={"Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=scaled(10)) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code


def expect_health_shown(page: Page, phase: str) -> None:
    for field, text in payloads(phase).items():
        expect(page.locator(f'#health dd[data-field="{field}"]')).to_have_text(
            text, timeout=ms(10)
        )


def test_dashboard_shows_a_hostile_device_as_text(
    secure_hub: HubProcess, hostile_page: Page, request: pytest.FixtureRequest
) -> None:
    """An admin's fleet page (fleet row, events panel) and the device's own page (status,
    health, latest values, charts, replies, command reply, command history, events) show
    retained and live markup from a device as literal text and run none of it."""
    page = hostile_page
    creds = register(secure_hub, DEVICE)
    with MqttDevice(secure_hub, creds, answer=hostile_answer) as dev:
        publish_retained(dev)
        logged_in(page, secure_hub, "admin")
        expect(page.locator("#link")).to_have_text("live", timeout=ms(10))
        row = page.locator(f'#fleet li[data-device="{DEVICE}"]')
        expect(row.locator(".fw")).to_have_text(f"fw {payloads('retained')['fw']}", timeout=ms(10))

        publish_live(dev)
        expect(row.locator(".error-text")).to_have_text(
            f"error: {payloads('live')['error']}", timeout=ms(10)
        )
        # The hub reports the publish outside the topic rules, with its topic, as an event.
        expect(page.locator("#events")).to_contain_text(trap("topic"), timeout=ms(10))
        # A failed login names the account it tried: someone's markup, as an event too.
        assert login_status(secure_hub, trap("login"), "wrong") == 401
        expect(page.locator("#events")).to_contain_text(trap("login"), timeout=ms(10))
        save_screenshot(page, f"{request.node.name}-fleet")
        assert_no_script_ran(page)

        row.click()
        expect(page).to_have_url(f"{secure_hub.http_url}/devices/{DEVICE}", timeout=ms(10))
        expect_health_shown(page, "live")
        expect(page.locator("#facts")).to_contain_text(payloads("live")["board"])
        page.select_option("#command-op", "ping")
        page.click("#command-send")
        reply = page.locator("#command-reply")
        expect(reply).to_contain_text(f"version: {REPLY_TEXT}", timeout=ms(10))
        expect(reply).to_contain_text(f"{REPLY_KEY}: x")
        expect(page.locator("#replies")).to_contain_text(f"version: {REPLY_TEXT}")
        expect(page.locator("#commands")).to_contain_text(REPLY_TEXT, timeout=ms(20))
        # Numbers are shown as numbers (the last health message keeps the contract).
        expect(page.locator('#health dd[data-field="heap"]')).to_have_text("30000")
        # Live readings on hostile sensor names, if the hub let them through, are chart titles.
        for sensor in HOSTILE_SENSORS:
            dev.attempt(telemetry_topic(DEVICE, sensor), "1f,20,2.5")
        dev.publish(telemetry_topic(DEVICE, "temp"), "1f,21,3.5")
        expect(page.locator('#charts .sensor-chart[data-sensor="temp"] h3')).to_have_text(
            "temp", timeout=ms(10)
        )
        for title in page.locator("#charts .sensor-chart h3").all_text_contents():
            assert title in {"temp", *HOSTILE_SENSORS}, title
        # Once the reading is stored, a reload charts it from the hub's series.
        deadline = time.monotonic() + scaled(10)
        while not hub_api(secure_hub, "GET", f"/api/devices/{DEVICE}/telemetry?sensor=temp")[1]:
            assert time.monotonic() < deadline, "the temp reading was never stored"
            time.sleep(0.1)
        page.reload()
        expect_health_shown(page, "live")
        expect(page.locator('#charts .sensor-chart[data-sensor="temp"]')).to_have_count(
            1, timeout=ms(10)
        )
        save_screenshot(page, request.node.name)
    assert_no_script_ran(page)


def test_web_client_shows_a_hostile_device_as_text(
    secure_hub: HubProcess, hostile_page: Page, request: pytest.FixtureRequest
) -> None:
    """The web MQTT client, logged in with the session's token, shows retained and live markup
    from a device (topics and payloads) as literal text and runs none of it."""
    page = hostile_page
    creds = register(secure_hub, DEVICE)
    with MqttDevice(secure_hub, creds, answer=hostile_answer) as dev:
        publish_retained(dev)
        logged_in(page, secure_hub, "admin", next_path="/client")
        expect(page.locator("#password")).not_to_have_value("", timeout=ms(10))
        page.click("#connect")
        expect(page.locator("#status")).to_have_text("connected", timeout=ms(10))
        for kind in ("m", "s", "r", "t/+"):
            page.fill("#sub-filter", f"d/+/{kind}")
            page.click("#subscribe")
            expect(page.locator(f'#subscriptions li[data-filter="d/+/{kind}"]')).to_contain_text(
                "granted", timeout=ms(5)
            )
        messages = page.locator("#messages")
        for text in payloads("retained").values():
            expect(messages).to_contain_text(json.dumps(text)[1:-1], timeout=ms(10))
        publish_live(dev)
        for text in payloads("live").values():
            expect(messages).to_contain_text(json.dumps(text)[1:-1], timeout=ms(10))
        page.select_option("#view", "json")
        expect(messages).to_contain_text(json.dumps(payloads("live")["fw"]))
        save_screenshot(page, request.node.name)
    assert_no_script_ran(page)
