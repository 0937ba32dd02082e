"""What the hub accepts on device topics, checked before the broker routes or retains a message.

The broker knows nothing of the topic contract (hub/topics.py); the hub hands it
:class:`DevicePolicy` as its publish check. For every message a client may publish (the topic
rules already allowed it), on ``d/<id>/...``:

- ``d/<id>/t/<sensor>``: the sensor name follows the contract (``SENSOR_RE``, at most
  ``max_sensor_name`` characters), and a device has at most ``max_sensors`` sensors (counted
  since the hub started). Readings themselves are parsed by hub/ingest.py.
- ``d/<id>/s``: ``online``, ``offline`` or ``asleep``.
- ``d/<id>/m``: a health message ``hub.topics.parse_meta`` accepts, at most ``MAX_HEALTH``
  bytes.

Anything else is refused: acknowledged, not routed, not retained, and a hub event (``malformed``
or ``quota_exceeded`` with its ``quota``) names the device. That keeps markup out of the retained
health a dashboard shows. No I/O; allowed telemetry topics are remembered (bounded), so a
reading costs one dictionary look-up here.
"""

from __future__ import annotations

from hub.broker import PublishCheck, Refusal
from hub.config import ConfigError
from hub.topics import (
    DEVICE_ID_RE,
    PREFIX,
    SENSOR_RE,
    STATUS_ASLEEP,
    STATUS_OFFLINE,
    STATUS_ONLINE,
    ContractError,
    Kind,
    parse_meta,
)

MAX_HEALTH = 2048  # bytes of a health message
KNOWN_TOPICS = 100_000  # telemetry topics remembered as allowed
MAX_DEVICES = 100_000  # devices whose sensors are counted (more: refused, quota "devices")
STATUSES = (STATUS_ONLINE, STATUS_OFFLINE, STATUS_ASLEEP)
# The contract's kinds (hub/topics.py), as plain strings for the per-message compare.
_TELEMETRY, _STATUS, _META = Kind.TELEMETRY.value, Kind.STATUS.value, Kind.META.value


class DevicePolicy:
    """The hub's publish check (``Broker.set_publish_check``)."""

    def __init__(
        self,
        max_sensors: int = 32,
        max_sensor_name: int = 16,
        then: PublishCheck | None = None,
    ) -> None:
        """``then``: a further check for what this one allows (hub/ota/guard.py's), not asked
        about a remembered telemetry topic (it concerns other topics: a reading costs one
        look-up)."""
        if max_sensors < 1:
            raise ConfigError(f"max_sensors must be at least 1, not {max_sensors}")
        if not 1 <= max_sensor_name <= 16:
            raise ConfigError(
                f"max_sensor_name must be from 1 to 16 (the topic contract), not {max_sensor_name}"
            )
        self.max_sensors = max_sensors
        self.max_sensor_name = max_sensor_name
        self._known: set[str] = set()  # telemetry topics already allowed
        self._then = then
        self._sensors: dict[str, set[str]] = {}  # device id -> its sensors

    def __call__(
        self, identity: object, topic: str, payload: bytes, retain: bool
    ) -> Refusal | None:
        if topic in self._known:
            return None
        refusal = self._check(topic, payload)
        if refusal is None and self._then is not None:
            return self._then(identity, topic, payload, retain)
        return refusal

    def _check(self, topic: str, payload: bytes) -> Refusal | None:
        if not topic.startswith(PREFIX):
            return None
        parts = topic.split("/")
        if len(parts) < 3 or not DEVICE_ID_RE.match(parts[1]):
            return None  # not a device's topic: the topic rules alone decide
        device, kind = parts[1], parts[2]
        if kind == _TELEMETRY:
            return self._telemetry(topic, device, parts)
        if kind == _STATUS and len(parts) == 3:
            if payload in STATUSES or not payload:  # empty: clears the retained status
                return None
            return Refusal(
                "malformed",
                f"status of {device} must be online, offline or asleep, not {payload[:40]!r}",
                device,
            )
        if kind == _META and len(parts) == 3:
            return self._health(device, payload)
        return None

    def _telemetry(self, topic: str, device: str, parts: list[str]) -> Refusal | None:
        sensor = parts[3] if len(parts) == 4 else ""
        if not SENSOR_RE.match(sensor) or len(sensor) > self.max_sensor_name:
            return Refusal(
                "malformed",
                f"bad sensor name in {topic[:120]!r}: 1 to {self.max_sensor_name} of a-z, 0-9 "
                "and '_', starting with a letter or digit",
                device,
            )
        sensors = self._sensors.get(device)
        if sensors is None:
            if len(self._sensors) >= MAX_DEVICES:
                return Refusal(
                    "quota_exceeded",
                    f"more than {MAX_DEVICES} devices publish telemetry",
                    device,
                    "devices",
                )
            sensors = self._sensors[device] = set()
        if sensor not in sensors:
            if len(sensors) >= self.max_sensors:
                return Refusal(
                    "quota_exceeded",
                    f"{device} has {self.max_sensors} sensors already: {sensor!r} refused",
                    device,
                    "sensors",
                )
            sensors.add(sensor)
        if len(self._known) >= KNOWN_TOPICS:
            self._known.clear()
        self._known.add(topic)
        return None

    @staticmethod
    def _health(device: str, payload: bytes) -> Refusal | None:
        if len(payload) > MAX_HEALTH:
            return Refusal(
                "malformed",
                f"health of {device} is {len(payload)} bytes, more than {MAX_HEALTH}",
                device,
            )
        if not payload:
            return None  # clears the retained health [MQTT-3.3.1-10]
        try:
            parse_meta(payload)
        except ContractError as exc:
            return Refusal("malformed", f"health of {device}: {exc}", device)
        return None
