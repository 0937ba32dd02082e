"""The device-id check is spelled twice, in the hub (hub/topics.py DEVICE_ID_RE) and in the
firmware (node/config.py, whose MicroPython re has no counted repeats): both agree on every case,
with the firmware's run under the real MicroPython unix port."""

import json
from pathlib import Path

from hub.topics import DEVICE_ID_RE
from tests.support.micropython import run_mp

CASES = [
    "a", "0", "kitchen-1", "sim-001", "a_b", "a-", "a_", "0-_", "a" * 32, "9" * 32,
    "", "-a", "_a", "-", "a" * 33, "Kitchen", "A", "kitchen 1", " a", "a ", "a/b", "a+b",
    "a#", "a.b", "a:b", "$a", "é", "kitchén", "\uff53im", "a\n", "\na", "a\r", "a\t", "a\x00",
    "+", "#", "d/x", "a" * 31 + "-", "-" + "a" * 31,
]


def test_firmware_and_hub_agree_on_device_ids(tmp_path: Path) -> None:
    """For every case, hostile ones included, the firmware accepts an id exactly when the
    hub's DEVICE_ID_RE matches all of it."""
    cases = tmp_path / "cases.json"
    cases.write_text(json.dumps(CASES))
    firmware = json.loads(run_mp("id_probe.py", tmp_path, str(cases)))
    hub = [DEVICE_ID_RE.fullmatch(case) is not None for case in CASES]
    disagree = [case for case, fw, h in zip(CASES, firmware, hub, strict=True) if fw != h]
    assert disagree == []
    assert 10 <= sum(hub) < len(CASES)  # both kinds of case are there
