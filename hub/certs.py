"""The hub's own certificate authority and server certificate (``hub certs init``).

Files in ``<data dir>/certs/``: ``ca.pem`` and ``ca.der`` (give these to devices and browsers),
``ca.key`` (keep it secret), ``server.pem`` and ``server.key`` (the TLS listeners use them), and
``devices/<id>.cert.der`` and ``devices/<id>.key.der``: a device's client certificate and key
(``hub device cert``), in DER as MicroPython's ``tls`` module loads them.
Keys are ECDSA P-256, which the mbedTLS of MicroPython's ESP32 and unix ports handles well.
"""

from __future__ import annotations

import datetime
import hashlib
import ipaddress
import os
import socket
import ssl
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from hub.config import prepare_data_dir

CA_DAYS = 3650
SERVER_DAYS = 825
DEVICE_DAYS = 825


PEM = serialization.Encoding.PEM
DER = serialization.Encoding.DER
NO_PASSWORD = serialization.NoEncryption()


class CertError(Exception):
    """Certificates are missing, unreadable, or would be overwritten."""


@dataclass(frozen=True)
class CertPaths:
    folder: Path

    @property
    def ca_pem(self) -> Path:
        return self.folder / "ca.pem"

    @property
    def ca_der(self) -> Path:
        return self.folder / "ca.der"

    @property
    def ca_key(self) -> Path:
        return self.folder / "ca.key"

    @property
    def server_pem(self) -> Path:
        return self.folder / "server.pem"

    @property
    def server_key(self) -> Path:
        return self.folder / "server.key"

    def exist(self) -> bool:
        return self.server_pem.exists() and self.server_key.exists()


def cert_paths(data_dir: Path) -> CertPaths:
    return CertPaths(data_dir / "certs")


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _write_key(
    path: Path, key: ec.EllipticCurvePrivateKey, encoding: serialization.Encoding = PEM
) -> None:
    data = key.private_bytes(encoding, serialization.PrivateFormat.PKCS8, NO_PASSWORD)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def _alt_names(hosts: list[str]) -> list[x509.GeneralName]:
    names: list[x509.GeneralName] = []
    for host in dict.fromkeys(hosts):
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    return names


def default_hosts() -> list[str]:
    return ["localhost", "127.0.0.1", "::1", socket.gethostname()]


def init(data_dir: Path, hosts: list[str], *, force: bool = False) -> CertPaths:
    """Creates the CA and a server certificate for the given host names and addresses."""
    paths = cert_paths(data_dir)
    if paths.ca_key.exists() and not force:
        raise CertError(f"{paths.folder} already holds a hub CA: use --force to replace it")
    prepare_data_dir(data_dir)
    paths.folder.mkdir(mode=0o700, exist_ok=True)
    now = datetime.datetime.now(datetime.UTC)
    start = now - datetime.timedelta(minutes=5)

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(_name("IoT hub CA"))
        .issuer_name(_name("IoT hub CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(now + datetime.timedelta(days=CA_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), False)
        .sign(ca_key, hashes.SHA256())
    )
    server_key = ec.generate_private_key(ec.SECP256R1())
    server_cert = (
        x509.CertificateBuilder()
        .subject_name(_name(hosts[0]))
        .issuer_name(ca_cert.subject)
        .public_key(server_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(now + datetime.timedelta(days=SERVER_DAYS))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName(_alt_names(hosts)), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
        )
        .sign(ca_key, hashes.SHA256())
    )
    _write_key(paths.ca_key, ca_key)
    _write_key(paths.server_key, server_key)
    paths.ca_pem.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    paths.ca_der.write_bytes(ca_cert.public_bytes(serialization.Encoding.DER))
    paths.server_pem.write_bytes(
        server_cert.public_bytes(serialization.Encoding.PEM)
        + ca_cert.public_bytes(serialization.Encoding.PEM)
    )
    return paths


def server_context(data_dir: Path, *, client_certs: bool = False) -> ssl.SSLContext | None:
    """The TLS listeners' context, or None when ``hub certs init`` has not been run.

    With ``client_certs`` (the MQTT listener) a client may present a certificate, which must
    then be signed by the hub CA; browsers on wss are never asked for one.
    """
    paths = cert_paths(data_dir)
    if not paths.exist():
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(paths.server_pem, paths.server_key)
        if client_certs:
            context.load_verify_locations(cafile=paths.ca_pem)
            context.verify_mode = ssl.CERT_OPTIONAL
    except (OSError, ssl.SSLError) as exc:
        raise CertError(f"cannot load the certificates in {paths.folder}: {exc}") from exc
    return context


@dataclass(frozen=True)
class DeviceCert:
    cert: Path
    key: Path
    fingerprint: str  # SHA-256 of the certificate (DER), hex


def fingerprint(cert_der: bytes) -> str:
    return hashlib.sha256(cert_der).hexdigest()


def device_common_name(cert_der: bytes) -> str | None:
    """The common name of a client certificate (a device id), or None."""
    try:
        names = x509.load_der_x509_certificate(cert_der).subject.get_attributes_for_oid(
            NameOID.COMMON_NAME
        )
    except ValueError:
        return None
    return str(names[0].value) if names else None


def issue_device_cert(data_dir: Path, device_id: str) -> DeviceCert:
    """A client certificate for a device (common name = its id), signed by the hub CA."""
    paths = cert_paths(data_dir)
    try:
        ca_cert = x509.load_pem_x509_certificate(paths.ca_pem.read_bytes())
        ca_key = serialization.load_pem_private_key(paths.ca_key.read_bytes(), password=None)
    except FileNotFoundError:
        raise CertError(f"no hub CA in {paths.folder}: run `hub certs init` first") from None
    except ValueError as exc:
        raise CertError(f"cannot read the hub CA in {paths.folder}: {exc}") from exc
    if not isinstance(ca_key, ec.EllipticCurvePrivateKey):
        raise CertError(f"{paths.ca_key} is not an EC key")
    now = datetime.datetime.now(datetime.UTC)
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(device_id))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=DEVICE_DAYS))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
        )
        .sign(ca_key, hashes.SHA256())
    )
    folder = paths.folder / "devices"
    folder.mkdir(mode=0o700, exist_ok=True)
    der = cert.public_bytes(DER)
    issued = DeviceCert(
        folder / f"{device_id}.cert.der", folder / f"{device_id}.key.der", fingerprint(der)
    )
    _write_key(issued.key, key, DER)
    issued.cert.write_bytes(der)
    return issued
