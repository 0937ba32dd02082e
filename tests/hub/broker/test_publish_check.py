"""The hub's publish check (hub/devicepolicy.py) without sockets: sensor names and quotas,
status and health payloads, what it leaves alone."""

import json

import pytest

from hub.broker import Refusal
from hub.config import ConfigError
from hub.devicepolicy import MAX_HEALTH, DevicePolicy
from tests.support.devices import HEALTH


def test_sensors_per_device_are_counted_and_bounded() -> None:
    """A device gets max_sensors sensors; a new one after that is a quota_exceeded refusal,
    the known ones keep passing, and another device has its own count."""
    check = DevicePolicy(max_sensors=2)
    assert check(None, "d/a/t/temp", b"1,0,1.0", False) is None
    assert check(None, "d/a/t/hum", b"1,1,1.0", False) is None
    refusal = check(None, "d/a/t/light", b"1,2,1.0", False)
    assert refusal is not None
    assert (refusal.event, refusal.quota, refusal.device) == ("quota_exceeded", "sensors", "a")
    assert check(None, "d/a/t/temp", b"1,3,1.0", False) is None
    assert check(None, "d/b/t/light", b"1,0,1.0", False) is None


def test_the_further_check_answers_for_what_the_policy_allows() -> None:
    """``then`` is asked about what the policy allows (and its refusal stands), not about what
    the policy refuses, nor about a telemetry topic already allowed once."""
    asked: list[str] = []

    def then(identity: object, topic: str, payload: bytes, retain: bool) -> Refusal | None:
        asked.append(topic)
        return Refusal("filter_violation", "no", "a") if topic.endswith("/c") else None

    check = DevicePolicy(max_sensors=1, then=then)
    refusal = check(None, "d/a/c", b"{}", False)
    assert refusal is not None and refusal.event == "filter_violation"
    assert check(None, "d/a/t/temp", b"1,0,1.0", False) is None
    assert check(None, "d/a/t/temp", b"1,1,1.0", False) is None  # remembered: not asked
    assert check(None, "d/a/t/hum", b"1,2,1.0", False) is not None  # over the quota
    assert check(None, "d/a/s", b"online", True) is None
    assert asked == ["d/a/c", "d/a/t/temp", "d/a/s"]


@pytest.mark.parametrize(
    "topic", ["d/a/t/Temp", "d/a/t/", "d/a/t/x-y", "d/a/t/a/b", "d/a/t/" + "x" * 17, "d/a/t"]
)
def test_bad_sensor_names_are_malformed(topic: str) -> None:
    """A telemetry topic whose sensor name breaks the contract is a malformed refusal."""
    refusal = DevicePolicy()(None, topic, b"1,0,1.0", False)
    assert refusal is not None and (refusal.event, refusal.device) == ("malformed", "a")


def test_shorter_sensor_names_can_be_required() -> None:
    """max_sensor_name lowers the contract's 16 characters; above 16 is a config error."""
    assert DevicePolicy(max_sensor_name=4)(None, "d/a/t/abcde", b"1,0,1", False) is not None
    with pytest.raises(ConfigError, match="max_sensor_name"):
        DevicePolicy(max_sensor_name=17)


@pytest.mark.parametrize("payload", [b"online", b"offline", b"asleep", b""])
def test_valid_status_passes(payload: bytes) -> None:
    """The three statuses, and an empty payload that clears the retained one, pass."""
    assert DevicePolicy()(None, "d/a/s", payload, True) is None


@pytest.mark.parametrize("payload", [b"ONLINE", b"<b>online</b>", b"online ", b"\xff"])
def test_other_status_is_malformed(payload: bytes) -> None:
    """Anything else on d/<id>/s is malformed."""
    refusal = DevicePolicy()(None, "d/a/s", payload, True)
    assert refusal is not None and refusal.event == "malformed"


def test_health_is_checked_against_the_contract() -> None:
    """A health message parse_meta accepts passes; markup in a number, a missing field,
    non-JSON and an oversized one are malformed."""
    check = DevicePolicy()
    assert check(None, "d/a/m", json.dumps(HEALTH).encode(), True) is None
    for bad in (
        json.dumps(dict(HEALTH, heap="<img src=x onerror=alert(1)>")).encode(),
        json.dumps({k: v for k, v in HEALTH.items() if k != "up"}).encode(),
        b"<html>",
        json.dumps(dict(HEALTH, fw="x" * MAX_HEALTH)).encode(),
    ):
        refusal = check(None, "d/a/m", bad, True)
        assert refusal is not None and refusal.event == "malformed", bad[:40]


@pytest.mark.parametrize("topic", ["d/a/r", "d/a/c", "x/y", "d/Bad/s", "$hub/events/x", "d"])
def test_other_topics_are_left_to_the_topic_rules(topic: str) -> None:
    """Replies, commands, non-device topics and topics that are not a device's pass."""
    assert DevicePolicy()(None, topic, b"<anything>", False) is None
