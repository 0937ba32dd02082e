"""Alarms: rules evaluated on readings, health and presence changes, plus a periodic tick for
devices offline for N minutes. Plain logic: the hub feeds it device states and the time, and
gets back events; rules and alarms are kept in the store (hub/history.py).

A rule raises an alarm once its condition has held for ``for_s`` seconds; an alarm clears
only once the value is back past the threshold by ``clear_hysteresis`` (above: below
threshold - hysteresis; below and heap_below: above threshold + hysteresis). Each raise, clear
and acknowledgement is a hub event (``alarm_raised``, ``alarm_cleared``,
``alarm_acknowledged`` with ``by``).
"""

from __future__ import annotations

import logging
import math
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Mapping
from typing import Any

from hub.topics import DEVICE_ID_RE, SENSOR_RE

log = logging.getLogger(__name__)

KINDS = ("offline", "above", "below", "heap_below", "reconnects_above")
MAX_RULES = 1000
MAX_NAME = 64
MAX_FOR_S = 7 * 86400
MAX_THRESHOLD = 1e12
RECENT_CLEARED = 1000
RECONNECT_WINDOW_S = 3600.0

Emit = Callable[[str, dict[str, Any]], None]  # (event kind, alarm + extra)
Save = Callable[[dict[str, Any]], None]


class RuleError(ValueError):
    """A rule that is not one; the message names the field."""


def _number(body: Mapping[str, Any], name: str, default: float | None, low: float) -> float:
    value = body.get(name, default)
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) <= 2**53:
        value = float(value)  # a bigger int would overflow a float: refused below
    if (
        not isinstance(value, float)
        or not math.isfinite(value)
        or not (low <= value <= MAX_THRESHOLD)
    ):
        raise RuleError(f'"{name}" must be a number from {low:g} to {MAX_THRESHOLD:g}')
    return float(value)


def parse_rule(body: Mapping[str, Any]) -> dict[str, Any]:
    """A rule from JSON (the API's and the CLI's), checked field by field; no id yet."""
    unknown = set(body) - {
        "id",
        "name",
        "scope",
        "kind",
        "sensor",
        "threshold",
        "for_s",
        "clear_hysteresis",
        "enabled",
    }
    if unknown:
        raise RuleError(f"unknown field {sorted(unknown)[0][:40]!r}")
    name = body.get("name")
    if not isinstance(name, str) or not 1 <= len(name) <= MAX_NAME:
        raise RuleError(f'"name" must be a string of 1 to {MAX_NAME} characters')
    scope = body.get("scope", {"fleet": True})
    if not isinstance(scope, dict) or len(scope) != 1:
        raise RuleError('"scope" must be {"device": ID}, {"board": B} or {"fleet": true}')
    ((key, value),) = scope.items()
    good_device = key == "device" and isinstance(value, str) and DEVICE_ID_RE.match(value)
    good_board = key == "board" and isinstance(value, str) and 1 <= len(value) <= MAX_NAME
    if not (good_device or good_board or (key == "fleet" and value is True)):
        raise RuleError('"scope" must be {"device": ID}, {"board": B} or {"fleet": true}')
    kind = body.get("kind")
    if kind not in KINDS:
        raise RuleError(f'"kind" must be one of {", ".join(KINDS)}')
    sensor = body.get("sensor")
    if kind in ("above", "below"):
        if not isinstance(sensor, str) or not SENSOR_RE.match(sensor):
            raise RuleError(f'"sensor" must name a sensor for an {kind} rule')
    elif sensor is not None:
        raise RuleError(f'"sensor" is for above and below rules only, not {kind}')
    low = -MAX_THRESHOLD if kind in ("above", "below") else 0.0
    enabled = body.get("enabled", True)
    if not isinstance(enabled, bool):
        raise RuleError('"enabled" must be true or false')
    return {
        "name": name,
        "scope": {key: value},
        "kind": kind,
        "sensor": sensor,
        "threshold": _number(body, "threshold", None, low),
        "for_s": _for_s(body),
        "clear_hysteresis": _number(body, "clear_hysteresis", 0, 0.0),
        "enabled": enabled,
    }


def _for_s(body: Mapping[str, Any]) -> float:
    value = _number(body, "for_s", 0, 0.0)
    if value > MAX_FOR_S:
        raise RuleError(f'"for_s" must be at most {MAX_FOR_S} s')
    return value


def applies(rule: dict[str, Any], device: str, state: Mapping[str, Any]) -> bool:
    scope = rule["scope"]
    if "device" in scope:
        return bool(scope["device"] == device)
    if "board" in scope:
        return bool(scope["board"] == state.get("board"))
    return True


