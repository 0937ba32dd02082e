"""Hub events: what the broker reports, as JSON on ``$hub/events/<source>/<id>/<severity>``.

Only admin tokens may subscribe to ``$hub/events/#``. Events carry identities, addresses and
reasons, never secrets (the broker never hands passwords to its event sinks).
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
    "quota_exceeded": "warning",
}
_UNSAFE = re.compile(r"[/+#\x00]")

Publish = Callable[[str, bytes], None]


def event_topic(kind: str, event: dict[str, Any]) -> str:
    identity = event.get("identity")
    source = {"device": "device", "token": "token"}.get(identity or "", "client")
    ident = event.get("name") if identity in ("device", "token") else event.get("client_id")
    ident = _UNSAFE.sub("_", ident or "unknown")
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
