"""Hub events: what the broker reports, as JSON on ``$hub/events/<source>/<id>/<severity>``.

Only admin tokens may subscribe to ``$hub/events/#``. Events carry identities, addresses and
reasons, never secrets (the broker never hands passwords to its event sinks; the console
reports a failed login with the name tried and the peer address, never the password).

Sources: ``device`` and ``token`` (MQTT identities), ``account`` (the console's people: logins
and what an account did, e.g. ``device_added`` with ``by``) and ``client`` (anyone else).

Much of what an event carries comes from clients (client ids, user names, topics in details),
so the sink checks every event before it publishes it: the kind is a short lowercase name
(anything else is the caller's bug: ValueError); a field is kept only if its name is a short
lowercase name that does not name a secret (password, secret, token, key, cookie, csrf,
credential, authorization) and its value is null, a boolean, a finite number or a string,
cut to MAX_TEXT characters (integers within MAX_INT); at most MAX_FIELDS fields; ``time`` and
``event`` are the sink's own. What is dropped is logged by name, never by value.

In the hub the sink is batched (``HubEvents(publish, batched=True)``): an event is queued and
the queue is checked and published once per pass of the event loop, after what raised it (a
reconnect storm's CONNACKs go out before its events are built), in the order they came, so
each device's events keep their order. Field names are checked once each (a bounded memo):
the broker's events use a dozen names, so the per-event work is the values and the JSON.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import re
import time
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)

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
    "desired_changed": "info",
    "desired_applied": "info",
    "desired_failed": "warning",
    "rollout_aborted": "warning",
}
SOURCES = {"device": "device", "token": "token", "account": "account"}
MAX_ID = 64  # topic level length
MAX_TEXT = 300  # characters of one string field (a detail quotes at most 200 of a topic)
MAX_FIELDS = 24
_UNSAFE = re.compile(r"[/+#\x00]")
_NAME = re.compile(r"[a-z][a-z0-9_]{0,31}\Z")  # an event kind or field name
MAX_INT = 2**63  # beyond any count or id the hub reports
_SECRET_WORDS = frozenset(  # a field named with one of these words is never published
    [
        "password",
        "passwd",
        "secret",
        "token",
        "key",
        "cookie",
        "csrf",
        "credential",
        "credentials",
        "authorization",
    ]
)

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


def check_kind(kind: object) -> str:
    """The kind of an event, which callers name in code: ValueError unless a short name."""
    if not isinstance(kind, str) or not _NAME.match(kind):
        raise ValueError(f"bad event kind {str(kind)[:40]!r}: 1 to 32 of a-z, 0-9 and '_'")
    return kind


def _secret(name: str) -> bool:
    return not _SECRET_WORDS.isdisjoint(name.split("_"))


_NAMES_KNOWN = 1024  # field names whose verdict is remembered (the hub's own use a few dozen)
_name_ok: dict[object, bool] = {}


def _good_name(name: object) -> bool:
    """A short lowercase name that names no secret; remembered for the first _NAMES_KNOWN."""
    ok = _name_ok.get(name) if isinstance(name, str) else False
    if ok is None:
        assert isinstance(name, str)
        ok = bool(_NAME.match(name)) and not _secret(name)
        if len(_name_ok) < _NAMES_KNOWN:
            _name_ok[name] = ok
    return ok


def _value(value: object) -> tuple[bool, object]:
    """(kept, value): the value as published, cut to size, or (False, None) to drop it."""
    if type(value) is str:  # most fields: checked first
        return True, value if len(value) <= MAX_TEXT else value[: MAX_TEXT - 3] + "..."
    if value is None or isinstance(value, bool):
        return True, value
    if isinstance(value, int):
        return (True, value) if -MAX_INT < value < MAX_INT else (False, None)
    if isinstance(value, float):
        return (True, value) if math.isfinite(value) else (False, None)
    if isinstance(value, str):
        return True, value if len(value) <= MAX_TEXT else value[: MAX_TEXT - 3] + "..."
    return False, None


def event_body(kind: str, event: dict[str, Any]) -> dict[str, Any]:
    """The body published for an event: its time and kind, then each non-empty field that
    passes the checks above (the module docstring); dropped fields are logged by name."""
    body: dict[str, Any] = {"time": round(time.time(), 3), "event": check_kind(kind)}
    dropped = []
    for name, value in event.items():
        if name == "kind" or value is None or value == "":
            continue
        kept, clean = _value(value)
        if kept and _good_name(name) and name not in body and len(body) - 2 < MAX_FIELDS:
            body[name] = clean
        else:
            dropped.append(str(name)[:40])
    if dropped:
        names = ", ".join(repr(n) for n in dropped[:8])
        log.warning(
            "event %s: fields dropped (bad name, secret, type or too many): %s", kind, names
        )
    return body


class HubEvents:
    """An event sink for the broker that checks each event and publishes it via ``publish``:
    at once, or with ``batched`` once per pass of the running event loop (see above)."""

    def __init__(self, publish: Publish, *, batched: bool = False) -> None:
        self._publish = publish
        self._batched = batched
        self._pending: list[tuple[str, dict[str, Any]]] = []

    def __call__(self, kind: str, event: dict[str, Any]) -> None:
        if not self._batched:
            self._send(kind, event)
            return
        check_kind(kind)  # the caller's bug is the caller's error, not the batch's
        pending = self._pending
        pending.append((kind, event))
        if len(pending) == 1:
            asyncio.get_running_loop().call_soon(self.flush)

    def flush(self) -> None:
        """Publishes the queued events, oldest first."""
        pending, self._pending = self._pending, []
        for kind, event in pending:
            try:
                self._send(kind, event)
            except Exception:  # one bad event never holds back the rest
                log.exception("hub event %s could not be published", kind)

    def _send(self, kind: str, event: dict[str, Any]) -> None:
        body = event_body(kind, event)
        self._publish(event_topic(kind, event), json.dumps(body, separators=(",", ":")).encode())
