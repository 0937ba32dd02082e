"""The hub's own certificate authority and server certificate (``hub certs init``).

Files in ``<data dir>/certs/``: ``ca.pem`` and ``ca.der`` (give these to devices and browsers),
``ca.key`` (keep it secret), ``server.pem`` and ``server.key`` (the TLS listeners use them).
Keys are ECDSA P-256, which the mbedTLS of MicroPython's ESP32 and unix ports handles well.
"""

from __future__ import annotations

import datetime
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

CA_DAYS = 3650
SERVER_DAYS = 825


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


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    data = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
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
    paths.folder.mkdir(parents=True, exist_ok=True)
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


def server_context(data_dir: Path) -> ssl.SSLContext | None:
    """The TLS listeners' context, or None when ``hub certs init`` has not been run."""
    paths = cert_paths(data_dir)
    if not paths.exist():
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(paths.server_pem, paths.server_key)
    except (OSError, ssl.SSLError) as exc:
        raise CertError(f"cannot load the server certificate in {paths.folder}: {exc}") from exc
    return context
