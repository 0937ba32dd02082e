"""What a desired document may hold, and how documents combine.

A document is a JSON object of settings the firmware accepts over the air (the keys and
bounds of ``firmware/node/config.py``; tests/firmware/test_desired_keys.py checks they agree)
and ``app``, the app version the device should run (a bundle's version). The device's id and
its credentials (``username``, ``password``, ``wifi_password``) are never in one: a document
is shown in the console and the API, and those go by deploy or a one-off settings command.
A document is at most ``MAX_BYTES`` as compact JSON.

A device's effective desired state is its groups' documents, lowest precedence first, with
its own document (per-device overrides) on top. The hub address is one setting in two forms
(``hubs``, or ``hub_host``/``hub_port``): a layer that gives either form replaces the form a
lower layer gave, as the firmware's settings update does.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from typing import Any

from hub.ota.bundles import VERSION_RE

MAX_BYTES = 4096
MAX_TEXT = 255
MAX_HUBS = 8
# node/config.py's _RANGES: (low, high) of each whole-number setting.
RANGES = {
    "hub_port": (1, 65535),
    "period_s": (1, 86400),
    "keepalive_s": (1, 65535),
    "io_timeout_s": (1, 60),
    "ack_timeout_s": (1, 3600),
    "backoff_min_ms": (50, 3600000),
    "backoff_max_ms": (50, 3600000),
    "queue_len": (8, 100000),
    "meta_s": (1, 86400),
    "ota_trial_s": (5, 3600),
}
FLAGS = ("tls",)
TEXTS = ("hub_host", "wifi_ssid")
SETTINGS = (*RANGES, *FLAGS, *TEXTS, "hubs")
KEYS = (*SETTINGS, "app")
NOT_HERE = {  # settings the device has that a desired document may not hold
    "id": "a device's id never changes over the air",
    "username": "credentials are not kept in desired state (deploy them)",
    "password": "credentials are not kept in desired state (deploy them)",
    "wifi_password": "credentials are not kept in desired state (deploy them)",
}
ADDRESS = ("hubs", "hub_host", "hub_port")
_HOST_RE = re.compile(r"^[a-z0-9._-]{1,253}\Z|^\[[0-9a-f:.]{2,45}\]\Z")


class DocumentError(ValueError):
    """A document that is not valid: the message names the key and what is wrong."""


class DocumentTooLarge(DocumentError):
    """A document over MAX_BYTES (``size`` bytes)."""

    def __init__(self, size: int) -> None:
        super().__init__(f"the desired document is {size} bytes: the limit is {MAX_BYTES} bytes")
        self.size = size


def _hub_address(text: object) -> bool:
    """node/hubs.py's parse: "HOST:PORT", an IPv6 address in brackets."""
    if not isinstance(text, str) or not 3 <= len(text) <= 261:
        return False
    host, _, port = text.rpartition(":")
    if not port.isdigit() or len(port) > 5 or not 1 <= int(port) <= 65535:
        return False
    return bool(_HOST_RE.match(host.lower()))


def check_value(key: str, value: Any) -> Any:
    """The value checked for its key, or DocumentError saying what is wrong."""
    if key in NOT_HERE:
        raise DocumentError(f"setting {key!r} may not be in a desired document: {NOT_HERE[key]}")
    if key in RANGES:
        low, high = RANGES[key]
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise DocumentError(f"setting {key!r} must be a whole number from {low} to {high}")
    elif key in FLAGS:
        if not isinstance(value, bool):
            raise DocumentError(f"setting {key!r} must be true or false")
    elif key in TEXTS:
        if not isinstance(value, str) or not 0 < len(value) <= MAX_TEXT:
            raise DocumentError(f"setting {key!r} must be text of 1 to {MAX_TEXT} characters")
    elif key == "hubs":
        if (
            not isinstance(value, list)
            or not 1 <= len(value) <= MAX_HUBS
            or not all(_hub_address(h) for h in value)
        ):
            raise DocumentError(
                f"setting 'hubs' must be a list of 1 to {MAX_HUBS} \"HOST:PORT\" texts"
            )
    elif key == "app":
        if not isinstance(value, str) or not VERSION_RE.match(value):
            raise DocumentError(
                "'app' must be an app version: 1 to 32 of A-Z a-z 0-9 . + _ -, the first a "
                "letter or digit"
            )
    else:
        known = ", ".join(KEYS)
        raise DocumentError(f"unknown setting {str(key)[:40]!r} (known: {known})")
    return value


def encoded_size(doc: Mapping[str, Any]) -> int:
    return len(json.dumps(doc, separators=(",", ":")).encode())


def check_document(doc: Any) -> dict[str, Any]:
    """A whole document checked: an object of known keys with valid values, one form of the
    hub address, backoff_max_ms not below backoff_min_ms, at most MAX_BYTES."""
    if not isinstance(doc, dict):
        raise DocumentError("a desired document must be a JSON object of settings")
    size = encoded_size(doc)
    if size > MAX_BYTES:
        raise DocumentTooLarge(size)
    out = {str(k): check_value(str(k), v) for k, v in doc.items()}
    if "hubs" in out and ("hub_host" in out or "hub_port" in out):
        raise DocumentError("give setting 'hubs' or 'hub_host'/'hub_port', not both")
    low, high = out.get("backoff_min_ms"), out.get("backoff_max_ms")
    if low is not None and high is not None and high < low:
        raise DocumentError("setting 'backoff_max_ms' must not be below 'backoff_min_ms'")
    return out


def parse_assignment(text: str) -> tuple[str, Any]:
    """``key=value`` from the command line: the value as JSON when it parses (numbers,
    true/false, lists), else as text; checked for its key."""
    key, sep, raw = text.partition("=")
    if not sep or not key:
        raise DocumentError(f"expected key=value, not {text[:40]!r}")
    try:
        value = json.loads(raw)
    except ValueError:
        value = raw
    if key in TEXTS or key == "app":
        value = raw  # "1.2" is a version, not a number
    return key, check_value(key, value)


def merge(layers: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """Documents combined, lowest precedence first; a layer's hub address replaces the
    lower layers' (in either form)."""
    out: dict[str, Any] = {}
    for layer in layers:
        if any(k in layer for k in ADDRESS):
            for key in ADDRESS:
                out.pop(key, None)
        out.update(layer)
    return out


def delta(
    desired: Mapping[str, Any], settings: Mapping[str, Any], fw: str | None
) -> dict[str, Any]:
    """Desired minus reported: each desired setting the device has not confirmed at that
    value, and ``app`` while the device reports another ``fw``."""
    out = {k: v for k, v in desired.items() if k != "app" and settings.get(k, _UNSET) != v}
    app = desired.get("app")
    if app is not None and app != fw:
        out["app"] = app
    return out


_UNSET = object()
