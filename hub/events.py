"""Hub events: what the broker reports, as JSON on ``$hub/events/<source>/<id>/<severity>``.

Only admin tokens may subscribe to ``$hub/events/#``. Events carry identities, addresses and
reasons, never secrets (the broker never hands passwords to its event sinks; the console
reports a failed login with the name tried and the peer address, never the password).

Sources: ``device`` and ``token`` (MQTT identities), ``account`` (the console's people: logins
and what an account did, e.g. ``device_added`` with ``by``) and ``client`` (anyone else).
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from typing import Any

ROOT = "$hub/events"
SEVERITY = {
    "connected": "info",
    "disconnected": "info",
    "auth_failure": "warning",
    "tls_violation": "warning",
    "filter_violation": "warning",
    "malformed": "warning",
    "payload_too_large": "warning",
    "rate_limit": "warning",
    "queue_full": "error",
    "refused": "warning",
    "login": "info",
    "logout": "info",
    "login_failure": "warning",
    "device_added": "info",
    "device_removed": "warning",
    "device_disabled": "warning",
    "device_enabled": "info",
    "device_rotated": "info",
    "device_tls_policy": "warning",
    "device_cert_issued": "info",
    "user_added": "info",
    "user_removed": "warning",
    "user_disabled": "warning",
    "user_enabled": "info",
    "store_failure": "error",
    "store_recovered": "info",
    "store_rejected": "warning",
    "disk_low": "warning",
    "quota_exceeded": "warning",
    "alarm_raised": "warning",
    "alarm_cleared": "info",
    "alarm_acknowledged": "info",
    "route_failure": "error",
    "route_loop": "warning",
    "route_queue_full": "warning",
}
SOURCES = {"device": "device", "token": "token", "account": "account"}
MAX_ID = 64  # topic level length
_UNSAFE = re.compile(r"[/+#\x00]")

Publish = Callable[[str, bytes], None]


def event_topic(kind: str, event: dict[str, Any]) -> str:
    identity = event.get("identity")
    source = SOURCES.get(identity or "", "client")
    ident = event.get("name") if identity in SOURCES else event.get("client_id")
    ident = _UNSAFE.sub("_", str(ident or "unknown")[:MAX_ID])
    severity = SEVERITY.get(kind, "info")
    if kind == "disconnected" and event.get("reason") not in ("clean", "shutdown"):
        severity = "warning"
    return f"{ROOT}/{source}/{ident}/{severity}"


class HubEvents:
    """An event sink for the broker that publishes each event through ``publish``."""

    def __init__(self, publish: Publish) -> None:
        self._publish = publish

    def __call__(self, kind: str, event: dict[str, Any]) -> None:
        body = {"time": round(time.time(), 3), "event": kind}
        body.update({k: v for k, v in event.items() if k != "kind" and v not in (None, "")})
        self._publish(event_topic(kind, event), json.dumps(body, separators=(",", ":")).encode())
