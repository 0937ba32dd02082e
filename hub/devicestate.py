"""Each device's last known state, kept by the hub: status, health, last message, boot,
firmware and board, and the latest reading per sensor.

An in-memory table fed by ingest (``on_reading``: each reading as ingest parsed it, so a
reading is parsed once), a broker message listener (status, health, replies) and an event sink
(connects, disconnects, refusals), written in batches by hub/recorder.py and loaded from the
store at start, before the hub accepts connections: after a restart the API serves the last
known state until the device speaks again. ``last_seen`` is the device's last message of any
kind but a malformed reading. The broker validates status and health payloads; what is kept is
coerced anyway (the contract's fields only, strings cut short).

Observers hear of status and health changes (``observers``); readings go only to
``reading_observers``, which skip them unless a rule watches (hub/alarms.py): a reading costs
a few dictionary writes here.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from typing import Any

from hub.recorder import Recorder
from hub.topics import DEVICE_ID_RE, META_FIELDS, PREFIX, SENSOR_RE, ContractError, parse_meta

log = logging.getLogger(__name__)

STATUSES = ("online", "offline", "asleep")
MAX_DEVICES = 100_000
MAX_SENSORS = 32  # per device
MAX_TEXT = 200
EVENTS_PER_MINUTE = 60  # per device, into its history (a device's refusals can come fast)
HEALTH_ROW_EVERY_S = 1.0  # at most one health history row a second per device
EVENT_DETAIL_KEYS = (
    "reason",
    "detail",
    "network",
    "peer",
    "will",
    "by",
    "value",
    "rule",
    "rule_name",
    "alarm",
)

Observer = Callable[[str, str, dict[str, Any]], None]  # (device, what changed, state)
ReadingObserver = Callable[[str, str, dict[str, Any]], None]  # (device, sensor, state)


def empty_state() -> dict[str, Any]:
    return {
        "status": None,
        "status_at": None,
        "last_seen": None,
        "boot": None,
        "fw": None,
        "board": None,
        "health": None,
        "health_at": None,
        "sensors": {},
    }


def coerce_health(meta: dict[str, object]) -> dict[str, Any]:
    """Only the contract's fields, of their types; texts cut at MAX_TEXT characters."""
    out: dict[str, Any] = {}
    for name, types in META_FIELDS.items():
        value = meta.get(name)
        if isinstance(value, bool) or not isinstance(value, types):
            value = None
        if isinstance(value, str):
            value = value[:MAX_TEXT]
        if isinstance(value, int) and not -(2**53) <= value <= 2**53:
            value = None
        out[name] = value
    hub = meta.get("hub")  # optional: the address the device is on (firmware with failover)
    if isinstance(hub, str):
        out["hub"] = hub[:MAX_TEXT]
    units = meta.get("units")  # optional: {sensor: unit} for the device page's charts
    if isinstance(units, dict):
        pairs = list(units.items())[:32]
        out["units"] = {str(k)[:MAX_TEXT]: v[:MAX_TEXT] for k, v in pairs if isinstance(v, str)}
    return out


def coerce_state(raw: Any) -> dict[str, Any] | None:
    """A state loaded from the store, checked field by field (None if it is not one)."""
    if not isinstance(raw, dict):
        return None
    state = empty_state()
    if raw.get("status") in STATUSES:
        state["status"] = raw["status"]
    for name in ("status_at", "last_seen", "health_at"):
        if isinstance(raw.get(name), (int, float)) and not isinstance(raw.get(name), bool):
            state[name] = float(raw[name])
    for name in ("boot", "fw", "board"):
        if isinstance(raw.get(name), str):
            state[name] = raw[name][:MAX_TEXT]
    if isinstance(raw.get("health"), dict):
        state["health"] = coerce_health(raw["health"])
    sensors = raw.get("sensors")
    if isinstance(sensors, dict):
        for name, reading in list(sensors.items())[:MAX_SENSORS]:
            if (
                isinstance(name, str)
                and SENSOR_RE.match(name)
                and isinstance(reading, dict)
                and isinstance(reading.get("value"), (int, float))
                and isinstance(reading.get("at"), (int, float))
            ):
                state["sensors"][name] = {"value": reading["value"], "at": reading["at"]}
    return state


