"""`python -m tools provision`: register a device on the hub and deploy it, in one go.

Safe to re-run: a registered device keeps its registration (and, through deploy, the secret on
its board while that still verifies), and a deploy copies only what changed.
"""

from __future__ import annotations

from pathlib import Path

from hub import certs
from hub.registry import Registry
from tools import deploy


def provision(
    board: str,
    port: str,
    device: str,
    hub_url: str,
    data_dir: Path,
    *,
    allow_insecure: bool = False,
    api_url: str | None = None,
    wifi_ssid: str | None = None,
    timeout: float = deploy.ONLINE_TIMEOUT_S,
    client_cert: bool = False,
) -> None:
    """``client_cert``: the device logs in with a client certificate (issued now unless it
    has a current one), and deploy puts no secret on the board."""
    hub = deploy.parse_hub(hub_url)
    deploy.load_board(board)  # bad input fails before the registry changes
    deploy.check_port(port)
    if not hub.tls and not allow_insecure:
        raise deploy.DeployError(
            f"--hub {hub_url} is plain MQTT, and devices must use TLS by default: give "
            "--hub mqtts://HOST:8883 (after `python -m hub certs init`) or --allow-insecure"
        )
    if client_cert and not hub.tls:
        raise deploy.DeployError("--cert needs TLS: give --hub mqtts://HOST:8883")
    registry = Registry(data_dir)
    secret = None
    try:
        entry = registry.get(device)
        if entry is None:
            secret = registry.add(device, allow_insecure=allow_insecure)
            print(f"provision: registered {device} on the hub", flush=True)
        else:
            if allow_insecure and entry.tls_policy != "allow-insecure":
                registry.set_tls_policy(device, allow_insecure=True)
            print(f"provision: {device} is already registered", flush=True)
        if client_cert:
            try:
                current = deploy.registry_cert(data_dir, device) is not None
            except deploy.DeployError:
                current = False  # registered, but its files are gone: issue a new one
            if not current:
                registry.set_cert(device, certs.issue_device_cert(data_dir, device).fingerprint)
                print(f"provision: issued a client certificate for {device}", flush=True)
    finally:
        registry.close()
    deploy.deploy(
        board, port, device, hub_url, data_dir=data_dir, api_url=api_url,
        wifi_ssid=wifi_ssid, timeout=timeout, secret=secret,
    )  # fmt: skip
