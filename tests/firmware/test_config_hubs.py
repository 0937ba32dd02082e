"""The firmware's `hubs` setting under the real MicroPython unix port: the list form, the older
`hub_host`/`hub_port` form as a list of one, and hostile values refused with a clear message."""

import json
from pathlib import Path
from typing import Any

from tests.support.micropython import run_mp

BASE = {"id": "dev-1"}
OK = [
    ({}, [["127.0.0.1", 1883]]),  # nothing given: the default hub
    ({"hub_host": "hub.local", "hub_port": 1884}, [["hub.local", 1884]]),  # an older deploy
    ({"hubs": ["10.0.0.1:1883"]}, [["10.0.0.1", 1883]]),
    (
        {"hubs": ["a.example:1883", "B.example:65535", "[::1]:1"]},
        [["a.example", 1883], ["B.example", 65535], ["::1", 1]],
    ),
    ({"hubs": ["h:1"] * 8}, [["h", 1]] * 8),
    ({"hubs": None, "hub_host": "x", "hub_port": 2}, [["x", 2]]),
]
BAD: list[tuple[dict[str, Any], str]] = [
    ({"hubs": []}, "setting 'hubs' must be a list of 1 to 8"),
    ({"hubs": ["h:1"] * 9}, "setting 'hubs' must be a list of 1 to 8"),
    ({"hubs": "h:1883"}, "setting 'hubs' must be a list of 1 to 8"),
    ({"hubs": {"h": 1883}}, "setting 'hubs' must be a list of 1 to 8"),
    ({"hubs": ["h:1883"], "hub_host": "h"}, "give setting 'hubs' or 'hub_host'/'hub_port'"),
    ({"hubs": ["h:1883"], "hub_port": 1883}, "give setting 'hubs' or 'hub_host'/'hub_port'"),
]
NOT_AN_ADDRESS = [
    "h", "h:", ":1883", "h:0", "h:65536", "h:99999999", "h:-1", "h:+1", "h:1e3", "h:18 83",
    "h :1883", " h:1883", "h\n:1883", "h\x00:1883", "a/b:1883", "user@h:1883", "mqtt://h:1883",
    "::1:1883", "[h]:1883", "[::1:1883", "h:1883:", "é.example:1883", "h;rm -rf:1", "[]:1",
    "a" * 300 + ":1", 1883, None, ["h", 1883], True,
]


def _check(cases: list[dict[str, Any]], tmp_path: Path) -> list[list[Any]]:
    path = tmp_path / "cases.json"
    path.write_text(json.dumps([{**BASE, **case} for case in cases]))
    lines = run_mp("config_probe.py", tmp_path, str(path)).splitlines()
    return [json.loads(line) for line in lines]


def test_hubs_are_parsed_and_the_older_form_still_loads(tmp_path: Path) -> None:
    """`hubs` gives the addresses in order; `hub_host`/`hub_port` (older deploys) is a list of
    one."""
    results = _check([case for case, _ in OK], tmp_path)
    assert results == [["ok", hubs] for _, hubs in OK]


def test_bad_hubs_are_refused_with_a_message_naming_the_setting(tmp_path: Path) -> None:
    """Hostile or malformed `hubs` values (wrong types, sizes, ports, characters, both forms at
    once) are refused with a message naming the setting, never accepted or crashed on."""
    cases = [case for case, _ in BAD] + [{"hubs": [text]} for text in NOT_AN_ADDRESS]
    messages = [case[1] for case in BAD] + ["is not"] * len(NOT_AN_ADDRESS)
    results = _check(cases, tmp_path)
    for case, message, (kind, text) in zip(cases, messages, results, strict=True):
        assert kind == "error", (case, text)
        assert message in text and "'hubs'" in text, (case, text)
        assert len(text) < 200  # a hostile value is shown cut short
