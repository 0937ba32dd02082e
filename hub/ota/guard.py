"""Only the hub sends app updates: a publish check that refuses, from any client (operator and
admin tokens may command devices, and development mode lets anyone), a message on a device's
command topic that the firmware would take for an update: a chunk (first byte 0x01) or a JSON
command whose ``op`` is ``ota``. The hub's own publishes do not pass the check."""

from __future__ import annotations

import json

from hub.broker import Refusal
from hub.topics import DEVICE_ID_RE, PREFIX

RESERVED_OPS = frozenset({"ota"})  # ops only the hub sends (the HTTP API refuses them too)


def is_update(payload: bytes) -> bool:
    if payload[:1] == b"\x01":
        return True
    if b"op" not in payload and b"\\u" not in payload:
        return False
    try:
        command = json.loads(payload)
    except (ValueError, RecursionError):
        return False
    return isinstance(command, dict) and command.get("op") in RESERVED_OPS


def update_guard(identity: object, topic: str, payload: bytes, retain: bool) -> Refusal | None:
    if not (topic.startswith(PREFIX) and topic.endswith("/c")):
        return None
    parts = topic.split("/")
    if len(parts) != 3 or not DEVICE_ID_RE.match(parts[1]) or not is_update(payload):
        return None
    return Refusal("filter_violation", f"only the hub sends app updates to {parts[1]}", parts[1])
