"""`python -m tools deploy` and `provision` against the virtual board and a real hub."""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.hubproc import HubProcess, hub_cli, provision, scaled, start_hub
from tests.support.vboards import Vboard, start_vboard
from tools.diagnose import diagnose, refused_credentials
from tools.hubaddr import parse_hub

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def board(tmp_path: Path) -> Iterator[Vboard]:
    vb = start_vboard(tmp_path / "vboard")
    yield vb
    vb.stop()


def tools(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tools", *args],
        capture_output=True,
        text=True,
        timeout=scaled(timeout),
        cwd=ROOT,
    )


def deploy_args(hub: HubProcess, board: Vboard, device: str) -> list[str]:
    return [
        "--board",
        "unix-sim",
        "--port",
        board.port,
        "--hub",
        hub.mqtt_url,
        "--device",
        device,
        "--data-dir",
        str(hub.data_dir),
        "--api",
        hub.http_url,
        "--timeout",
        str(scaled(20)),
    ]


def online(hub: HubProcess, device: str) -> dict[str, object]:
    """The hub's view of the device, through its HTTP API."""
    import urllib.request

    token = hub_cli(hub.data_dir, "token", "create", "--subscribe", "d/+/t/+").stdout.split()[-1]
    request = urllib.request.Request(
        f"{hub.http_url}/api/devices", headers={"Authorization": f"Bearer {token}"}
    )
    with urllib.request.urlopen(request, timeout=scaled(5)) as response:
        rows = json.loads(response.read())
    return next(row for row in rows if row["id"] == device)


def board_files(board: Vboard) -> set[str]:
    return {p.relative_to(board.folder).as_posix() for p in board.folder.rglob("*") if p.is_file()}


def test_deploy_brings_the_device_online_and_copies_only_changes(
    secure_hub: HubProcess, board: Vboard
) -> None:
    """The deployed firmware boots and the hub sees it online; a second deploy copies nothing,
    keeps the secret, and the device comes back with a new boot; no umqtt, no secret leaks."""
    provision(secure_hub, "dev-1")
    start = time.monotonic()
    first = tools("deploy", *deploy_args(secure_hub, board, "dev-1"))
    assert first.returncode == 0, first.stdout + first.stderr
    first_s = time.monotonic() - start
    assert "deploy: dev-1 is online" in first.stdout
    row = online(secure_hub, "dev-1")
    assert row["online"] is True
    files = board_files(board)
    assert {"boot.py", "main.py", "board.json", "settings.json", "node/app.mpy"} <= files
    assert not any(f.startswith("umqtt") for f in files)  # frozen in stock firmware
    assert not any(f.startswith("node/") and f.endswith(".py") for f in files)
    settings = json.loads((board.folder / "settings.json").read_text())
    assert settings["id"] == settings["username"] == "dev-1"
    assert settings["hub_port"] == secure_hub.mqtt_port
    secret = settings["password"]

    second = tools("deploy", *deploy_args(secure_hub, board, "dev-1"))
    assert second.returncode == 0, second.stdout + second.stderr
    assert "copied 0 file(s)" in second.stdout and "new secret" not in second.stdout
    assert json.loads((board.folder / "settings.json").read_text())["password"] == secret
    boot = second.stdout.split("(boot ")[-1].split(")")[0]
    assert boot != first.stdout.split("(boot ")[-1].split(")")[0]
    assert online(secure_hub, "dev-1")["health"]["boot"] == boot  # type: ignore[index]
    for text in (first.stdout, first.stderr, second.stdout, second.stderr, board.console()):
        assert secret not in text
    leftovers = Path(tempfile.gettempdir()).glob("deploy-*/settings.json")
    assert not any(secret in p.read_text() for p in leftovers)
    print(f"first deploy {first_s:.1f} s")


def test_deploy_with_wrong_credentials_says_so(
    secure_hub: HubProcess, board: Vboard, tmp_path: Path
) -> None:
    """Credentials the hub refuses end the deploy quickly with that diagnosis and exit code 2;
    the firmware says so in its stable `link: refused 4` line, which deploy diagnoses on its own
    (the human-readable `link down` line stays for people)."""
    provision(secure_hub, "dev-2")
    wrong = tmp_path / "creds.json"
    wrong.write_text(json.dumps({"username": "dev-2", "password": "not-the-secret"}))
    result = tools("deploy", *deploy_args(secure_hub, board, "dev-2"), "--credentials", str(wrong))
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stderr.startswith("tools: error: credentials refused: dev-2 reached the hub")
    assert "(CONNACK 4, bad user name or password)" in result.stderr
    assert "not-the-secret" not in result.stdout + result.stderr

    console = board.console()
    assert re.search(r"^link: refused 4\r?$", console, re.MULTILINE), console[-2000:]
    assert "link down (MQTTException(4,)), retry in" in console  # the human line stays
    lines = console.splitlines()
    stable_only = "\n".join(line for line in lines if not line.startswith("link down"))
    assert refused_credentials(stable_only) == 4
    why = diagnose(stable_only, "dev-2", parse_hub(secure_hub.mqtt_url), 1)
    assert why.startswith("credentials refused: dev-2 reached the hub"), why


