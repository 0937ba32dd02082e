"""TLS networks: `hub certs init`, then MQTT over TLS and wss, verified against the hub CA."""

from __future__ import annotations

import asyncio
import ssl
from pathlib import Path

import pytest
import websockets

from tests.security.test_access import Events, token
from tests.support.hubproc import HubProcess, hub_cli, provision, scaled
from tests.support.mqtt import RawClient


def client_context(hub: HubProcess) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=hub.data_dir / "certs" / "ca.pem")
    context.check_hostname = True
    return context


async def mqtts(hub: HubProcess) -> RawClient:
    client = RawClient()
    assert hub.mqtts_port is not None
    client._reader, client._writer = await asyncio.open_connection(
        hub.host, hub.mqtts_port, ssl=client_context(hub), server_hostname="localhost"
    )
    return client


def test_certs_init_refuses_to_overwrite(tmp_path: Path) -> None:
    """A second `certs init` keeps the existing CA unless --force is given."""
    data = tmp_path / "data"
    assert hub_cli(data, "certs", "init").returncode == 0
    ca = (data / "certs" / "ca.pem").read_bytes()
    again = hub_cli(data, "certs", "init")
    assert again.returncode == 2 and "--force" in again.stderr
    assert (data / "certs" / "ca.pem").read_bytes() == ca
    assert (data / "certs" / "ca.key").stat().st_mode & 0o077 == 0
    assert hub_cli(data, "certs", "init", "--force").returncode == 0
    assert (data / "certs" / "ca.pem").read_bytes() != ca


def test_tls_required_device_connects_over_mqtts(tls_hub: HubProcess) -> None:
    """The ready line names the TLS networks, and a TLS-only device is admitted there."""
    assert "mqtts=" in tls_hub.ready_line and "wss=" in tls_hub.ready_line
    creds = provision(tls_hub, "tls-1", allow_insecure=False)

    async def scenario() -> None:
        events = await Events.watch(tls_hub)
        device = await mqtts(tls_hub)
        assert await device.connect("tls-1", username="tls-1", password=creds["password"]) == (
            False,
            0,
        )
        _, body = await events.expect("connected", name="tls-1")
        assert body["network"] == "mqtt"
        await device.close()

    asyncio.run(scenario())


def test_client_that_does_not_trust_the_hub_ca_fails_the_handshake(tls_hub: HubProcess) -> None:
    """A client verifying against the system CAs (not the hub CA) cannot connect."""

    async def scenario() -> None:
        assert tls_hub.mqtts_port is not None
        with pytest.raises(ssl.SSLCertVerificationError):
            await asyncio.open_connection(
                tls_hub.host,
                tls_hub.mqtts_port,
                ssl=ssl.create_default_context(),
                server_hostname="localhost",
            )

    asyncio.run(scenario())


def test_browser_token_over_wss(tls_hub: HubProcess) -> None:
    """A browser-style client reaches the secure WebSocket network with a token."""

    async def scenario() -> None:
        client = RawClient()
        client._ws = await websockets.connect(
            f"wss://localhost:{tls_hub.wss_port}/mqtt",
            subprotocols=[websockets.Subprotocol("mqtt")],
            ssl=client_context(tls_hub),
        )
        reader = token(tls_hub, "--subscribe", "d/+/s")
        assert await client.connect("wss-1", username="token", password=reader) == (False, 0)
        assert await client.subscribe([("d/+/s", 0)]) == [0]
        await client.close()

    asyncio.run(asyncio.wait_for(scenario(), scaled(10)))
