"""Where a device reaches the hub: ``mqtt://HOST:PORT`` or ``mqtts://HOST:PORT``, parsed once for
every tool (deploy, provision, sim), with errors that say what is wrong. ``--hub`` may list
several addresses, comma-separated (``mqtt://a:1883,mqtt://b:1883``): the device tries them in
turn (firmware/node/session.py), so they must all be of one kind (a device has one ``tls``
setting), none twice, and at most MAX_HUBS (the firmware's bound).

The address ends up in a device's settings.json and in the firmware's ``getaddrinfo``, so only a
host (a DNS name or an IP address) and a port are accepted: no user name or password (a secret in
a command line leaks into shell history; credentials come from the registry), no path, query or
fragment, no spaces or control characters, nothing over 255 characters.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from urllib.parse import urlsplit

from tools.errors import ToolError

DEFAULT_PORTS = {"mqtt": 1883, "mqtts": 8883}
MAX_URL = 255
MAX_HUBS = 8  # firmware/node/hubs.py
SHAPE = "--hub must look like mqtt://HOST:PORT or mqtts://HOST:PORT"
_NETLOC_RE = re.compile(r"^(\[[0-9a-zA-Z:.%]+\]|[^:\[\]@]+)(:[0-9]{0,5})?$")
_LABEL_RE = re.compile(r"^[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?$")


class HubAddressError(ToolError):
    """A --hub value that is not a hub address."""


@dataclass(frozen=True)
class HubAddress:
    host: str
    port: int
    tls: bool

    @property
    def where(self) -> str:
        """HOST:PORT as people write it (IPv6 in brackets)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    @property
    def url(self) -> str:
        return f"{'mqtts' if self.tls else 'mqtt'}://{self.where}"


def _shown(url: str) -> str:
    """The value for an error message: bounded, with control characters escaped."""
    return repr(url if len(url) <= 80 else url[:80] + "...")


def _check_host(host: str, url: str) -> None:
    try:
        ipaddress.ip_address(host)
        return
    except ValueError:
        pass
    if not host.isascii():
        raise HubAddressError(
            f"--hub {_shown(url)}: write a non-ASCII host name in its xn-- (punycode) form"
        )
    labels = host.rstrip(".").split(".")
    numeric = labels[-1].isdigit()  # 1.2.3.4.5 is no IP address, and no name either
    if len(host) > 253 or numeric or not all(_LABEL_RE.match(label) for label in labels):
        raise HubAddressError(f"--hub {_shown(url)}: {host!r} is not a host name or IP address")


def parse_hub(url: str) -> HubAddress:
    """The hub address in url, or HubAddressError naming what is wrong with it."""
    if len(url) > MAX_URL:
        raise HubAddressError(f"{SHAPE}; this one is over {MAX_URL} characters")
    if not url.isprintable() or any(c.isspace() for c in url):
        raise HubAddressError(f"{SHAPE}, without spaces or control characters, not {_shown(url)}")
    try:
        parts = urlsplit(url)
        hostname = parts.hostname
    except ValueError as exc:  # e.g. an unbalanced IPv6 bracket
        raise HubAddressError(f"{SHAPE}, not {_shown(url)} ({exc})") from None
    if parts.scheme not in DEFAULT_PORTS or not hostname:
        raise HubAddressError(f"{SHAPE}, not {_shown(url)}")
    if "@" in parts.netloc:
        # Never echo it: what comes before the @ may be a password.
        raise HubAddressError(
            "--hub takes no user name or password (deploy takes them from the registry or "
            "--credentials)"
        )
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise HubAddressError(f"{SHAPE} with nothing after the port, not {_shown(url)}")
    try:
        if not _NETLOC_RE.match(parts.netloc):
            raise ValueError(parts.netloc)
        port = parts.port
    except ValueError:
        raise HubAddressError(f"bad port in --hub {_shown(url)}: use 1 to 65535") from None
    if port == 0:
        raise HubAddressError(f"bad port in --hub {_shown(url)}: use 1 to 65535")
    _check_host(hostname, url)
    tls = parts.scheme == "mqtts"
    return HubAddress(hostname, port or DEFAULT_PORTS[parts.scheme], tls)


def parse_hubs(value: str) -> list[HubAddress]:
    """The hub addresses in a comma-separated --hub value (one address is a list of one), or
    HubAddressError naming what is wrong."""
    if len(value) > MAX_HUBS * (MAX_URL + 1):
        raise HubAddressError(f"--hub takes at most {MAX_HUBS} addresses")
    urls = [url.strip(" ") for url in value.split(",")]  # control characters stay: refused
    if len(urls) > MAX_HUBS:
        raise HubAddressError(f"--hub takes at most {MAX_HUBS} addresses, not {len(urls)}")
    if any(not url for url in urls):  # the value is not echoed: it may hold a user:password@
        raise HubAddressError(f"{SHAPE}, or several separated by commas, without an empty one")
    hubs = [parse_hub(url) for url in urls]
    if len(hubs) > 1 and any("%" in hub.host for hub in hubs):
        raise HubAddressError("--hub with several addresses takes no IPv6 zone (%...)")
    if len({hub.tls for hub in hubs}) > 1:
        raise HubAddressError(
            "--hub addresses must be all mqtt:// or all mqtts:// (a device has one TLS setting)"
        )
    seen: set[tuple[str, int]] = set()
    for hub in hubs:
        if (hub.host, hub.port) in seen:
            raise HubAddressError(f"--hub lists {hub.where} twice")
        seen.add((hub.host, hub.port))
    return hubs


def hubs_url(hubs: list[HubAddress]) -> str:
    """The --hub value for these addresses (what parse_hubs reads back)."""
    return ",".join(hub.url for hub in hubs)
