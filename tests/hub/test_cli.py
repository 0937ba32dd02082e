"""`python -m hub serve`: the ready line, free ports, clean shutdown, clear errors."""

import asyncio
import json
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from hub.registry import Registry
from tests.support.hubproc import HubProcess, scaled, serve_refused, start_hub
from tests.support.mqtt import RawClient


def test_ready_line_reports_real_free_ports(hub: HubProcess) -> None:
    """Port 0 becomes a real port, and the ready line names every network."""
    assert hub.mqtt_port > 0 and hub.ws_port > 0
    assert hub.http_port == hub.ws_port  # HTTP shares the WebSocket port by default
    assert hub.ready_line == (
        f"ready mqtt=127.0.0.1:{hub.mqtt_port} ws=127.0.0.1:{hub.ws_port} "
        f"http=127.0.0.1:{hub.ws_port}"
    )
    with socket.create_connection((hub.host, hub.mqtt_port), timeout=scaled(2)):
        pass


def test_separate_http_port(tmp_path: Path) -> None:
    """--http-port 0 with a distinct ws port serves the pages on a port of their own."""
    process = start_hub(tmp_path, "--http-port", "0")
    try:
        assert process.http_port not in (0, process.ws_port)
        with socket.create_connection((process.host, process.http_port), timeout=scaled(2)):
            pass
    finally:
        assert process.stop() < scaled(5)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_signal_stops_hub_cleanly_with_clients_connected(tmp_path: Path, sig: int) -> None:
    """SIGINT and SIGTERM stop the hub with exit code 0 within 2 s, clients still connected."""
    process = start_hub(tmp_path)

    async def connect_clients() -> list[RawClient]:
        tcp = await RawClient.tcp(process.host, process.mqtt_port)
        await tcp.connect("tcp-client")
        ws = await RawClient.websocket(process.ws_url)
        await ws.connect("ws-client")
        return [tcp, ws]

    loop = asyncio.new_event_loop()
    try:
        clients = loop.run_until_complete(connect_clients())
        elapsed = process.stop(sig)
        assert process.proc.returncode == 0
        assert elapsed < scaled(2), f"the hub took {elapsed:.2f} s to stop"
        for client in clients:
            loop.run_until_complete(client.expect_closed(scaled(2)))
    finally:
        loop.close()


def test_port_in_use_is_a_clear_error(tmp_path: Path) -> None:
    """A port that is taken gives `hub: error: ...` and exit code 2, not a traceback."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = serve_refused(tmp_path, "--mqtt-port", str(port))
    assert result.returncode == 2
    assert result.stderr.startswith(f"hub: error: cannot listen for MQTT on 127.0.0.1:{port}")
    assert "Traceback" not in result.stderr
    assert result.stdout == ""


def test_bad_port_argument_is_refused(tmp_path: Path) -> None:
    """A port outside 0..65535 is refused by the argument parser."""
    result = serve_refused(tmp_path, "--mqtt-port", "70000")
    assert result.returncode == 2
    assert "port must be from 0 to 65535" in result.stderr


def test_unreachable_store_is_a_clear_error(tmp_path: Path) -> None:
    """A --store that cannot be opened stops the hub with `hub: error: ...` and exit code 2,
    without showing the password in the URL."""
    result = serve_refused(tmp_path, "--store", "postgresql://hub:s3cret@127.0.0.1:1/db")
    assert result.returncode == 2
    assert result.stderr.startswith("hub: error: cannot use the PostgreSQL store")
    assert "s3cret" not in result.stderr and "Traceback" not in result.stderr


def _user(data: Path, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "hub", "user", *args, "--data-dir", str(data)],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=scaled(30),
    )


def test_user_commands_say_what_they_did(tmp_path: Path) -> None:
    """`hub user add/list/passwd/disable/enable/remove` each print what they did; add and
    passwd print a generated one-time password or take one from stdin."""
    data = tmp_path / "data"
    added = _user(data, "add", "ada", "--role", "admin")
    assert added.returncode == 0, added.stderr
    assert added.stdout.startswith("added admin 'ada'\none-time password: ")
    piped = _user(
        data, "add", "otto", "--role", "operator", "--password-stdin", stdin="a chosen password\n"
    )
    assert piped.returncode == 0 and piped.stdout == "added operator 'otto'\n"
    listed = _user(data, "list")
    lines = listed.stdout.splitlines()
    assert lines[0].split() == ["NAME", "ROLE", "ENABLED", "CREATED"]
    assert [line.split()[:3] for line in lines[1:]] == [
        ["ada", "admin", "yes"],
        ["otto", "operator", "yes"],
    ]
    passwd = _user(data, "passwd", "otto")
    assert passwd.stdout.startswith("new password for 'otto'\none-time password: ")
    assert _user(data, "disable", "otto").stdout == "disabled 'otto'\n"
    assert _user(data, "list").stdout.splitlines()[2].split()[2] == "no"
    assert _user(data, "enable", "otto").stdout == "enabled 'otto'\n"
    assert _user(data, "remove", "otto").stdout == "removed 'otto'\n"
    assert "otto" not in _user(data, "list").stdout


@pytest.mark.parametrize(
    ("args", "stdin", "message"),
    [
        (["add", "BAD NAME", "--role", "viewer"], None, "bad account name"),
        (["add", "ada", "--role", "viewer", "--password-stdin"], "short\n", "10 to 1024"),
        (["disable", "ghost"], None, "no account 'ghost'"),
        (["remove", "ghost"], None, "no account 'ghost'"),
    ],
)
def test_user_command_errors(
    tmp_path: Path, args: list[str], stdin: str | None, message: str
) -> None:
    """Bad names, short passwords and unknown accounts are `hub: error:` with exit 2."""
    data = tmp_path / "data"
    data.mkdir(mode=0o700)
    result = _user(data, *args, stdin=stdin)
    assert result.returncode == 2 and result.stderr.startswith("hub: error: ")
    assert message in result.stderr


def test_user_list_refuses_a_missing_data_dir(tmp_path: Path) -> None:
    """`hub user list --data-dir <typo>` fails and creates nothing."""
    result = _user(tmp_path / "typo", "list")
    assert result.returncode == 2 and "does not exist" in result.stderr
    assert not (tmp_path / "typo").exists()


def test_bad_session_limits_are_refused(tmp_path: Path) -> None:
    """An idle limit longer than the session's maximum is a clear error, exit 2."""
    result = serve_refused(tmp_path / "d", "--session-idle", "100", "--session-max", "10")
    assert result.returncode == 2 and result.stderr.startswith("hub: error: session_idle_s")


