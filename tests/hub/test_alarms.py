"""The alarm logic without the hub: rule checks, scopes, for_s, hysteresis both ways, heap,
reconnects an hour, offline minutes on the tick, acknowledgement, removed rules."""

from __future__ import annotations

import time
from typing import Any

import pytest

from hub.alarms import Alarms, RuleError, parse_rule


class Recorded:
    def __init__(self) -> None:
        self.events: list[tuple[str, dict[str, Any]]] = []
        self.saved: list[dict[str, Any]] = []

    def kinds(self) -> list[str]:
        return [k for k, _ in self.events]


def engine(*rules: dict[str, Any]) -> tuple[Alarms, Recorded]:
    seen = Recorded()
    alarms = Alarms(lambda k, e: seen.events.append((k, e)), seen.saved.append)
    alarms.set_rules([{**parse_rule(r), "id": i + 1} for i, r in enumerate(rules)])
    return alarms, seen


def state(**values: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "status": "online",
        "last_seen": 0.0,
        "board": "esp32",
        "health": None,
        "sensors": {},
    }
    base.update(values)
    return base


def temp(value: float) -> dict[str, Any]:
    return state(sensors={"temp": {"value": value, "at": 0}})


@pytest.mark.parametrize(
    ("rule", "message"),
    [
        ({"name": "", "kind": "above", "sensor": "t", "threshold": 1}, '"name"'),
        ({"name": "x", "kind": "hot", "threshold": 1}, '"kind"'),
        ({"name": "x", "kind": "above", "threshold": 1}, '"sensor"'),
        ({"name": "x", "kind": "offline", "sensor": "t", "threshold": 1}, '"sensor"'),
        ({"name": "x", "kind": "offline", "threshold": float("nan")}, '"threshold"'),
        ({"name": "x", "kind": "offline", "threshold": -1}, '"threshold"'),
        ({"name": "x", "kind": "offline", "threshold": True}, '"threshold"'),
        ({"name": "x", "kind": "offline", "threshold": 10**400}, '"threshold"'),
        ({"name": "x", "kind": "offline", "threshold": 1, "for_s": 1e9}, '"for_s"'),
        ({"name": "x", "kind": "offline", "threshold": 1, "scope": {"device": "BAD!"}}, '"scope"'),
        ({"name": "x", "kind": "offline", "threshold": 1, "scope": {"fleet": 1}}, '"scope"'),
        ({"name": "x", "kind": "offline", "threshold": 1, "colour": "red"}, "unknown field"),
        ({"name": "x", "kind": "offline", "threshold": 1, "enabled": "yes"}, '"enabled"'),
    ],
)
def test_bad_rules_are_refused_by_field(rule: dict[str, Any], message: str) -> None:
    """A rule that is not one names the field at fault."""
    with pytest.raises(RuleError, match=message):
        parse_rule(rule)


def test_above_raises_and_clears_only_past_the_hysteresis() -> None:
    """Above 30 raises once; 29 keeps it (within 2 of the threshold); 27.9 clears it."""
    alarms, seen = engine(
        {"name": "hot", "kind": "above", "sensor": "temp", "threshold": 30, "clear_hysteresis": 2}
    )
    for value in (25, 31, 35, 29, 28):
        alarms.on_state("d1", "reading:temp", temp(value))
    assert seen.kinds() == ["alarm_raised"] and alarms.count("d1") == 1
    alarms.on_state("d1", "reading:temp", temp(27.9))
    assert seen.kinds() == ["alarm_raised", "alarm_cleared"] and alarms.count("d1") == 0
    assert seen.events[0][1]["value"] == 31 and seen.events[1][1]["value"] == 27.9
    (cleared,) = alarms.listing(True)
    assert cleared["state"] == "cleared" and seen.saved[-1] is cleared


def test_below_and_heap_clear_above_threshold_plus_hysteresis() -> None:
    """Below-rules raise under the threshold and clear only above threshold + hysteresis."""
    alarms, seen = engine(
        {"name": "cold", "kind": "below", "sensor": "temp", "threshold": 5, "clear_hysteresis": 1},
        {"name": "heap", "kind": "heap_below", "threshold": 20000, "clear_hysteresis": 5000},
    )
    for value in (4, 5.5, 6.5):
        alarms.on_state("d1", "reading:temp", temp(value))
    for heap in (10000, 24000, 26000):
        alarms.on_state("d1", "health", state(health={"heap": heap}))
    assert seen.kinds() == ["alarm_raised", "alarm_cleared"] * 2
    assert [e["value"] for _, e in seen.events] == [4, 6.5, 10000, 26000]


def test_for_s_waits_and_the_tick_raises() -> None:
    """A condition must hold for for_s: a dip back resets it; the tick raises once it has."""
    alarms, seen = engine(
        {"name": "hot", "kind": "above", "sensor": "temp", "threshold": 30, "for_s": 60}
    )
    alarms.on_state("d1", "reading:temp", temp(31))
    alarms.tick({}, now=1e12)  # long after: raised by the tick
    assert seen.kinds() == ["alarm_raised"]
    alarms2, seen2 = engine(
        {"name": "hot", "kind": "above", "sensor": "temp", "threshold": 30, "for_s": 3600}
    )
    alarms2.on_state("d1", "reading:temp", temp(31))
    alarms2.on_state("d1", "reading:temp", temp(20))  # condition ended: nothing pending
    alarms2.tick({}, now=1e12)
    assert seen2.kinds() == []


