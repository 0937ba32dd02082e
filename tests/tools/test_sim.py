"""`python -m tools sim`: a fleet of real firmware processes against a real hub."""

import asyncio
import json
import select
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hub import topics
from hub.registry import Registry
from tests.support.hubproc import HubProcess, provision, scaled
from tests.support.mqtt import RawClient
from tools.sim import device_ids


def _sim(hub: HubProcess, *args: str) -> subprocess.Popen[str]:
    return _sim_to(hub.mqtt_url, *args)


def _sim_to(url: str, *args: str) -> subprocess.Popen[str]:
    cmd = [sys.executable, "-m", "tools", "sim", "--hub", url, *args]
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
    assert output.rstrip().endswith("sim: stopped; 3 of 3 device(s) connected")


def test_fleet_stops_by_itself_after_seconds(hub: HubProcess) -> None:
    """--seconds ends the run with exit code 0."""
    sim = _sim(hub, "--count", "1", "--seconds", "1.5")
    output, _ = sim.communicate(timeout=scaled(20))
    assert sim.returncode == 0
    assert "[sim-001] connected" in output and "sim: stopped" in output


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("http://x:1", "must look like mqtt://HOST:PORT"),
        ("mqtt://x:99999", "bad port"),
        ("mqtts://x:8883", "simulated devices connect without TLS"),
        ("mqtts://x:8883,mqtts://y:8883", "simulated devices connect without TLS"),
        ("mqtt://x:1,mqtt://x:1", "--hub lists x:1 twice"),
    ],
)
def test_bad_hub_url_is_a_clear_error(url: str, message: str) -> None:
    """A --hub the sim cannot use gives `tools: error: ...` and exit code 2."""
    result = subprocess.run(
        [sys.executable, "-m", "tools", "sim", "--hub", url],
        capture_output=True,
        text=True,
        timeout=scaled(20),
    )
    assert result.returncode == 2 and message in result.stderr, result.stderr


@pytest.mark.parametrize("prefix", ["Lab", "-x", "a" * 29, "a/b"])
def test_bad_prefix_is_a_clear_error(prefix: str) -> None:
    """A --prefix that makes no valid device id is refused before anything runs."""
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "tools",
            "sim",
            "--hub",
            "mqtt://127.0.0.1:1",
            f"--prefix={prefix}",
        ],
        capture_output=True,
        text=True,
        timeout=scaled(20),
    )
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith(f"tools: error: --prefix {prefix!r} does not make device ids")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--count", "0"], "--count must be 1 to 999"),
        (["--count", "1000"], "--count must be 1 to 999"),
        (["--period", "0"], "--period must be 1 to 86400 seconds"),
    ],
)
def test_bad_count_or_period_is_a_clear_error(args: list[str], message: str) -> None:
    """A fleet size or period the sim or the firmware cannot take is refused before it runs."""
    result = subprocess.run(
        [sys.executable, "-m", "tools", "sim", "--hub", "mqtt://127.0.0.1:1", *args],
        capture_output=True,
        text=True,
        timeout=scaled(20),
    )
    assert result.returncode == 2 and result.stderr == f"tools: error: {message}\n"


def test_sim_provisions_its_devices_on_a_secure_hub(secure_hub: HubProcess) -> None:
    """With --data-dir the sim registers its devices (allowed without TLS) and they get in."""
    cmd = [
        sys.executable,
        "-m",
        "tools",
        "sim",
        "--hub",
        secure_hub.mqtt_url,
        "--count",
        "2",
        "--seconds",
        "2",
        "--data-dir",
        str(secure_hub.data_dir),
    ]
    for _ in range(2):  # a later run rotates the secrets of the devices a sim registered before
        result = subprocess.run(cmd, capture_output=True, text=True, timeout=scaled(30))
        assert result.returncode == 0, result.stdout + result.stderr
        assert "[sim-001] connected" in result.stdout and "[sim-002] connected" in result.stdout
    listed = subprocess.run(
        [
            sys.executable,
            "-m",
            "hub",
            "device",
            "list",
            "--json",
            "--data-dir",
            str(secure_hub.data_dir),
        ],
        capture_output=True,
        text=True,
        timeout=scaled(30),
    )
    assert [d["id"] for d in json.loads(listed.stdout)] == ["sim-001", "sim-002"]


def _wait_line(proc: subprocess.Popen[str], text: str, timeout: float = 20) -> str:
    """Reads the process's output until a line holds text; returns what it read."""
    assert proc.stdout is not None
    deadline = time.monotonic() + scaled(timeout)
    seen = ""
    while text not in seen:
        left = deadline - time.monotonic()
        assert left > 0, f"{text!r} never came:\n{seen}"
        ready, _, _ = select.select([proc.stdout], [], [], left)
        line = proc.stdout.readline() if ready else ""
        assert line or proc.poll() is None, f"exited before {text!r}:\n{seen}"
        seen += line
    return seen


def test_sim_prefix_names_the_devices(hub: HubProcess) -> None:
    """--prefix gives the devices other ids, and the closing line says how many connected."""
    sim = _sim(hub, "--count", "1", "--prefix", "lab", "--seconds", "2")
    output, _ = sim.communicate(timeout=scaled(20))
    assert sim.returncode == 0, output
    assert f"[lab-001] connected to {hub.host}:{hub.mqtt_port} as lab-001" in output
    assert "sim-001" not in output
    assert output.rstrip().endswith("sim: stopped; 1 of 1 device(s) connected")


