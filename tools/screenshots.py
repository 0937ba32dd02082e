"""The README's console screenshots, taken from the demo itself: runs `tools/demo.sh` on a fresh
data dir (hub, simulated fleet, admin account), logs in with Chromium and saves the fleet view
and one device's page.

    python -m tools.screenshots [--devices 12] [--wait 60] [--out docs]
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking"]
_CONSOLE_RE = re.compile(r"^console: (https?://\S+)/")
_LOGIN_RE = re.compile(r"^log in as name: (\S+), one-time password: (\S+)")


class ScreenshotError(RuntimeError):
    """The demo or the browser did not get to where the screenshots are taken."""


def _read_demo(demo: subprocess.Popen[str], timeout: float) -> tuple[str, str, str]:
    """The console's URL and the admin's name and password from the demo's first lines."""
    assert demo.stdout is not None
    url = name = password = ""
    deadline = time.monotonic() + timeout
    while not (url and name) and time.monotonic() < deadline:
        line = demo.stdout.readline()
        if not line:
            raise ScreenshotError(f"the demo ended early (exit {demo.wait()})")
        if found := _CONSOLE_RE.match(line):
            url = found.group(1)
        if found := _LOGIN_RE.match(line):
            name, password = found.groups()
    if not (url and name):
        raise ScreenshotError("the demo printed no console URL and admin login")
    return url, name, password


def _shoot(url: str, name: str, password: str, device: str, settle: float, out: Path) -> None:
    from playwright.sync_api import expect, sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.goto(f"{url}/login?next=/")
        page.fill("#name", name)
        page.fill("#password", password)
        page.click("#login")
        expect(page.locator("#who")).to_contain_text(name, timeout=20_000)
        expect(page.locator("#fleet li").first).to_be_visible(timeout=20_000)
        page.wait_for_timeout(settle * 1000)
        page.screenshot(path=str(out / "fleet.png"))
        page.goto(f"{url}/devices/{device}")
        expect(page.locator("#charts .chart").first).to_be_visible(timeout=20_000)
        page.wait_for_timeout(2000)
        page.screenshot(path=str(out / "device.png"), full_page=True)
        browser.close()


def take(devices: int, wait: float, out: Path) -> list[Path]:
    """Runs the demo on a temporary data dir, lets it publish for `wait` seconds and saves
    out/fleet.png and out/device.png."""
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="screenshots-") as data:
        env = dict(os.environ, DATA_DIR=data)
        demo = subprocess.Popen(
            ["bash", str(ROOT / "tools" / "demo.sh"), str(devices)],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        try:
            url, name, password = _read_demo(demo, timeout=60)
            time.sleep(wait)  # readings accumulate for the device page's chart
            _shoot(url, name, password, "sim-001", settle=3, out=out)
        finally:
            os.killpg(demo.pid, signal.SIGTERM)
            demo.wait(timeout=30)
    return [out / "fleet.png", out / "device.png"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.screenshots", description=__doc__)
    parser.add_argument("--devices", type=int, default=12, help="simulated devices (12)")
    parser.add_argument("--wait", type=float, default=60, help="seconds of readings first (60)")
    parser.add_argument("--out", type=Path, default=ROOT / "docs", help="folder (docs/)")
    args = parser.parse_args(argv)
    if not CHROMIUM.exists():
        print(
            f"screenshots: {CHROMIUM} is missing (tools/bootstrap.sh installs it)", file=sys.stderr
        )
        return 1
    try:
        for path in take(args.devices, args.wait, args.out):
            print(f"wrote {path}")
    except ScreenshotError as exc:
        print(f"screenshots: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
