"""The flash ring (firmware/node/ring.py) under the real MicroPython unix port: power lost in
the middle of a record's write, or a corrupt byte in a record, at every byte offset."""

import json
from typing import Any

import pytest

from tests.support.micropython import run_mp


@pytest.fixture(scope="module")
def cases(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """What tests/mp/ring_probe.py recovered in each case, and the payloads it pushed."""
    lines = run_mp("ring_probe.py", tmp_path_factory.mktemp("ring")).splitlines()
    out: dict[str, Any] = {"torn": [], "corrupt": [], "migrated": []}
    for line in lines:
        case = json.loads(line)
        if case["case"] == "payloads":
            out["payloads"] = [p.encode() for p in case["payloads"]]
        else:
            out[case["case"]].append(case)
    return out


def recovered(case: dict[str, Any]) -> dict[int, tuple[int, bytes] | None]:
    return {
        i: None if channel is None else (channel, bytes.fromhex(data))
        for i, channel, data in case["seen"]
    }


def test_every_offset_was_tried(cases: dict[str, Any]) -> None:
    """The probe tore reading 10 at each of its 23 offsets (12 bytes of marker, channel, length,
    index and checksum, a 10-byte payload, and the whole record) and corrupted each of reading
    4's 21 bytes."""
    assert [c["offset"] for c in cases["torn"]] == list(range(23))
    assert [c["offset"] for c in cases["corrupt"]] == list(range(21))


def test_a_torn_write_keeps_every_reading_before_it(cases: dict[str, Any]) -> None:
    """Power lost while reading 10 was written (the ring had wrapped, its header 4 readings
    stale): after a reboot readings 3 to 9 are all there, each with its channel and payload,
    and a new reading can be pushed and read back."""
    payloads = cases["payloads"]
    for case in cases["torn"]:
        got = recovered(case)
        for i in range(3, 10):
            assert got.get(i) == (i % 3, payloads[i]), (case["offset"], i, got.get(i))
        assert case["push_ok"], case


def test_a_corrupt_record_is_skipped_and_every_other_reading_kept(cases: dict[str, Any]) -> None:
    """A flipped byte anywhere in reading 4 (header written before reading 0, so the ring finds
    its end by scanning): reading 4 is refused, readings 0 to 3 and 5 to 7 after it are all
    there, intact, and the ring takes new ones."""
    payloads = cases["payloads"]
    for case in cases["corrupt"]:
        got = recovered(case)
        assert got.get(4) is None, (case["offset"], got.get(4))
        for i in (0, 1, 2, 3, 5, 6, 7):
            assert got.get(i) == (i % 3, payloads[i]), (case["offset"], i, got.get(i))
        assert case["push_ok"], case


def test_a_damaged_record_is_never_returned_altered(cases: dict[str, Any]) -> None:
    """A torn or corrupt record is either refused (get() gives None: its checksum fails) or
    returned exactly as it was pushed, never with another channel, length or payload."""
    payloads = cases["payloads"]
    altered = []
    for case in cases["torn"] + cases["corrupt"]:
        for i, item in recovered(case).items():
            if item is not None and item != (i % 3, payloads[i]):
                altered.append((case["case"], case["offset"], i, item))
    assert not altered, altered


def test_a_ring_from_before_the_checksum_carries_its_readings_over(
    cases: dict[str, Any],
) -> None:
    """A ring file in the format before records had a checksum (RQ1), waiting readings 2 to 6
    with reading 5 damaged, opens as a new ring holding readings 2, 3, 4 and 6 in order with
    its drop count; a half-made copy a power cut left behind is ignored and removed."""
    payloads = cases["payloads"]
    (case,) = cases["migrated"]
    assert case["seen"] == [[i % 3, payloads[i].hex()] for i in (2, 3, 4, 6)]
    assert case["magic"] == "RQ2" and case["size"] == 20 + 8 * 52
    assert case["dropped"] == 1
    assert case["reopened"] == [True] * 5  # the four carried over and one pushed after
    assert not case["new_left"]
