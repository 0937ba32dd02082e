"""Mutual TLS: a device proves who it is with a client certificate issued by the hub CA."""

from __future__ import annotations

import asyncio
import json
import ssl
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from hub.certs import CertError, issue_device_cert
from tests.security.test_access import Events
from tests.support.hubproc import HubProcess, hub_cli, provision, scaled
from tests.support.mqtt import CONNACK, ConnectionClosed, RawClient, connect_packet

REFUSED_BAD_CREDENTIALS = 4


def issue(hub: HubProcess, device_id: str, *extra: str) -> dict[str, str]:
    result = hub_cli(hub.data_dir, "device", "cert", device_id, *extra)
    assert result.returncode == 0, result.stderr
    return dict(json.loads(result.stdout))


def pem_files(issued: dict[str, str], folder: Path) -> tuple[Path, Path]:
    """The DER files `hub device cert` wrote, as PEM for CPython's ssl module."""
    cert = x509.load_der_x509_certificate(Path(issued["cert"]).read_bytes())
    key = serialization.load_der_private_key(Path(issued["key"]).read_bytes(), password=None)
    folder.mkdir(parents=True, exist_ok=True)
    cert_pem = folder / "cert.pem"
    key_pem = folder / "key.pem"
    cert_pem.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_pem.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_pem, key_pem


async def mqtts_with_cert(hub: HubProcess, cert: tuple[Path, Path] | None) -> RawClient:
    context = ssl.create_default_context(cafile=hub.data_dir / "certs" / "ca.pem")
    if cert is not None:
        context.load_cert_chain(*cert)
    client = RawClient()
    assert hub.mqtts_port is not None
    client._reader, client._writer = await asyncio.open_connection(
        hub.host, hub.mqtts_port, ssl=context, server_hostname="localhost"
    )
    return client


async def connack_code(client: RawClient, client_id: str, **connect: object) -> int:
    await client.send(connect_packet(client_id, **connect))  # type: ignore[arg-type]
    return (await client.expect(CONNACK)).body[1]


def test_a_device_connects_with_its_certificate_and_no_password(
    tls_hub: HubProcess, tmp_path: Path
) -> None:
    """`hub device cert` issues a certificate (DER, for MicroPython) whose common name is the
    device id; with it the device is admitted over mqtts without any password, as itself."""
    provision(tls_hub, "cert-1", allow_insecure=False)
    issued = issue(tls_hub, "cert-1")
    cert = x509.load_der_x509_certificate(Path(issued["cert"]).read_bytes())
    assert cert.subject.rfc4514_string() == "CN=cert-1"
    assert Path(issued["key"]).stat().st_mode & 0o077 == 0
    shown = json.loads(hub_cli(tls_hub.data_dir, "device", "show", "cert-1").stdout)
    assert shown["cert_fingerprint"] == issued["fingerprint"]
    files = pem_files(issued, tmp_path / "cert-1")

    async def scenario() -> None:
        events = await Events.watch(tls_hub)
        device = await mqtts_with_cert(tls_hub, files)
        assert await connack_code(device, "cert-1") == 0
        _, body = await events.expect("connected", name="cert-1")
        assert body["identity"] == "device"
        # The device's own topic rules apply: its command topic, not another device's.
        assert await device.subscribe([("d/cert-1/c", 1), ("d/other/c", 1)]) == [1, 0x80]
        await device.close()
        other = await mqtts_with_cert(tls_hub, files)
        assert await connack_code(other, "cert-1", username="someone-else") == (
            REFUSED_BAD_CREDENTIALS
        )
        await other.close()
        thief = await mqtts_with_cert(tls_hub, files)
        assert await connack_code(thief, "another-id") != 0  # client id must be the device id
        await thief.close()

    asyncio.run(scenario())


