"""The firmware's settings check (node/config.check) under the real MicroPython unix port:
each bad value is refused with its own message naming the setting; the bounds are accepted."""

import json
from pathlib import Path
from typing import Any

import pytest

from tests.support.micropython import run_mp

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
}
TEXT = ["username", "password", "wifi_ssid", "wifi_password", "hub_host"]
ID_ERROR = "setting 'id' is required: 1 to 32 of a-z 0-9 - _, the first a letter or digit"


def bad_cases() -> list[tuple[Any, str]]:
    """(settings, the exact message) for every kind of bad value."""
    cases: list[tuple[Any, str]] = []
    for key, (low, high) in RANGES.items():
        message = f"setting '{key}' must be a whole number from {low} to {high}"
        for value in [low - 1, high + 1, -1, 2.5, float(low), True, False, str(low), None, [low]]:
            cases.append(({"id": "dev-1", key: value}, message))
    for value in [1, "true", None, 0, []]:
        cases.append(({"id": "dev-1", "tls": value}, "setting 'tls' must be true or false"))
    for key in TEXT:
        for value in [1, True, 1.5, ["x"], {"a": "b"}]:
            cases.append(({"id": "dev-1", key: value}, f"setting '{key}' must be text"))
    for key in ["Id", "hub", "", "__class__", "id "]:
        cases.append(({"id": "dev-1", key: 1}, f"unknown setting {key!r} in settings.json"))
    for device in [None, "", "Dev-1", "-dev", "_dev", "a" * 33, "dev 1", "dév", "dev/1", "d#"]:
        cases.append(({"id": device}, ID_ERROR))
    cases.append(({}, ID_ERROR))
    cases.append(({"id": 7}, "setting 'id' must be text"))
    cases.append(({"id": "dev-1", "hub_host": ""}, "setting 'hub_host' is required"))
    cases.append(
        (
            {"id": "dev-1", "backoff_min_ms": 5000, "backoff_max_ms": 4999},
            "setting 'backoff_max_ms' must not be below 'backoff_min_ms'",
        )
    )
    for settings in [[], "id=dev-1", 7, None, True]:
        cases.append((settings, "settings.json must hold a JSON object"))
    return cases


def good_cases() -> list[dict[str, Any]]:
    """Settings at every bound, and every text setting null or text."""
    cases: list[dict[str, Any]] = [{"id": "dev-1"}, {"id": "a"}, {"id": "0" + "_" * 31}]
    for key, (low, high) in RANGES.items():
        for value in (low, high):
            case = {"id": "dev-1", key: value}
            if key == "backoff_min_ms":
                case["backoff_max_ms"] = max(value, 60000)
            if key == "backoff_max_ms":
                case["backoff_min_ms"] = min(value, 1000)
            cases.append(case)
    cases += [{"id": "dev-1", "tls": True}, {"id": "dev-1", "tls": False}]
    cases += [{"id": "dev-1", key: None} for key in TEXT if key != "hub_host"]
    cases += [{"id": "dev-1", key: "x"} for key in TEXT]
    return cases


def check(cases: list[Any], tmp_path: Path) -> list[list[Any]]:
    path = tmp_path / "cases.json"
    path.write_text(json.dumps(cases))
    return [
        json.loads(line) for line in run_mp("config_probe.py", tmp_path, str(path)).splitlines()
    ]


def test_each_bad_value_gets_its_own_message(tmp_path: Path) -> None:
    """Out-of-range, fractional, boolean and text numbers, non-boolean flags, non-text text,
    unknown keys, bad ids, inverted backoff and a non-object are each refused with the message
    that names the setting and what it must be."""
    cases = bad_cases()
    results = check([settings for settings, _ in cases], tmp_path)
    assert len(results) == len(cases)
    wrong = [
        (settings, message, result)
        for (settings, message), result in zip(cases, results, strict=True)
        if result != ["error", message]
    ]
    assert not wrong, wrong


@pytest.mark.parametrize("extra", [{}, {"hub_host": "hub.local", "hub_port": 8883}])
def test_values_at_the_bounds_are_accepted(tmp_path: Path, extra: dict[str, Any]) -> None:
    """Every setting at its lowest and highest value, flags and text (or null) are accepted."""
    cases = [{**case, **extra} for case in good_cases()]
    results = check(cases, tmp_path)
    assert [r[0] for r in results] == ["ok"] * len(cases), [
        (c, r) for c, r in zip(cases, results, strict=True) if r[0] != "ok"
    ]
