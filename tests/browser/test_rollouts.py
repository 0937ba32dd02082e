"""The rollouts page, as an admin, against a real hub: start, follow, pause, resume, cancel."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from hub.topics import meta_topic
from tests.browser.conftest import save_screenshot
from tests.browser.console import (
    MqttDevice,
    assert_no_script_ran,
    health_json,
    hub_api,
    logged_in,
    ms,
    register,
)
from tests.ota.conftest import build
from tests.support.hubproc import HubProcess, hub_cli, start_hub

HOSTILE = '<img src=x onerror="window.__pwned.push(1)">'


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An app bundle for unix-sim, built once for the module."""
    return build(tmp_path_factory.mktemp("rollout-bundle") / "app.tar", "1.2.0")


@pytest.fixture
def hub(tmp_path: Path, bundle: Path) -> Iterator[HubProcess]:
    """A hub with its default security and the bundle registered."""
    process = start_hub(tmp_path / "hub-data", secure=True)
    try:
        result = hub_cli(process.data_dir, "app", "add", str(bundle))
        assert result.returncode == 0, result.stderr
        yield process
    finally:
        process.stop()


def test_admin_starts_follows_pauses_resumes_and_cancels_a_rollout(
    hub: HubProcess, page: Page
) -> None:
    """An admin starts a rollout from the page: a device whose health names a hostile board is
    refused with that reason shown as text, the other one is assigned; pause, resume and
    cancel change its status; a bad request's error is shown; no script from a device ran."""
    with MqttDevice(hub, register(hub, "br-1")) as device:
        device.publish(meta_topic("br-1"), health_json(board=HOSTILE))
        register(hub, "br-2")  # registered, never connected: assigned, its update waits
        logged_in(page, hub, "admin", "/rollouts")
        expect(page.locator("#no-rollouts")).to_be_visible()
        page.fill("#start-app", "7.7.7")
        page.fill("#start-devices", "br-1,br-2")
        page.click("#start")
        expect(page.locator("#start-error")).to_contain_text("no app version '7.7.7'")
        page.fill("#start-app", "1.2.0")
        page.fill("#start-canary", "0")
        page.fill("#start-steps", "100%")
        page.click("#start")
        panel = page.locator("#rollout-panel")
        expect(panel).to_be_visible(timeout=ms(10))
        expect(page.locator("#rollout-status")).to_have_text("running")
        refused = page.locator('#members tr[data-device="br-1"]')
        expect(refused.locator('[data-field="state"]')).to_have_text("refused", timeout=ms(10))
        expect(refused).to_contain_text(
            f"wrong board: the bundle is for unix-sim, br-1 is {HOSTILE}"
        )
        assigned = page.locator('#members tr[data-device="br-2"] [data-field="state"]')
        expect(assigned).to_have_text("offered", timeout=ms(10))
        expect(page.locator("#stages")).to_contain_text("100%: 1 of 2 done")
        save_screenshot(page, "rollouts")
        page.click("#rollout-pause")
        expect(page.locator("#rollout-status")).to_have_text("paused")
        expect(page.locator("#rollout-pause")).to_be_hidden()
        page.click("#rollout-resume")
        expect(page.locator("#rollout-status")).to_have_text("running")
        page.click("#rollout-cancel")
        expect(page.locator("#rollout-status")).to_have_text("cancelled")
        expect(page.locator("#rollout-cancel")).to_be_hidden()
        expect(page.locator("#rollouts li")).to_have_count(1)
        assert_no_script_ran(page)
    status, found = hub_api(hub, "GET", "/api/rollouts/1")
    assert status == 200 and found["status"] == "cancelled" and found["by"] == "admin-user"
    assert {d["device"]: d["state"] for d in found["devices"]} == {
        "br-1": "refused",
        "br-2": "offered",
    }


def test_rollouts_api_refuses_bad_input_and_non_admins(hub: HubProcess, page: Page) -> None:
    """POST /api/rollouts checks its body as the CLI does (400 naming the field), a device in
    an active rollout is a 409 naming the rollout, an unknown id a 404, a finished rollout's
    action a 409; a viewer's page shows the API's refusal as text."""
    register(hub, "api-1")
    for body, words in [
        ({"app": "1.2.0"}, "target"),
        ({"app": "1.2.0", "devices": ["api-1"], "steps": [50, 20]}, "steps"),
        ({"app": "1.2.0", "devices": ["api-1"], "canary": True}, "canary"),
        ({"app": "1.2.0", "devices": ["<b>"]}, "bad device id"),
        ({"app": "1.2.0", "devices": ["api-1"], "extra": 1}, "unknown field"),
        ({"app": "0.0.0", "devices": ["api-1"]}, "no app version"),
    ]:
        status, answer = hub_api(hub, "POST", "/api/rollouts", body)
        assert status == 400 and words in answer["error"], (body, status, answer)
    status, made = hub_api(hub, "POST", "/api/rollouts", {"app": "1.2.0", "devices": ["api-1"]})
    assert status == 201 and made["devices"][0]["device"] == "api-1", made
    status, answer = hub_api(hub, "POST", "/api/rollouts", {"app": "1.2.0", "devices": "api-1"})
    assert status == 409 and f"is in rollout {made['id']} already" in answer["error"]
    assert hub_api(hub, "GET", "/api/rollouts/999")[0] == 404
    assert hub_api(hub, "GET", "/api/rollouts/x")[0] == 404
    assert hub_api(hub, "POST", f"/api/rollouts/{made['id']}/cancel")[0] == 200
    status, answer = hub_api(hub, "POST", f"/api/rollouts/{made['id']}/resume")
    assert status == 409 and "cancelled" in answer["error"]
    status, listing = hub_api(hub, "GET", "/api/rollouts")
    assert status == 200 and [r["id"] for r in listing["rollouts"]] == [made["id"]]
    logged_in(page, hub, "viewer", "/rollouts")
    expect(page.locator("#page-error")).to_contain_text("could not list rollouts")