class Alarms:
    def __init__(self, emit: Emit, save: Save) -> None:
        self._emit = emit
        self._save = save
        self.rules: dict[int, dict[str, Any]] = {}
        self.active: dict[tuple[int, str], dict[str, Any]] = {}
        self.cleared: OrderedDict[int, dict[str, Any]] = OrderedDict()
        self._since: dict[tuple[int, str], tuple[float, float]] = {}  # condition held since
        self._reconnects: dict[str, deque[tuple[float, str, int]]] = {}
        self._next_id = 1
        self._watching: dict[str, list[dict[str, Any]]] = {}
        self._reading_sensors: frozenset[str] = frozenset()  # sensors an enabled rule watches

    # --- loading ------------------------------------------------------------------------------
    def set_rules(self, rules: list[dict[str, Any]]) -> None:
        """The rules as stored (the CLI may have changed them); removed rules' alarms clear."""
        fresh: dict[int, dict[str, Any]] = {}
        for raw in rules[:MAX_RULES]:
            try:
                fresh[int(raw["id"])] = {**parse_rule(raw), "id": int(raw["id"])}
            except (RuleError, KeyError, TypeError, ValueError) as exc:
                log.warning("alarm rule %r ignored: %s", str(raw.get("id"))[:20], exc)
        self.rules = fresh
        # Which rules each kind of change can move (a reading only its sensor's rules).
        self._watching = {}
        for one in fresh.values():
            if one["enabled"]:
                what = {"above": "reading:", "below": "reading:", "offline": "status"}.get(
                    one["kind"], "health"
                )
                what += one["sensor"] if what == "reading:" else ""
                self._watching.setdefault(what, []).append(one)
        self._reading_sensors = frozenset(
            what[len("reading:") :] for what in self._watching if what.startswith("reading:")
        )
        now = time.time()
        for key, alarm in list(self.active.items()):
            rule = self.rules.get(key[0])
            if rule is None or not rule["enabled"]:
                self._clear(key, alarm, now, alarm["value"])
        for key in [k for k in self._since if k[0] not in self.rules]:
            del self._since[key]

    def load(self, alarms: list[dict[str, Any]]) -> None:
        for alarm in alarms:
            self._next_id = max(self._next_id, int(alarm["id"]) + 1)
            if alarm.get("state") == "active":
                self.active[(alarm["rule"], alarm["device"])] = alarm
            else:
                self._remember(alarm)

    def _remember(self, alarm: dict[str, Any]) -> None:
        self.cleared[alarm["id"]] = alarm
        while len(self.cleared) > RECENT_CLEARED:
            self.cleared.popitem(last=False)

    # --- reading ------------------------------------------------------------------------------
    def count(self, device: str) -> int:
        return sum(1 for (_, d) in self.active if d == device)

    def counts(self) -> dict[str, int]:
        """Active alarms by device."""
        found: dict[str, int] = {}
        for _, device in self.active:
            found[device] = found.get(device, 0) + 1
        return found

    def listing(self, everything: bool) -> list[dict[str, Any]]:
        found = list(self.active.values())
        if everything:
            found += list(self.cleared.values())
        return sorted(found, key=lambda a: a["id"], reverse=True)

    def find(self, alarm_id: int) -> dict[str, Any] | None:
        for alarm in self.active.values():
            if alarm["id"] == alarm_id:
                return alarm
        return self.cleared.get(alarm_id)

    # --- evaluating ---------------------------------------------------------------------------
    def on_reading(self, device: str, sensor: str, state: Mapping[str, Any]) -> None:
        """A device's reading (on every reading the hub takes): nothing to do unless a rule
        watches the sensor or the device may have an offline alarm to clear."""
        if sensor in self._reading_sensors or (self.active and "status" in self._watching):
            self.on_state(device, "reading:" + sensor, state)

    def on_state(self, device: str, what: str, state: Mapping[str, Any]) -> None:
        """A device's reading, health or status changed."""
        now = time.time()
        if what == "health" and any(
            r["kind"] == "reconnects_above" for r in self._watching.get("health", ())
        ):
            self._note_reconnects(device, state, now)
        for rule in self._watching.get(what, ()):
            if applies(rule, device, state):
                self._evaluate(rule, device, state, now)
        if what.startswith("reading:"):  # a message from an offline-alarmed device clears it
            for rule in self._watching.get("status", ()):
                if (rule["id"], device) in self.active:
                    self._evaluate(rule, device, state, now)

    def tick(self, states: Mapping[str, Mapping[str, Any]], now: float | None = None) -> None:
        """Offline-for-N-minutes rules and conditions waiting out their for_s."""
        now = time.time() if now is None else now
        offline = [r for r in self.rules.values() if r["enabled"] and r["kind"] == "offline"]
        for device, state in states.items():
            for rule in offline:
                if applies(rule, device, state):
                    self._evaluate(rule, device, state, now)
        for key, (since, value) in list(self._since.items()):
            waiting = self.rules.get(key[0])
            if waiting is not None and key not in self.active and now - since >= waiting["for_s"]:
                self._raise(waiting, key[1], value, now)

    def _note_reconnects(self, device: str, state: Mapping[str, Any], now: float) -> None:
        health = state.get("health") or {}
        count, boot = health.get("reconnects"), health.get("boot")
        if not isinstance(count, int) or not isinstance(boot, str):
            return
        samples = self._reconnects.setdefault(device, deque(maxlen=256))
        samples.append((now, boot, count))
        while samples and samples[0][0] < now - RECONNECT_WINDOW_S:
            samples.popleft()

    def _value(
        self, rule: dict[str, Any], device: str, state: Mapping[str, Any], now: float
    ) -> float | None:
        kind = rule["kind"]
        if kind in ("above", "below"):
            reading = (state.get("sensors") or {}).get(rule["sensor"])
            return None if reading is None else float(reading["value"])
        if kind == "heap_below":
            heap = (state.get("health") or {}).get("heap")
            return float(heap) if isinstance(heap, int) else None
        if kind == "reconnects_above":
            samples = self._reconnects.get(device)
            if not samples:
                return None
            _, boot, latest = samples[-1]
            return float(latest - min(c for _, b, c in samples if b == boot))
        last = state.get("last_seen")  # offline: minutes since the last message
        if state.get("status") == "online" or last is None:
            return 0.0
        return (now - float(last)) / 60

    def _evaluate(
        self, rule: dict[str, Any], device: str, state: Mapping[str, Any], now: float
    ) -> None:
        value = self._value(rule, device, state, now)
        if value is None:
            return
        key = (rule["id"], device)
        threshold, hysteresis = rule["threshold"], rule["clear_hysteresis"]
        if rule["kind"] in ("below", "heap_below"):
            bad, good = value < threshold, value > threshold + hysteresis
        elif rule["kind"] == "offline":
            bad, good = value >= threshold, value < threshold
        else:
            bad, good = value > threshold, value < threshold - hysteresis
        alarm = self.active.get(key)
        if alarm is not None:
            alarm["value"] = value if bad else alarm["value"]
            if good:
                self._clear(key, alarm, now, value)
            return
        if not bad:
            self._since.pop(key, None)
            return
        since, _ = self._since.get(key, (now, value))
        self._since[key] = (since, value)
        if now - since >= rule["for_s"]:
            self._raise(rule, device, value, now)

    def _raise(self, rule: dict[str, Any], device: str, value: float, now: float) -> None:
        key = (rule["id"], device)
        self._since.pop(key, None)
        alarm = {
            "id": self._next_id,
            "rule": rule["id"],
            "rule_name": rule["name"],
            "device": device,
            "kind": rule["kind"],
            "raised_at": now,
            "cleared_at": None,
            "acknowledged_by": None,
            "acknowledged_at": None,
            "value": value,
            "state": "active",
        }
        self._next_id += 1
        self.active[key] = alarm
        self._changed("alarm_raised", alarm)

    def _clear(
        self, key: tuple[int, str], alarm: dict[str, Any], now: float, value: float
    ) -> None:
        del self.active[key]
        alarm.update(state="cleared", cleared_at=now)
        self._remember(alarm)
        self._changed("alarm_cleared", alarm, value=value)

    def acknowledge(self, alarm_id: int, by: str, at: float | None = None) -> dict[str, Any]:
        """Marks an alarm acknowledged (once); KeyError for an unknown one."""
        alarm = self.find(alarm_id)
        if alarm is None:
            raise KeyError(alarm_id)
        if alarm["acknowledged_by"] is None:
            alarm.update(
                acknowledged_by=by[:MAX_NAME], acknowledged_at=time.time() if at is None else at
            )
            self._changed("alarm_acknowledged", alarm, by=alarm["acknowledged_by"])
        return alarm

    def _changed(self, kind: str, alarm: dict[str, Any], **extra: Any) -> None:
        self._save(alarm)
        try:
            self._emit(kind, {**alarm, **extra})
        except Exception:
            log.exception("could not report %s", kind)
