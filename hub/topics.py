"""The topic contract between devices and the hub (see README, "Topic contract").

Devices publish under ``d/<device>/``:

=====================  ========  ===================================================
topic                  retained  payload
=====================  ========  ===================================================
``d/<id>/t/<sensor>``  no        reading: ``<boot>,<seq>,<value>`` (ASCII)
``d/<id>/s``           yes       presence: ``online``, ``asleep`` or ``offline`` (the will)
``d/<id>/m``           yes       health: JSON (firmware, board, reset cause, uptime, heap...)
``d/<id>/c``           no        a command to the device (hub -> device)
``d/<id>/r``           no        the device's reply to a command
=====================  ========  ===================================================

``boot`` is 1 to 8 lowercase hex digits chosen at each boot, ``seq`` counts readings from 0
within a boot, and ``value`` is a decimal number with the sensor's fixed decimals. The hub
stamps arrival time; devices never send wall-clock time. This module parses without I/O.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from enum import Enum
from typing import NamedTuple

from hub.topicmatch import check_topic_filter as check_topic_filter
from hub.topicmatch import filter_covers as filter_covers
from hub.topicmatch import filter_matches as filter_matches

ROOT = "d"
# \Z, not $: "$" also matches before a final newline, so "kitchen\n" would pass.
DEVICE_ID_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,31}\Z")
SENSOR_RE = re.compile(r"^[a-z0-9][a-z0-9_]{0,15}\Z")
_BOOT_RE = re.compile(rb"^[0-9a-f]{1,8}\Z")
_SEQ_RE = re.compile(rb"^(0|[1-9][0-9]{0,9})\Z")
_VALUE_RE = re.compile(rb"^-?[0-9]{1,12}(\.[0-9]{1,6})?\Z")
STATUS_ONLINE = b"online"
STATUS_OFFLINE = b"offline"
STATUS_ASLEEP = b"asleep"  # a deep-sleep device between wakes (a clean disconnect, no will)
# Health fields every device sends on d/<id>/m, with their JSON types (None: may be null).
META_FIELDS: dict[str, tuple[type, ...]] = {
    "fw": (str,),
    "board": (str,),
    "reset": (str,),
    "up": (int,),
    "heap": (int,),
    "rssi": (int, type(None)),
    "reconnects": (int,),
    "queue": (int,),
    "dropped": (int,),
    "boot": (str,),
    "seq": (int,),
    "error": (str, type(None)),
}


class ContractError(ValueError):
    """A topic or payload does not follow the topic contract."""


class Kind(Enum):
    TELEMETRY = "t"
    STATUS = "s"
    META = "m"
    COMMAND = "c"
    REPLY = "r"


@dataclass(frozen=True)
class DeviceTopic:
    device: str
    kind: Kind
    sensor: str | None = None


class Reading(NamedTuple):  # a tuple: made for every reading the hub receives
    boot: str
    seq: int
    value: float


def check_device_id(device: str) -> str:
    if not DEVICE_ID_RE.match(device):
        raise ContractError(
            f"bad device id {device!r}: use 1 to 32 of a-z, 0-9, '-' and '_', "
            "starting with a letter or digit"
        )
    return device


PREFIX = f"{ROOT}/"
STATUS_FILTER = f"{ROOT}/+/s"  # every device's presence (retained)
COMMAND_FILTER = f"{ROOT}/+/c"  # commands to any device
TELEMETRY_FILTER = f"{ROOT}/+/t/+"  # every device's readings
HEALTH_FILTER = f"{ROOT}/+/m"  # every device's health (retained)
REPLY_FILTER = f"{ROOT}/+/r"  # every device's command replies


# A device's own rights, as templates in which DEVICE_PLACEHOLDER stands for its id (the
# registry stores them per device and fills them in): it publishes readings, presence, health
# and replies, and subscribes to its commands.
DEVICE_PLACEHOLDER = "{device}"
_OWN = f"{ROOT}/{DEVICE_PLACEHOLDER}"
DEVICE_PUBLISH_TEMPLATES = (
    f"{_OWN}/{Kind.TELEMETRY.value}/+",
    f"{_OWN}/{Kind.STATUS.value}",
    f"{_OWN}/{Kind.META.value}",
    f"{_OWN}/{Kind.REPLY.value}",
)
DEVICE_SUBSCRIBE_TEMPLATES = (f"{_OWN}/{Kind.COMMAND.value}",)


def fill_template(template: str, device: str) -> str:
    """A device's topic filter from one of its rights' templates."""
    return template.replace(DEVICE_PLACEHOLDER, device)


def telemetry_filter(device: str) -> str:
    """Every reading of one device."""
    return f"{ROOT}/{check_device_id(device)}/t/+"


def maybe_telemetry(topic: str) -> bool:
    """A cheap pre-check: False for topics that cannot be readings (``parse_topic`` decides)."""
    return topic.startswith(PREFIX) and "/t/" in topic


def reply_device(topic: str) -> str | None:
    """The device a reply topic (``d/<id>/r``) is from, else None."""
    if not (topic.startswith(PREFIX) and topic.endswith("/r")):
        return None
    parts = topic.split("/")
    return parts[1] if len(parts) == 3 and DEVICE_ID_RE.match(parts[1]) else None


def devices_of(topics: Iterable[str], kind: Kind) -> set[str]:
    """The devices of the topics that are well-formed device topics of one kind."""
    found = set()
    for topic in topics:
        try:
            parsed = parse_topic(topic)
        except ContractError:
            continue
        if parsed.kind is kind:
            found.add(parsed.device)
    return found


def telemetry_topic(device: str, sensor: str) -> str:
    return f"{ROOT}/{check_device_id(device)}/t/{sensor}"


def status_topic(device: str) -> str:
    return f"{ROOT}/{check_device_id(device)}/s"


def meta_topic(device: str) -> str:
    return f"{ROOT}/{check_device_id(device)}/m"


def command_topic(device: str) -> str:
    return f"{ROOT}/{check_device_id(device)}/c"


def reply_topic(device: str) -> str:
    return f"{ROOT}/{check_device_id(device)}/r"


def parse_topic(topic: str) -> DeviceTopic:
    """Splits a device topic into device, kind and sensor; raises ContractError otherwise."""
    parts = topic.split("/")
    if len(parts) < 3 or parts[0] != ROOT:
        raise ContractError(f"not a device topic: {topic!r}")
    device = check_device_id(parts[1])
    try:
        kind = Kind(parts[2])
    except ValueError:
        raise ContractError(f"unknown topic kind {parts[2]!r} in {topic!r}") from None
    if kind is Kind.TELEMETRY:
        if len(parts) != 4 or not SENSOR_RE.match(parts[3]):
            raise ContractError(f"telemetry topic needs one sensor name: {topic!r}")
        return DeviceTopic(device, kind, parts[3])
    if len(parts) != 3:
        raise ContractError(f"unexpected levels after {kind.name.lower()} topic: {topic!r}")
    return DeviceTopic(device, kind)


_READING_RE = re.compile(
    rb"([0-9a-f]{1,8}),(0|[1-9][0-9]{0,9}),(-?[0-9]{1,12}(?:\.[0-9]{1,6})?)"
)  # the three field patterns below, in one pass


_whole_reading = _READING_RE.fullmatch
_new_tuple = tuple.__new__  # Reading made without its Python-level __new__ (half the cost)


def parse_reading(payload: bytes) -> Reading:
    """Parses ``<boot>,<seq>,<value>``; raises ContractError naming the bad field."""
    whole = _whole_reading(payload)
    if whole is not None:
        boot, seq, value = whole.groups()
        return _new_tuple(Reading, (boot.decode(), int(seq), float(value)))
    fields = payload.split(b",")
    if len(fields) != 3:
        raise ContractError(f"reading needs 3 comma-separated fields, got {len(fields)}")
    boot, seq, value = fields
    if not _BOOT_RE.match(boot):
        raise ContractError(f"bad boot id {boot!r}: 1 to 8 lowercase hex digits")
    if not _SEQ_RE.match(seq):
        raise ContractError(f"bad sequence number {seq!r}")
    if not _VALUE_RE.match(value):
        raise ContractError(f"bad value {value!r}")
    return Reading(boot.decode(), int(seq), float(value))


def parse_meta(payload: bytes) -> dict[str, object]:
    """Parses a health message; raises ContractError naming a missing or mistyped field."""
    try:
        meta = json.loads(payload)
    except ValueError:
        raise ContractError("health message is not JSON") from None
    if not isinstance(meta, dict):
        raise ContractError("health message must be a JSON object")
    for name, types in META_FIELDS.items():
        if name not in meta:
            raise ContractError(f"health message lacks {name!r}")
        value = meta[name]
        if not isinstance(value, types) or isinstance(value, bool):
            raise ContractError(f"health field {name!r} has the wrong type: {value!r}")
    return meta


def format_reading(reading: Reading, decimals: int = 1) -> bytes:
    """The payload a device sends for a reading (used by tests and simulators)."""
    return b"%s,%d,%.*f" % (reading.boot.encode(), reading.seq, decimals, reading.value)