def test_scopes_device_board_fleet() -> None:
    """A device rule watches one device, a board rule that board's devices, fleet all."""
    alarms, seen = engine(
        {
            "name": "one",
            "kind": "above",
            "sensor": "temp",
            "threshold": 1,
            "scope": {"device": "d2"},
        },
        {
            "name": "board",
            "kind": "above",
            "sensor": "temp",
            "threshold": 1,
            "scope": {"board": "lolin"},
        },
        {
            "name": "all",
            "kind": "above",
            "sensor": "temp",
            "threshold": 1,
            "scope": {"fleet": True},
        },
    )
    alarms.on_state("d1", "reading:temp", temp(5))
    alarms.on_state("d3", "reading:temp", {**temp(5), "board": "lolin"})
    names = sorted(e["rule_name"] + ":" + e["device"] for _, e in seen.events)
    assert names == ["all:d1", "all:d3", "board:d3"]


def test_offline_minutes_on_the_tick_and_clear_on_return() -> None:
    """Offline for the threshold's minutes raises on the tick (not before); online clears."""
    alarms, seen = engine({"name": "gone", "kind": "offline", "threshold": 10})
    away = {
        "d1": state(status="offline", last_seen=1000.0),
        "d2": state(status=None, last_seen=None),
    }
    alarms.tick(away, now=1000.0 + 9 * 60)
    assert seen.kinds() == []
    alarms.tick(away, now=1000.0 + 11 * 60)
    assert seen.kinds() == ["alarm_raised"] and seen.events[0][1]["device"] == "d1"
    alarms.on_state("d1", "status", state(status="online"))
    assert seen.kinds() == ["alarm_raised", "alarm_cleared"]
    alarms.tick(away, now=1000.0 + 12 * 60)  # gone again: raised again
    sleeper = state(status="asleep", last_seen=time.time(), sensors={"t": {"value": 1}})
    alarms.on_state("d1", "reading:t", sleeper)  # a deep-sleep wake's reading clears it
    assert seen.kinds() == ["alarm_raised", "alarm_cleared"] * 2


def test_reconnects_an_hour_within_one_boot() -> None:
    """More reconnects than the threshold within the hour (same boot) raises."""
    alarms, seen = engine({"name": "flaky", "kind": "reconnects_above", "threshold": 3})
    for count in (1, 2, 4):
        alarms.on_state("d1", "health", state(health={"reconnects": count, "boot": "aa"}))
    assert seen.kinds() == []  # 3 more than the first sample: not above 3
    alarms.on_state("d1", "health", state(health={"reconnects": 5, "boot": "aa"}))
    assert seen.kinds() == ["alarm_raised"] and seen.events[0][1]["value"] == 4


def test_acknowledge_once_and_removed_rules_clear() -> None:
    """Acknowledging reports who, once; removing a rule clears its alarms."""
    alarms, seen = engine({"name": "hot", "kind": "above", "sensor": "temp", "threshold": 1})
    alarms.on_state("d1", "reading:temp", temp(5))
    (alarm,) = alarms.listing(False)
    alarms.acknowledge(alarm["id"], "ada", at=5.0)
    alarms.acknowledge(alarm["id"], "bob")
    assert alarm["acknowledged_by"] == "ada" and seen.kinds().count("alarm_acknowledged") == 1
    with pytest.raises(KeyError):
        alarms.acknowledge(999, "ada")
    alarms.set_rules([])
    assert seen.kinds()[-1] == "alarm_cleared" and alarms.listing(False) == []


def test_readings_reach_only_the_rules_that_watch_their_sensor() -> None:
    """on_reading (every reading the hub takes) moves the rules on its sensor as on_state
    does, skips sensors no rule watches, and still clears an offline alarm by a reading."""
    alarms, seen = engine(
        {"name": "hot", "kind": "above", "sensor": "temp", "threshold": 30},
        {"name": "gone", "kind": "offline", "threshold": 10},
    )
    alarms.on_reading("d1", "hum", state(sensors={"hum": {"value": 99, "at": 0}}))
    alarms.on_reading("d1", "temp", temp(31))
    assert seen.kinds() == ["alarm_raised"] and seen.events[0][1]["rule_name"] == "hot"
    alarms.tick({"d2": state(status="offline", last_seen=1000.0)}, now=1000.0 + 11 * 60)
    assert seen.kinds() == ["alarm_raised"] * 2 and seen.events[1][1]["device"] == "d2"
    alarms.on_reading("d2", "hum", state(status="asleep", last_seen=time.time()))
    assert seen.kinds() == ["alarm_raised", "alarm_raised", "alarm_cleared"]