@pytest.mark.parametrize(
    ("url", "where"),
    [
        ("mqtt://127.0.0.1:9", "127.0.0.1:9"),  # nothing listens on the discard port
        ("mqtt://127.0.0.1:9,mqtt://127.0.0.1:7", "127.0.0.1:9 or 127.0.0.1:7"),
    ],
)
def test_deploy_to_an_unreachable_hub_says_so(
    url: str, where: str, hub: HubProcess, board: Vboard
) -> None:
    """A device that boots but finds no broker at the given address (or any of several) is
    diagnosed as such, naming every address."""
    provision(hub, "dev-3")
    args = deploy_args(hub, board, "dev-3")
    args[args.index("--hub") + 1] = url
    args[args.index("--timeout") + 1] = str(scaled(4))
    result = tools("deploy", *args)
    assert result.returncode == 2, result.stdout + result.stderr
    assert f"dev-3 boots but cannot reach the hub at {where} (" in result.stderr
    assert "link: refused" not in board.console()  # no hub, so nothing refused it


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--board", "nope"], "no board 'nope'; known boards: esp32-devkitc"),
        (["--port", "/dev/ttyNOPE"], "no serial port /dev/ttyNOPE"),
        (["--hub", "http://x"], "--hub must look like mqtt://HOST:PORT"),
        (["--device", "Bad Id"], "bad device id 'Bad Id'"),
        (["--hub", "mqtt://a:1,mqtts://b:2"], "must be all mqtt:// or all mqtts://"),
        (["--hub", "mqtt://a:1,mqtt://a:1"], "--hub lists a:1 twice"),
        (["--hub", "mqtt://a:1,"], "without an empty one"),
        (["--hub", "mqtt://a:1,mqtt://u:secret@b:2"], "--hub takes no user name or password"),
    ],
)
def test_deploy_bad_input_is_a_clear_error(args: list[str], message: str, tmp_path: Path) -> None:
    """Bad arguments give `tools: error: ...` and exit code 2 before anything is touched."""
    base = {
        "--board": "unix-sim",
        "--port": str(tmp_path),
        "--device": "dev-1",
        "--hub": "mqtt://127.0.0.1:1883",
        "--no-wait": None,
    }
    base.update(dict(zip(args[::2], args[1::2], strict=True)))
    argv = [x for k, v in base.items() for x in ((k,) if v is None else (k, v))]
    result = tools("deploy", *argv)
    assert result.returncode == 2 and result.stderr.startswith("tools: error: "), result.stderr
    assert message in result.stderr


def test_provision_registers_and_deploys_and_is_safe_to_rerun(
    secure_hub: HubProcess, board: Vboard
) -> None:
    """One command registers the device and brings it online; running it again changes nothing."""
    args = deploy_args(secure_hub, board, "dev-4")
    args[args.index("--device")] = "--id"
    refused = tools("provision", *args)
    assert refused.returncode == 2 and "--allow-insecure" in refused.stderr
    listed = hub_cli(secure_hub.data_dir, "device", "list")
    assert "dev-4" not in listed.stdout  # the refusal changed nothing
    first = tools("provision", *args, "--allow-insecure")
    assert first.returncode == 0, first.stdout + first.stderr
    assert "registered dev-4" in first.stdout and "dev-4 is online" in first.stdout
    again = tools("provision", *args, "--allow-insecure")
    assert again.returncode == 0, again.stdout + again.stderr
    assert "already registered" in again.stdout and "copied 0 file(s)" in again.stdout
    assert "dev-4 is online" in again.stdout
    assert online(secure_hub, "dev-4")["online"] is True


def test_provision_refuses_before_registering_when_the_api_is_unreachable(
    secure_hub: HubProcess, tmp_path: Path
) -> None:
    """provision checks the hub's HTTP API answers before it registers anything, and names
    --api in its error; the registry is left as it was."""
    args = [
        "--board",
        "unix-sim",
        "--port",
        str(tmp_path),
        "--id",
        "dev-5",
        "--hub",
        secure_hub.mqtt_url,
        "--data-dir",
        str(secure_hub.data_dir),
        "--allow-insecure",
        "--api",
        "http://127.0.0.1:9",
    ]
    result = tools("provision", *args)
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stderr.startswith(
        "tools: error: cannot reach the hub's HTTP API at http://127.0.0.1:9 (--api): "
    )
    assert "nothing was registered" in result.stderr
    assert "registered" not in result.stdout
    assert "dev-5" not in hub_cli(secure_hub.data_dir, "device", "list").stdout


