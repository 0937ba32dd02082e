"""`mpy-hub-tools provision`: register a device on the hub and deploy it, in one go.

Safe to re-run: a registered device keeps its registration (and, through deploy, the secret on
its board while that still verifies), and a deploy copies only what changed. Everything that
can be checked before the registry changes is: the arguments, the board, the port, mpy-cross,
and that the hub's HTTP API (--api) answers, since deploy needs it to see the device online.
"""

from __future__ import annotations

from pathlib import Path

from hub import certs
from hub.registry import Registry
from tools import boards, credentials, deploy, mpremote
from tools.hubaddr import hubs_url, parse_hubs
from tools.hubapi import HubApi, HubApiError, default_url, make_token


def provision(
    board: str,
    port: str,
    device: str,
    hub_url: str,
    data_dir: Path,
    *,
    allow_insecure: bool = False,
    api_url: str | None = None,
    token: str | None = None,
    wifi_ssid: str | None = None,
    timeout: float = deploy.ONLINE_TIMEOUT_S,
    client_cert: bool = False,
) -> str:
    """Returns the device's boot id once online. ``client_cert``: the device logs in with a
    client certificate (issued now unless it has a current one), and no secret goes on the
    board."""
    deploy.check_device_id(device)
    hubs = parse_hubs(hub_url)  # one address, or several the device tries in turn
    hub = hubs[0]  # all of one kind (mqtt or mqtts)
    board_file, _ = boards.load_board(board)  # bad input fails before the registry changes
    mpremote.check_port(port)
    deploy.check_mpy_version(board_file)
    if not hub.tls and not allow_insecure:
        raise deploy.DeployError(
            f"--hub {hubs_url(hubs)} is plain MQTT, and devices must use TLS by default: give "
            "--hub mqtts://HOST:8883 (after `mpy-hub certs init`) or --allow-insecure"
        )
    if client_cert and not hub.tls:
        raise deploy.DeployError("--cert needs TLS: give --hub mqtts://HOST:8883")
    api = HubApi(api_url or default_url(hub.host), make_token(data_dir, device, token))
    try:
        api.devices()
    except HubApiError as exc:
        raise deploy.DeployError(
            f"{exc}; nothing was registered. Give --api http://HOST:PORT with the hub's HTTP "
            "port (the http= address in its ready line)"
        ) from None
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
                current = credentials.registry_cert(data_dir, device) is not None
            except credentials.CredentialsError:
                current = False  # registered, but its files are gone: issue a new one
            if not current:
                registry.set_cert(device, certs.issue_device_cert(data_dir, device).fingerprint)
                print(f"provision: issued a client certificate for {device}", flush=True)
    finally:
        registry.close()
    boot = deploy.deploy(
        board,
        port,
        device,
        hubs_url(hubs),
        data_dir=data_dir,
        api_url=api.url,
        token=api.token,
        wifi_ssid=wifi_ssid,
        timeout=timeout,
        secret=secret,
    )
    assert boot is not None  # deploy waits unless told not to
    return boot
