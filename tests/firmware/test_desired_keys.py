"""The hub's desired-document checks agree with the firmware's settings check (node/config.py
under the real MicroPython unix port): what the hub accepts the device accepts, and each value
just outside a bound is refused by both."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import pytest

from hub.desired.document import (
    FLAGS,
    NOT_HERE,
    RANGES,
    SETTINGS,
    TEXTS,
    DocumentError,
    check_document,
)
from tests.firmware.test_config import check
from tools import mpunix


def test_every_setting_the_hub_knows_is_one_the_firmware_knows(tmp_path: Path) -> None:
    """Each key a desired document may hold, at each bound, passes node/config.check; the keys
    a document may not hold are the firmware's too (no key is silently dropped)."""
    cases: list[dict[str, Any]] = []
    for key, (low, high) in RANGES.items():
        for value in (low, high):
            doc = {key: value}
            if key == "backoff_min_ms":
                doc["backoff_max_ms"] = max(value, 60000)
            if key == "backoff_max_ms":
                doc["backoff_min_ms"] = min(value, 1000)
            cases.append(doc)
    cases += [{key: True} for key in FLAGS] + [{key: "x" * 255} for key in TEXTS]
    cases += [{"hubs": ["a.local:1", "[fd00::1]:65535"] + ["b:2"] * 6}]
    for doc in cases:
        assert check_document(doc) == doc
    results = check([{"id": "dev-1", **doc} for doc in cases], tmp_path)
    assert [r[0] for r in results] == ["ok"] * len(cases), [
        (c, r) for c, r in zip(cases, results, strict=True) if r[0] != "ok"
    ]
    known = check([{"id": "dev-1", key: None} for key in NOT_HERE if key != "id"], tmp_path)
    assert [r[0] for r in known] == ["ok"] * (len(NOT_HERE) - 1), known
    unknown = check([{"id": "dev-1", "not_a_setting": 1}], tmp_path)
    assert unknown == [["error", "unknown setting 'not_a_setting' in settings.json"]]


def test_the_hub_lists_every_firmware_setting_and_its_bounds() -> None:
    """node/config.py's DEFAULTS are exactly the settings a document may hold plus those it may
    not, and its _RANGES are the hub's RANGES (the module needs only json: CPython loads it)."""
    spec = importlib.util.spec_from_file_location(
        "fw_config", mpunix.FIRMWARE_DIR / "node" / "config.py"
    )
    assert spec is not None and spec.loader is not None
    firmware = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(firmware)
    assert set(firmware.DEFAULTS) == set(SETTINGS) | set(NOT_HERE)
    assert firmware._RANGES == RANGES
    assert set(firmware._FLAGS) == set(FLAGS)


@pytest.mark.parametrize("key", sorted(RANGES))
def test_values_just_outside_a_bound_are_refused_by_both(key: str, tmp_path: Path) -> None:
    """One below the lowest and one above the highest value: the hub refuses the document
    and the firmware the settings, both naming the setting."""
    low, high = RANGES[key]
    for value in (low - 1, high + 1):
        with pytest.raises(DocumentError, match=f"'{key}'"):
            check_document({key: value})
    results = check([{"id": "dev-1", key: v} for v in (low - 1, high + 1)], tmp_path)
    assert all(r[0] == "error" and f"'{key}'" in r[1] for r in results), results


def test_the_sleeping_trial_names_the_settings_files_as_the_firmware_does() -> None:
    """node/trialwake.py repeats node/config.py's file names (loading config does not fit in a
    failed wake's heap): they are the same."""
    modules = {}
    for name in ("config", "trialwake"):
        path = mpunix.FIRMWARE_DIR / "node" / f"{name}.py"
        spec = importlib.util.spec_from_file_location(f"fw_{name}", path)
        assert spec is not None and spec.loader is not None
        modules[name] = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(modules[name])
    for constant in ("SETTINGS_FILE", "BACKUP_FILE", "TRIAL_FILE"):
        assert getattr(modules["trialwake"], constant) == getattr(modules["config"], constant)
