"""The console over https end to end: Chromium trusts the hub's server certificate, logs in
over https, sees a device's live data over wss on the same origin, and downloads a client
certificate issued in the console."""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from playwright.sync_api import Page, expect, sync_playwright

from hub.topics import status_topic, telemetry_topic
from tests.browser.conftest import ARTIFACTS, CHROMIUM, CHROMIUM_ARGS
from tests.browser.console import (
    TRAP_SCRIPT,
    MqttDevice,
    add_user,
    assert_no_script_ran,
    login,
    ms,
    register,
)
from tests.support.hubproc import HubProcess, hub_cli, start_hub


def spki_sha256(server_pem: Path) -> str:
    """Base64 of the SHA-256 of the server certificate's public key (what Chromium's
    --ignore-certificate-errors-spki-list takes)."""
    cert = x509.load_pem_x509_certificate(server_pem.read_bytes())  # the first: the server's
    spki = cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return base64.b64encode(hashlib.sha256(spki).digest()).decode()


@pytest.fixture
def tls_hub(tmp_path: Path) -> Iterator[HubProcess]:
    """A secure hub with a CA and server certificate made by `hub certs init`."""
    data_dir = tmp_path / "hub-data"
    data_dir.mkdir()
    result = hub_cli(data_dir, "certs", "init")
    assert result.returncode == 0, result.stderr
    process = start_hub(data_dir, secure=True)
    assert process.wss_port is not None, process.ready_line
    yield process
    process.stop()


@pytest.fixture
def tls_page(tls_hub: HubProcess, request: pytest.FixtureRequest) -> Iterator[Page]:
    """A Chromium of its own that trusts only the hub's server key among unknown certificates."""
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: run tools/bootstrap.sh (it installs chromium)")
    trust = spki_sha256(tls_hub.data_dir / "certs" / "server.pem")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM),
            args=[*CHROMIUM_ARGS, f"--ignore-certificate-errors-spki-list={trust}"],
        )
        context = browser.new_context(accept_downloads=True)
        context.add_init_script(TRAP_SCRIPT)
        page = context.new_page()
        request.node._page = page
        yield page
        context.close()
        browser.close()


def test_dashboard_over_https_gets_live_data_over_wss(
    tls_hub: HubProcess, tls_page: Page, tmp_path: Path
) -> None:
    """Logged in over https, the dashboard connects to wss on its own origin, shows a device's
    reading live, and an admin's client certificate comes as two DER downloads."""
    hub, page = tls_hub, tls_page
    origin = f"https://127.0.0.1:{hub.wss_port}"
    sockets: list[str] = []
    page.on("websocket", lambda ws: sockets.append(ws.url))
    creds = register(hub, "tls-1")
    login(page, origin, "tia", add_user(hub, "tia", "admin"))
    secure_cookies = [c for c in page.context.cookies() if c["name"] == "hub_session"]
    assert secure_cookies and secure_cookies[0]["secure"]
    expect(page.locator("#link")).to_have_text("live", timeout=ms(10))
    assert sockets and set(sockets) == {f"wss://127.0.0.1:{hub.wss_port}/mqtt"}

    with MqttDevice(hub, creds) as dev:
        dev.publish(status_topic("tls-1"), "online", retain=True)
        row = page.locator('#fleet li[data-device="tls-1"]')
        expect(row.locator(".status")).to_have_text("online", timeout=ms(10))
        row.click()
        expect(page).to_have_url(f"{origin}/devices/tls-1", timeout=ms(10))
        expect(page.locator("#link")).to_have_text("live", timeout=ms(10))
        dev.publish(telemetry_topic("tls-1", "temp"), "2a,0,19.5")
        expect(page.locator("#latest")).to_contain_text("temp 19.5", timeout=ms(5))
        expect(page.locator('#charts .chart[data-sensor="temp"]')).to_have_attribute(
            "data-points", "1", timeout=ms(5)
        )
    assert set(sockets) == {f"wss://127.0.0.1:{hub.wss_port}/mqtt"}

    page.go_back()

    page.locator('#registry li[data-device="tls-1"] button.cert').click()
    expect(page.locator("#secret")).to_be_visible(timeout=ms(10))
    fingerprint = page.locator('#secret-fields dd[data-field="fingerprint"]').inner_text()
    files = {}
    for name in ("tls-1.cert.der", "tls-1.key.der"):
        with page.expect_download() as info:
            page.get_by_text(f"download {name}").click()
        files[name] = tmp_path / name
        info.value.save_as(files[name])
    cert = x509.load_der_x509_certificate(files["tls-1.cert.der"].read_bytes())
    assert cert.subject.rfc4514_string() == "CN=tls-1"
    assert fingerprint == hashlib.sha256(files["tls-1.cert.der"].read_bytes()).hexdigest()
    serialization.load_der_private_key(files["tls-1.key.der"].read_bytes(), password=None)
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "dashboard-https.png"), full_page=True)
    assert_no_script_ran(page)