def test_sim_beside_a_running_sim_refuses_to_rotate_its_secrets(
    secure_hub: HubProcess, tmp_path: Path
) -> None:
    """A second sim on the same data dir and prefix (a sim beside `make demo`) is refused before
    it changes a secret, and the first sim's device stays connected; another prefix is fine."""
    data = ["--data-dir", str(secure_hub.data_dir)]
    first = _sim(secure_hub, "--count", "1", *data, "--work-dir", str(tmp_path / "work"))
    try:
        _wait_line(first, "[sim-001] connected")
        settings = json.loads((tmp_path / "work" / "sim-001" / "settings.json").read_text())
        second = subprocess.run(
            [sys.executable, "-m", "tools", "sim", "--hub", secure_hub.mqtt_url, *data],
            capture_output=True,
            text=True,
            timeout=scaled(30),
        )
        assert second.returncode == 2, second.stdout + second.stderr
        assert "tools: error: another sim is running devices sim-NNN on" in second.stderr
        assert "give another --prefix" in second.stderr and "[sim-" not in second.stdout
        registry = Registry(secure_hub.data_dir)
        try:  # the running device's secret still verifies: nothing was rotated
            assert registry.verify("sim-001", settings["password"]) is not None
        finally:
            registry.close()
        other = subprocess.run(
            [
                sys.executable,
                "-m",
                "tools",
                "sim",
                "--hub",
                secure_hub.mqtt_url,
                *data,
                "--prefix",
                "other",
                "--count",
                "1",
                "--seconds",
                "2",
            ],
            capture_output=True,
            text=True,
            timeout=scaled(30),
        )
        assert other.returncode == 0, other.stdout + other.stderr
        assert "[other-001] connected" in other.stdout
    finally:
        first.send_signal(signal.SIGINT)
        output, _ = first.communicate(timeout=scaled(20))
    assert first.returncode == 0, output
    assert "[sim-001] link down" not in output  # the first sim's device was never locked out


def test_sim_refuses_to_rotate_a_device_it_did_not_register(
    secure_hub: HubProcess, tmp_path: Path
) -> None:
    """A registered device that must use TLS is not a sim's: the sim refuses to rotate its
    secret unless --force, and the refusal changes nothing in the registry."""
    creds = provision(secure_hub, "sim-002", allow_insecure=False)
    cmd = [
        sys.executable,
        "-m",
        "tools",
        "sim",
        "--hub",
        secure_hub.mqtt_url,
        "--count",
        "2",
        "--seconds",
        "2",
        "--data-dir",
        str(secure_hub.data_dir),
    ]
    refused = subprocess.run(cmd, capture_output=True, text=True, timeout=scaled(30))
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert "tools: error: sim-002 registered on this hub for TLS, not by a sim" in refused.stderr
    registry = Registry(secure_hub.data_dir)
    try:
        assert registry.get("sim-001") is None  # refused before anything was registered
        assert registry.verify("sim-002", creds["password"]) is not None
        forced = subprocess.run(
            [*cmd, "--force"], capture_output=True, text=True, timeout=scaled(30)
        )
        assert forced.returncode == 0, forced.stdout + forced.stderr
        assert "[sim-002] connected" in forced.stdout
        assert registry.verify("sim-002", creds["password"]) is None  # rotated, as forced
    finally:
        registry.close()


def test_refused_credentials_are_reported_and_end_the_run(secure_hub: HubProcess) -> None:
    """Devices the hub refuses are reported as such, once, and stop; with no device connected
    the sim ends by itself with exit code 2."""
    sim = _sim(secure_hub, "--count", "2")  # no --data-dir: anonymous, which the hub refuses
    output, _ = sim.communicate(timeout=scaled(30))
    assert sim.returncode == 2, output
    for device in device_ids(2):
        line = f"sim: {device}: credentials refused (CONNACK "
        assert output.count(line) == 1, output
    assert "tools: error: no device connected to the hub at " in output
    assert "2 refused their credentials" in output


def test_sim_with_two_hub_addresses_fails_over_to_the_second(hub: HubProcess) -> None:
    """`--hub A,B` gives every device both addresses; with A dead they connect through B."""
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        dead = s.getsockname()[1]
    sim = _sim_to(f"mqtt://127.0.0.1:{dead},{hub.mqtt_url}", "--count", "2", "--seconds", "3")
    output, _ = sim.communicate(timeout=scaled(30))
    assert sim.returncode == 0, output
    assert f"-> mqtt://127.0.0.1:{dead},{hub.mqtt_url}" in output
    for device in device_ids(2):
        assert f"[{device}] link down (OSError(111,))" in output  # the first address refused
        assert f"[{device}] connected to {hub.host}:{hub.mqtt_port} as {device}" in output
    assert output.rstrip().endswith("sim: stopped; 2 of 2 device(s) connected")


def test_no_device_connected_is_an_error() -> None:
    """A sim whose devices never reach the hub exits with code 2 and says so."""
    cmd = [
        sys.executable,
        "-m",
        "tools",
        "sim",
        "--hub",
        "mqtt://127.0.0.1:9",
        "--count",
        "1",
        "--seconds",
        "2",
    ]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=scaled(30))
    assert result.returncode == 2, result.stdout + result.stderr
    assert "[sim-001] link down" in result.stdout
    assert result.stderr.strip() == "tools: error: no device connected to the hub at 127.0.0.1:9"