class DeviceStates:
    def __init__(self, recorder: Recorder) -> None:
        self._recorder = recorder
        self.states: dict[str, dict[str, Any]] = {}
        self.observers: list[Observer] = []
        self.reading_observers: list[ReadingObserver] = []
        self._full_warned = False
        self._event_budget: dict[str, tuple[float, int]] = {}  # device -> (minute, count)
        self._health_row_at: dict[str, float] = {}

    def load(self, stored: dict[str, Any]) -> None:
        """The states the store kept. A device that was online is offline until it connects
        again: the hub cannot know it is still there (a sleeping one stays asleep)."""
        for device, raw in stored.items():
            state = coerce_state(raw)
            if state is None or not isinstance(device, str) or not DEVICE_ID_RE.match(device):
                continue
            if state["status"] == "online":
                state["status"] = "offline"
            self.states[device] = state

    def forget(self, device: str) -> None:
        """A device removed from the registry: its state goes (from the store too)."""
        if self.states.pop(device, None) is not None:
            self._recorder.state(device, None)
        self._event_budget.pop(device, None)
        self._health_row_at.pop(device, None)

    def _state(self, device: str) -> dict[str, Any] | None:
        state = self.states.get(device)
        if state is None:
            if not DEVICE_ID_RE.match(device):
                return None
            if len(self.states) >= MAX_DEVICES:
                if not self._full_warned:
                    self._full_warned = True
                    log.warning("device state table full (%d devices)", MAX_DEVICES)
                return None
            state = self.states[device] = empty_state()
        return state

    def _notify(self, device: str, what: str, state: dict[str, Any]) -> None:
        for observer in self.observers:
            try:
                observer(device, what, state)
            except Exception:
                log.exception("device state observer failed on %s", what)

    # --- ingest's feed and the broker's listeners --------------------------------------------
    def on_reading(self, device: str, sensor: str, boot: str, value: float, now: float) -> None:
        """A reading ingest took (``Ingest.on_reading``): device and sensor are checked."""
        state = self.states.get(device)
        if state is None:
            state = self._state(device)
            if state is None:
                return
        state["last_seen"] = now
        sensors = state["sensors"]
        if sensor in sensors or (len(sensors) < MAX_SENSORS and SENSOR_RE.match(sensor)):
            sensors[sensor] = {"value": value, "at": now}
            state["boot"] = boot
            for observer in self.reading_observers:
                try:
                    observer(device, sensor, state)
                except Exception:
                    log.exception("device state observer failed on a reading of %s", sensor)
        self._recorder.state(device, state)

    def on_message(self, topic: str, payload: bytes) -> None:
        """Every routed message: a device's status, health and replies (its readings come from
        ingest, already parsed)."""
        if not topic.startswith(PREFIX) or "/t/" in topic:
            return None
        parts = topic.split("/")
        if len(parts) != 3 or parts[2] not in ("s", "m", "r"):
            return None
        kind = parts[2]
        device = parts[1]
        if not payload:  # a removed device's cleared status and health
            if kind == "s":
                self.forget(device)
            return None
        state = self._state(device)
        if state is None:
            return None
        now = time.time()
        state["last_seen"] = now
        if kind == "s":
            status = payload.decode("ascii", "replace")
            if status in STATUSES:
                state["status"], state["status_at"] = status, now
                self._notify(device, "status", state)
        elif kind == "m":
            self._health(device, state, payload, now)
        self._recorder.state(device, state)
        return None

    def _health(self, device: str, state: dict[str, Any], payload: bytes, now: float) -> None:
        try:
            health = coerce_health(parse_meta(payload))
        except (ContractError, RecursionError):
            return
        state.update(
            health=health,
            health_at=now,
            fw=health["fw"],
            board=health["board"],
            boot=health["boot"],
        )
        if now - self._health_row_at.get(device, 0.0) >= HEALTH_ROW_EVERY_S:
            self._health_row_at[device] = now
            self._recorder.health(
                (
                    device,
                    now,
                    health["heap"],
                    health["rssi"],
                    health["reconnects"],
                    health["queue"],
                )
            )
        self._notify(device, "health", state)

    def on_event(self, kind: str, event: dict[str, Any]) -> None:
        """Connects, disconnects and refusals of devices: last seen, offline, the history."""
        if event.get("identity") != "device":
            return
        device = str(event.get("name") or "")
        # Only a connect makes a device known: a removed device's late disconnect does not.
        state = self._state(device) if kind == "connected" else self.states.get(device)
        if state is None:
            return
        now = time.time()
        if kind in ("connected", "disconnected"):
            state["last_seen"] = now
            if kind == "disconnected" and state["status"] == "online":
                # A clean disconnect without "asleep" (or before the will arrives): offline.
                state["status"], state["status_at"] = "offline", now
                self._notify(device, "status", state)
            self._recorder.state(device, state)
        self.record_event(device, kind, event, now)

    def record_event(self, device: str, kind: str, event: dict[str, Any], now: float) -> None:
        """Into the device's history, at most EVENTS_PER_MINUTE a minute."""
        minute, count = self._event_budget.get(device, (now, 0))
        if now - minute >= 60:
            minute, count = now, 0
        if count >= EVENTS_PER_MINUTE:
            return
        self._event_budget[device] = (minute, count + 1)
        detail = {k: event[k] for k in EVENT_DETAIL_KEYS if event.get(k) not in (None, "")}
        self._recorder.event(device, now, kind[:64], json.dumps(detail, default=str)[:2000])
