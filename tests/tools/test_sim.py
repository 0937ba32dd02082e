"""`python -m tools sim`: a fleet of real firmware processes against a real hub."""

import asyncio
import json
import signal
import subprocess
import sys

import pytest

from hub import topics
from tests.support.hubproc import HubProcess, scaled
from tests.support.mqtt import RawClient
from tools.sim import SimError, device_ids, parse_hub_url


def _sim(hub: HubProcess, *args: str) -> subprocess.Popen[str]:
    cmd = [sys.executable, "-m", "tools", "sim", "--hub", hub.mqtt_url, *args]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def test_fleet_publishes_and_goes_offline_on_ctrl_c(hub: HubProcess) -> None:
    """Each simulated device publishes readings; Ctrl-C stops them all and their wills fire."""

    async def scenario() -> tuple[str, dict[str, list[bytes]]]:
        browser = await RawClient.websocket(hub.ws_url)
        await browser.connect("sim-watcher")
        await browser.subscribe([("d/#", 0)])
        sim = _sim(hub, "--count", "3", "--period", "1")
        seen: dict[str, list[bytes]] = {}

        def readings(device: str) -> int:
            return sum(1 for p in seen.get(device, []) if p not in (b"online", b"offline"))

        while not all(readings(d) >= 2 for d in device_ids(3)):
            msg = await browser.next_message(scaled(10))
            seen.setdefault(topics.parse_topic(msg.topic).device, []).append(msg.payload)
        sim.send_signal(signal.SIGINT)
        output, _ = sim.communicate(timeout=scaled(10))
        assert sim.returncode == 0, output
        while not all(seen[d][-1] == b"offline" for d in device_ids(3)):
            msg = await browser.next_message(scaled(10))
            seen.setdefault(topics.parse_topic(msg.topic).device, []).append(msg.payload)
        await browser.close()
        return output, seen

    output, seen = asyncio.run(scenario())
    assert sorted(seen) == ["sim-001", "sim-002", "sim-003"]
    for device in device_ids(3):
        assert f"[{device}] connected to {hub.host}:{hub.mqtt_port} as {device}" in output
    assert output.rstrip().endswith("sim: stopped")


def test_fleet_stops_by_itself_after_seconds(hub: HubProcess) -> None:
    """--seconds ends the run with exit code 0."""
    sim = _sim(hub, "--count", "1", "--seconds", "1.5")
    output, _ = sim.communicate(timeout=scaled(20))
    assert sim.returncode == 0
    assert "[sim-001] connected" in output and "sim: stopped" in output


@pytest.mark.parametrize(
    ("url", "message"),
    [("http://x:1", "must look like mqtt://HOST:PORT"), ("mqtt://x:99999", "bad port")],
)
def test_bad_hub_url_is_a_clear_error(url: str, message: str) -> None:
    """A malformed --hub gives `tools: error: ...` and exit code 2."""
    with pytest.raises(SimError, match=message):
        parse_hub_url(url)
    result = subprocess.run(
        [sys.executable, "-m", "tools", "sim", "--hub", url],
        capture_output=True,
        text=True,
        timeout=scaled(20),
    )
    assert result.returncode == 2 and message in result.stderr


def test_sim_provisions_its_devices_on_a_secure_hub(secure_hub: HubProcess) -> None:
    """With --data-dir the sim registers its devices (allowed without TLS) and they get in."""
    cmd = [sys.executable, "-m", "tools", "sim", "--hub", secure_hub.mqtt_url, "--count", "2",
           "--seconds", "2", "--data-dir", str(secure_hub.data_dir)]  # fmt: skip
    for _ in range(2):  # a second run rotates the secrets of the devices it registered before
        result = subprocess.run(cmd, capture_output=True, text=True, timeout=scaled(30))
        assert result.returncode == 0, result.stdout + result.stderr
        assert "[sim-001] connected" in result.stdout and "[sim-002] connected" in result.stdout
    listed = subprocess.run(
        [sys.executable, "-m", "hub", "device", "list", "--data-dir", str(secure_hub.data_dir)],
        capture_output=True, text=True, timeout=scaled(30),
    )  # fmt: skip
    assert [d["id"] for d in json.loads(listed.stdout)] == ["sim-001", "sim-002"]
