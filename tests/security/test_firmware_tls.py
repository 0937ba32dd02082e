"""The real firmware on the unix port connects over TLS and verifies the hub with its CA."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from tests.security.test_access import Events, connect, token
from tests.support.devices import Device
from tests.support.hubproc import HubProcess, hub_cli, provision, scaled
from tests.support.waits import eventually_async
from tools import mpunix

TLS_HEAP = "192K"


def _tls_device(
    folder: Path,
    hub: HubProcess,
    device_id: str,
    password: str | None,
    ca: Path,
    client_cert: tuple[Path, Path] | None = None,
) -> Device:
    assert hub.mqtts_port is not None
    settings = mpunix.DeviceSettings(
        id=device_id,
        hub_host="localhost",  # the name in the hub's certificate
        hub_port=hub.mqtts_port,
        username=device_id if password is not None else None,
        password=password,
        period_s=1,
        tls=True,
        backoff_min_ms=200,
        backoff_max_ms=1000,
    )
    root = mpunix.prepare_device_dir(
        folder / device_id, settings, ca_der=ca, client_cert=client_cert
    )
    # The unix port's mbedTLS allocates its ~40 KB context from MicroPython's GC heap; an ESP32
    # takes it from the IDF system heap, outside the 64 KB the other tests hold the firmware to.
    device = Device(root, folder / f"{device_id}.log", heap=TLS_HEAP)
    device.start()
    return device


def test_tls_required_device_runs_over_tls(tls_hub: HubProcess, tmp_path: Path) -> None:
    """A tls-required device deployed with ca.der connects over MQTT/TLS and its readings
    reach a token holder."""
    creds = provision(tls_hub, "tls-fw", allow_insecure=False)
    ca = tls_hub.data_dir / "certs" / "ca.der"

    async def scenario() -> None:
        events = await Events.watch(tls_hub)
        reader, _ = await connect(tls_hub, "r", "token", token(tls_hub, "--subscribe", "d/#"))
        await reader.subscribe([("d/tls-fw/t/+", 1)])
        device = _tls_device(tmp_path, tls_hub, "tls-fw", creds["password"], ca)
        try:
            await events.expect("connected", name="tls-fw", timeout=scaled(20))
            msg = await reader.next_message(scaled(10))
            assert msg.topic == "d/tls-fw/t/temp"
        finally:
            device.kill()

    asyncio.run(scenario())


def test_device_with_a_client_certificate_needs_no_password(
    tls_hub: HubProcess, tmp_path: Path
) -> None:
    """Mutual TLS on the real firmware: with cert.der and key.der from `hub device cert` and
    no user name or password in its settings, the device is admitted as itself."""
    provision(tls_hub, "tls-cert", allow_insecure=False)
    issued = hub_cli(tls_hub.data_dir, "device", "cert", "tls-cert")
    assert issued.returncode == 0, issued.stderr
    files = json.loads(issued.stdout)
    ca = tls_hub.data_dir / "certs" / "ca.der"

    async def scenario() -> None:
        events = await Events.watch(tls_hub)
        reader, _ = await connect(tls_hub, "r", "token", token(tls_hub, "--subscribe", "d/#"))
        await reader.subscribe([("d/tls-cert/t/+", 1)])
        device = _tls_device(
            tmp_path, tls_hub, "tls-cert", None, ca, (Path(files["cert"]), Path(files["key"]))
        )
        try:
            _, body = await events.expect("connected", name="tls-cert", timeout=scaled(20))
            assert body["identity"] == "device"
            msg = await reader.next_message(scaled(10))
            assert msg.topic == "d/tls-cert/t/temp"
        finally:
            device.kill()

    asyncio.run(scenario())


def test_device_refuses_a_hub_signed_by_another_ca(tls_hub: HubProcess, tmp_path: Path) -> None:
    """With a CA that did not sign the hub's certificate, the device never connects."""
    creds = provision(tls_hub, "tls-bad", allow_insecure=False)
    other = tmp_path / "other"
    assert hub_cli(other, "certs", "init").returncode == 0
    device = _tls_device(
        tmp_path, tls_hub, "tls-bad", creds["password"], other / "certs" / "ca.der"
    )
    try:

        async def scenario() -> None:
            events = await Events.watch(tls_hub)
            await eventually_async(
                lambda: "link down" in device.log(), 3, "the device's failed handshake"
            )
            seen = []
            while True:
                try:
                    seen.append(await events.client.next_message(0.2))
                except TimeoutError:
                    break
            assert not [m for m in seen if b'"connected"' in m.payload and b"tls-bad" in m.payload]

        asyncio.run(scenario())
        assert "link down" in device.log()  # it keeps trying, with backoff
        assert "link: refused" not in device.log()  # a failed handshake is no CONNACK refusal
    finally:
        device.kill()
