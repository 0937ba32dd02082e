"""What a device logs in with, from the hub's registry, and the settings.json that carries it.

The registry keeps only hashes, so the secret on the board is kept while it still verifies and
rotated otherwise; a device with a current client certificate (`hub device cert`) gets the
certificate and key instead of any secret.
"""

from __future__ import annotations

import json
from dataclasses import fields
from pathlib import Path
from typing import Any

from hub.certs import cert_paths, fingerprint
from hub.registry import TLS_REQUIRED, Registry
from tools import mpunix
from tools.errors import ToolError
from tools.hubaddr import HubAddress

CLIENT_CERT_FILES = ("cert.der", "key.der")  # firmware/node/tlsctx.py
SETTING_KEYS = {f.name for f in fields(mpunix.DeviceSettings)}


class CredentialsError(ToolError):
    """The registry cannot give the device credentials (the message says what to do)."""


def with_hubs(settings: mpunix.DeviceSettings, hubs: list[HubAddress]) -> dict[str, Any]:
    """settings.json's content, with the hub addresses in the firmware's form: one address as
    `hub_host`/`hub_port` (as older deploys wrote it), several as `hubs`, ["HOST:PORT", ...]
    (firmware/node/hubs.py), tried in that order."""
    data = settings.to_json()
    if len(hubs) > 1:
        del data["hub_host"], data["hub_port"]
        data["hubs"] = [hub.where for hub in hubs]
    else:
        data.update(hub_host=hubs[0].host, hub_port=hubs[0].port)
    return data


def device_settings(
    device: str,
    hubs: list[HubAddress],
    credentials: tuple[str, str] | None,
    previous: dict[str, Any] | None,
    wifi_ssid: str | None,
    wifi_password: str | None,
) -> bytes:
    """settings.json: what the board had (period, Wi-Fi...) with the hubs and identity replaced
    (the board's old hub addresses, in either form, go)."""
    kept = {k: v for k, v in (previous or {}).items() if k in SETTING_KEYS}
    first = hubs[0]  # hubaddr.parse_hubs: all of one kind, mqtt or mqtts
    kept.update(id=device, hub_host=first.host, hub_port=first.port, tls=first.tls or None)
    kept["username"], kept["password"] = credentials or (None, None)
    if wifi_ssid is not None:
        kept["wifi_ssid"] = wifi_ssid
        kept["wifi_password"] = wifi_password
    return json.dumps(with_hubs(mpunix.DeviceSettings(**kept), hubs)).encode()


def read_credentials_file(path: Path) -> tuple[str, str]:
    """The user name and password from the JSON `hub device add` printed."""
    try:
        given = json.loads(path.read_text())
        return str(given["username"]), str(given["password"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise CredentialsError(f"--credentials {path}: {exc}") from None


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
        raise CredentialsError(
            f"the registry holds a client certificate for {device!r} that {folder} does not: "
            f"issue a new one with `mpy-hub device cert {device}`"
        )
    return cert, key


def registry_credentials(
    data_dir: Path, device: str, hub: HubAddress, previous: dict[str, Any] | None
) -> tuple[str, str]:
    """The device's credentials: the board's own while they verify, a rotated secret if not."""
    if not (data_dir / "registry.sqlite3").exists():
        raise CredentialsError(
            f"no hub registry in {data_dir} (is --data-dir the hub's data dir?)"
        )
    registry = Registry(data_dir)
    try:
        entry = registry.get(device)
        if entry is None:
            raise CredentialsError(
                f"device {device!r} is not registered on the hub: run `mpy-hub-tools "
                f"provision` (or `mpy-hub device add {device}`) first"
            )
        if not entry.enabled:
            raise CredentialsError(
                f"device {device!r} is disabled on the hub: `mpy-hub device enable {device}`"
            )
        if entry.tls_policy == TLS_REQUIRED and not hub.tls:
            raise CredentialsError(
                f"device {device!r} must use TLS: give --hub mqtts://HOST:PORT (after "
                "`mpy-hub certs init`), or register it with --allow-insecure"
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