def _device(data: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "hub", "device", *args, "--data-dir", str(data)],
        capture_output=True,
        text=True,
        timeout=scaled(30),
    )


def test_device_list_is_a_table_and_json_on_request(tmp_path: Path) -> None:
    """`hub device list` prints id, enabled, TLS policy, certificate and last seen (a UTC
    date or `never`); `--json` prints the registry's public fields."""
    data = tmp_path / "data"
    added = _device(data, "add", "d-1")
    assert added.returncode == 0, added.stderr
    assert _device(data, "add", "d-2", "--allow-insecure").returncode == 0
    registry = Registry(data)
    try:
        registry.touch({"d-2": 1_767_225_600.0})  # 2026-01-01 00:00 UTC
    finally:
        registry.close()
    init = [sys.executable, "-m", "hub", "certs", "init", "--data-dir", str(data)]
    assert subprocess.run(init, capture_output=True, timeout=scaled(60)).returncode == 0
    issued = json.loads(_device(data, "cert", "d-1").stdout)
    listed = _device(data, "list")
    assert listed.returncode == 0, listed.stderr
    rows = [line.split("  ") for line in listed.stdout.splitlines()]
    rows = [[cell.strip() for cell in row if cell.strip()] for row in rows]
    assert rows == [
        ["ID", "ENABLED", "TLS", "CERTIFICATE", "LAST SEEN (UTC)"],
        ["d-1", "yes", "tls-required", issued["fingerprint"][:16], "never"],
        ["d-2", "yes", "allow-insecure", "none", "2026-01-01 00:00"],
    ]
    as_json = json.loads(_device(data, "list", "--json").stdout)
    assert [(d["id"], d["last_seen_at"]) for d in as_json] == [
        ("d-1", None),
        ("d-2", 1_767_225_600.0),
    ]
    assert "secret" not in json.dumps(as_json)


def test_device_commands_say_what_they_did(tmp_path: Path) -> None:
    """disable, enable, cert --revoke and remove each print one line naming the device, and
    an empty registry's list says how to add one."""
    data = tmp_path / "data"
    assert _device(data, "add", "d-3").returncode == 0
    assert _device(data, "disable", "d-3").stdout == "disabled (and disconnected) 'd-3'\n"
    assert _device(data, "list").stdout.splitlines()[1].split()[:2] == ["d-3", "no"]
    assert _device(data, "enable", "d-3").stdout == "enabled 'd-3'\n"
    assert _device(data, "cert", "d-3", "--revoke").stdout == (
        "revoked the certificate of 'd-3'\n"
    )
    assert _device(data, "remove", "d-3").stdout == "removed 'd-3'\n"
    assert _device(data, "list").stdout.splitlines()[1] == (
        "(no devices: add one with `hub device add ID`)"
    )
    missing = _device(data, "remove", "d-3")
    assert missing.returncode == 2 and missing.stderr.startswith("hub: error: ")
