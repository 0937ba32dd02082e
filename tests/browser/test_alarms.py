"""Alarms in a real browser against a real hub: an admin adds a rule, a device's reading raises
an alarm, the panel and the fleet view show it, an operator acknowledges it."""

from __future__ import annotations

from playwright.sync_api import Browser, Page, expect

from hub.topics import status_topic, telemetry_topic
from tests.browser.console import (
    TRAP_SCRIPT,
    MqttDevice,
    assert_no_script_ran,
    logged_in,
    ms,
    register,
)
from tests.support.hubproc import HubProcess


def test_rule_raises_an_alarm_shown_and_acknowledged(
    secure_hub: HubProcess, page: Page, browser: Browser
) -> None:
    """An admin adds a device rule (temp above 30) in the page; a reading of 35 raises an alarm
    that the panel lists and the fleet view marks; an operator acknowledges it and the panel
    says by whom; the admin removes the rule."""
    hub = secure_hub
    creds = register(hub, "hot-1")
    register(hub, "cool-1")
    logged_in(page, hub, "admin")
    page.fill("#rule-name", "too hot")
    page.select_option("#rule-scope", "device")
    page.fill("#rule-target", "hot-1")
    page.select_option("#rule-kind", "above")
    page.fill("#rule-sensor", "temp")
    page.fill("#rule-threshold", "30")
    page.click("#rule-add")
    rule = page.locator("#rules li", has_text="too hot")
    expect(rule).to_contain_text("device hot-1", timeout=ms(10))
    expect(rule).to_contain_text("threshold 30")
    expect(page.locator("#rules-error")).to_be_hidden()

    with MqttDevice(hub, creds) as dev:
        dev.publish(status_topic("hot-1"), "online", retain=True)
        dev.publish(telemetry_topic("hot-1", "temp"), "1f,1,35.5")
        alarm = page.locator('#alarms li[data-device="hot-1"]')
        expect(alarm).to_contain_text("too hot", timeout=ms(20))
        expect(page.locator('#fleet li[data-device="hot-1"]')).to_have_class(
            "device alarmed", timeout=ms(20)
        )
        expect(page.locator('#fleet li[data-device="cool-1"]')).to_have_class("device")
        expect(page.locator('#counts [data-count="alarm"]')).to_have_text("1", timeout=ms(20))

        context = browser.new_context()
        context.add_init_script(TRAP_SCRIPT)
        try:
            operator = context.new_page()
            logged_in(operator, hub, "operator")
            op_alarm = operator.locator('#alarms li[data-device="hot-1"]')
            expect(op_alarm).to_contain_text("too hot", timeout=ms(10))
            op_alarm.locator("button.ack").click()
            expect(op_alarm).to_contain_text("acknowledged by operator-user", timeout=ms(10))
            expect(op_alarm.locator("button.ack")).to_have_count(0)
            assert_no_script_ran(operator)
        finally:
            context.close()
    expect(alarm).to_contain_text("acknowledged by operator-user", timeout=ms(20))
    rule.locator("button.remove-rule").click()
    expect(page.locator("#rules li", has_text="too hot")).to_have_count(0, timeout=ms(10))
    assert_no_script_ran(page)