def test_reissuing_or_revoking_shuts_the_old_certificate_out(
    tls_hub: HubProcess, tmp_path: Path
) -> None:
    """A new certificate replaces the old one at once: a connection made with the old one is
    kicked and it is refused from then on; --revoke refuses the current one too."""
    provision(tls_hub, "cert-2", allow_insecure=False)
    old = pem_files(issue(tls_hub, "cert-2"), tmp_path / "old")

    async def scenario() -> None:
        events = await Events.watch(tls_hub)
        device = await mqtts_with_cert(tls_hub, old)
        assert await connack_code(device, "cert-2") == 0
        new = pem_files(issue(tls_hub, "cert-2"), tmp_path / "new")
        _, body = await events.expect("disconnected", name="cert-2", timeout=scaled(5))
        assert body["reason"] == "kicked"
        again = await mqtts_with_cert(tls_hub, old)
        assert await connack_code(again, "cert-2") == REFUSED_BAD_CREDENTIALS
        await again.close()
        current = await mqtts_with_cert(tls_hub, new)
        assert await connack_code(current, "cert-2") == 0
        await current.close()
        assert hub_cli(tls_hub.data_dir, "device", "cert", "cert-2", "--revoke").returncode == 0
        revoked = await mqtts_with_cert(tls_hub, new)
        assert await connack_code(revoked, "cert-2") == REFUSED_BAD_CREDENTIALS
        await revoked.close()

    asyncio.run(scenario())


def test_a_certificate_from_another_ca_fails_the_handshake(
    tls_hub: HubProcess, tmp_path: Path
) -> None:
    """A client certificate the hub CA did not sign ends the TLS handshake; a client with no
    certificate still gets to CONNECT (and must then give credentials)."""
    other = tmp_path / "other"
    assert hub_cli(other, "certs", "init").returncode == 0
    assert hub_cli(other, "device", "add", "cert-3").returncode == 0
    foreign = issue_device_cert(other, "cert-3")
    files = pem_files({"cert": str(foreign.cert), "key": str(foreign.key)}, tmp_path / "f")
    provision(tls_hub, "cert-3", allow_insecure=False)

    async def scenario() -> None:
        # TLS 1.3 finishes the client's side first: the refusal shows at the first read.
        with pytest.raises((ssl.SSLError, ConnectionError, ConnectionClosed)):
            client = await mqtts_with_cert(tls_hub, files)
            await connack_code(client, "cert-3")
        anonymous = await mqtts_with_cert(tls_hub, None)
        assert await connack_code(anonymous, "cert-3") == REFUSED_BAD_CREDENTIALS
        await anonymous.close()

    asyncio.run(scenario())


def test_cert_needs_a_hub_ca_and_a_registered_device(tmp_path: Path) -> None:
    data = tmp_path / "data"
    assert hub_cli(data, "device", "add", "lonely").returncode == 0
    result = hub_cli(data, "device", "cert", "lonely")
    assert result.returncode == 2 and "hub certs init" in result.stderr
    with pytest.raises(CertError, match="certs init"):
        issue_device_cert(data, "lonely")
    assert hub_cli(data, "certs", "init").returncode == 0
    unknown = hub_cli(data, "device", "cert", "nobody")
    assert unknown.returncode == 2 and "nobody" in unknown.stderr


def test_no_secret_leaves_the_certificate_as_the_only_way_in(
    tls_hub: HubProcess, tmp_path: Path
) -> None:
    """`hub device cert ID --no-secret`: the device's secret is refused from then on and its
    certificate still works; `hub device rotate` gives it a working secret again."""
    creds = provision(tls_hub, "cert-4", allow_insecure=False)
    files = pem_files(issue(tls_hub, "cert-4", "--no-secret"), tmp_path / "cert-4")
    both = hub_cli(tls_hub.data_dir, "device", "cert", "cert-4", "--revoke", "--no-secret")
    assert both.returncode == 2 and "lock the device out" in both.stderr

    async def login(cert: tuple[Path, Path] | None, password: str | None) -> int:
        client = await mqtts_with_cert(tls_hub, cert)
        user = "cert-4" if password is not None else None
        code = await connack_code(client, "cert-4", username=user, password=password)
        await client.close()
        return code

    async def scenario() -> None:
        assert await login(None, creds["password"]) == REFUSED_BAD_CREDENTIALS
        assert await login(files, None) == 0
        rotated = json.loads(hub_cli(tls_hub.data_dir, "device", "rotate", "cert-4").stdout)
        assert await login(None, rotated["password"]) == 0

    asyncio.run(scenario())