def test_provision_with_two_plain_addresses_needs_allow_insecure(
    secure_hub: HubProcess, tmp_path: Path
) -> None:
    """provision takes a comma-separated --hub too, and refuses plain MQTT for all of them
    (naming them) before it registers anything."""
    both = f"mqtt://127.0.0.1:9,{secure_hub.mqtt_url}"
    args = [
        "--board",
        "unix-sim",
        "--port",
        str(tmp_path),
        "--id",
        "dev-7",
        "--hub",
        both,
        "--data-dir",
        str(secure_hub.data_dir),
        "--api",
        secure_hub.http_url,
    ]
    result = tools("provision", *args)
    assert result.returncode == 2, result.stdout + result.stderr
    assert f"tools: error: --hub {both} is plain MQTT" in result.stderr
    assert "--allow-insecure" in result.stderr
    args[args.index("--hub") + 1] = "mqtts://a:1,mqtt://b:1"
    mixed = tools("provision", *args)
    assert mixed.returncode == 2 and "all mqtt:// or all mqtts://" in mixed.stderr
    assert "dev-7" not in hub_cli(secure_hub.data_dir, "device", "list").stdout


def test_tls_provision_with_a_client_certificate_puts_no_secret_on_the_board(
    tmp_path: Path,
) -> None:
    """`provision --cert` over mqtts registers the device, issues its client certificate and
    deploys the hub CA, the certificate and key and no user name or password; the device comes
    online. Once the certificate is revoked, a deploy removes it and gives a secret again."""
    data = tmp_path / "hub"
    assert hub_cli(data, "certs", "init").returncode == 0
    hub = start_hub(data, secure=True)
    # mbedTLS takes its ~40 KB from the unix port's GC heap (an ESP32 uses the IDF heap).
    board = start_vboard(tmp_path / "vboard", "--heap", "192K")
    try:
        args = [
            "--board",
            "unix-sim",
            "--port",
            board.port,
            "--data-dir",
            str(data),
            "--api",
            hub.http_url,
            "--timeout",
            str(scaled(30)),
        ]
        mqtts = ["--hub", f"mqtts://localhost:{hub.mqtts_port}"]
        plain = tools(
            "provision",
            *args,
            "--id",
            "tls-dev",
            "--hub",
            hub.mqtt_url,
            "--cert",
            "--allow-insecure",
        )
        assert plain.returncode == 2 and "--cert needs TLS" in plain.stderr
        first = tools("provision", *args, *mqtts, "--id", "tls-dev", "--cert")
        assert first.returncode == 0, first.stdout + first.stderr
        assert "issued a client certificate for tls-dev" in first.stdout
        assert "logs in with its client certificate" in first.stdout
        assert "provision: tls-dev is online" in first.stdout
        assert {"ca.der", "cert.der", "key.der"} <= board_files(board)
        settings = json.loads((board.folder / "settings.json").read_text())
        assert settings["tls"] is True
        assert settings.get("username") is None and settings.get("password") is None
        again = tools("provision", *args, *mqtts, "--id", "tls-dev", "--cert")
        assert again.returncode == 0 and "issued" not in again.stdout  # still current

        assert hub_cli(data, "device", "cert", "tls-dev", "--revoke").returncode == 0
        second = tools("deploy", *args, *mqtts, "--device", "tls-dev")
        assert second.returncode == 0, second.stdout + second.stderr
        assert "new secret for tls-dev" in second.stdout and "is online" in second.stdout
        assert not {"cert.der", "key.der"} & board_files(board)
        settings = json.loads((board.folder / "settings.json").read_text())
        assert settings["username"] == "tls-dev" and isinstance(settings["password"], str)
    finally:
        board.stop()
        hub.stop()


def test_deploy_with_two_hub_addresses_writes_both_and_fails_over(
    secure_hub: HubProcess, board: Vboard, tmp_path: Path
) -> None:
    """`--hub A,B` writes both addresses, in order, to the board's `hubs` setting (replacing the
    single-address form); with A dead the device comes online through B and deploy names B. A
    later single-address deploy writes the older `hub_host`/`hub_port` form back."""
    provision(secure_hub, "dev-6")
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        dead = s.getsockname()[1]
    args = deploy_args(secure_hub, board, "dev-6")
    args[args.index("--hub") + 1] = f"mqtt://127.0.0.1:{dead},{secure_hub.mqtt_url}"
    result = tools("deploy", *args)
    assert result.returncode == 0, result.stdout + result.stderr
    on = f"{secure_hub.host}:{secure_hub.mqtt_port}"
    assert f"deploy: dev-6 is on the hub at {on}" in result.stdout
    assert "deploy: dev-6 is online" in result.stdout
    settings = json.loads((board.folder / "settings.json").read_text())
    assert settings["hubs"] == [f"127.0.0.1:{dead}", on]
    assert "hub_host" not in settings and "hub_port" not in settings
    console = board.console()
    assert "link down (OSError(111,))" in console and f"connected to {on} as dev-6" in console
    assert online(secure_hub, "dev-6")["online"] is True

    again = tools("deploy", *deploy_args(secure_hub, board, "dev-6"))
    assert again.returncode == 0, again.stdout + again.stderr
    assert "is on the hub at" not in again.stdout  # said only when there is a choice
    settings = json.loads((board.folder / "settings.json").read_text())
    assert "hubs" not in settings and settings["hub_port"] == secure_hub.mqtt_port
