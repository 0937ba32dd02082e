"""The README's quick start: `tools/demo.sh` (what `make demo` runs) on a fresh data dir."""

import os
import re
import signal
import subprocess
import threading
import urllib.request
from pathlib import Path

from tests.support.hubproc import scaled

ROOT = Path(__file__).resolve().parents[2]


def test_demo_serves_the_console_and_stops_cleanly_on_ctrl_c(tmp_path: Path) -> None:
    """The demo prints the console's address and a one-time admin login, serves the console
    there, its devices connect, and Ctrl-C ends it with status 0."""
    lines: list[str] = []
    demo = subprocess.Popen(
        ["bash", str(ROOT / "tools" / "demo.sh"), "2"],
        env={**os.environ, "DATA_DIR": str(tmp_path / "data")},
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert demo.stdout is not None
    watchdog = threading.Timer(scaled(60), demo.kill)  # a demo that never gets there fails
    watchdog.start()
    try:
        for line in demo.stdout:
            lines.append(line.rstrip())
            if "] connected to " in line:
                break
        output = "\n".join(lines)
        console = re.search(r"^console: (http://\S+)/$", output, re.M)
        assert console, output
        assert re.search(r"^log in as name: admin, one-time password: \S{8,}$", output, re.M)
        with urllib.request.urlopen(console.group(1) + "/", timeout=scaled(10)) as page:
            assert b"<html" in page.read().lower()
        demo.send_signal(signal.SIGINT)
        rest, _ = demo.communicate(timeout=scaled(20))
    finally:
        watchdog.cancel()
        if demo.poll() is None:
            demo.kill()
            demo.wait()
    assert demo.returncode == 0, output + rest
    assert "demo: stopped" in rest
