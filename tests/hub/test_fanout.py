"""The listeners of device status, health and replies (hub/fanout.py) hear every message but
readings, in order."""

from __future__ import annotations

import pytest

from hub.fanout import DeviceListeners, is_reading
from hub.topics import telemetry_topic


@pytest.mark.parametrize(
    ("topic", "reading"),
    [
        (telemetry_topic("dev-1", "temp"), True),
        ("d/dev-1/t/r", True),
        ("d/t/s", False),  # a device named t: its status
        ("d/t/t/x", True),
        ("d/dev-1/t", False),
        ("d/dev-1/s", False),
        ("d/dev-1/m", False),
        ("d/dev-1/r", False),
        ("d/dev-1/c", False),
        ("homeassistant/status", False),
        ("$hub/events/client/hub/info", False),
        ("x/dev-1/t/temp", False),
        ("d/", False),
    ],
)
def test_readings_are_told_apart_by_the_third_level(topic: str, reading: bool) -> None:
    """A topic is a reading exactly when it starts with the device prefix and its third level
    is t."""
    assert is_reading(topic) is reading


def test_every_message_but_readings_reaches_each_listener_in_order() -> None:
    """Status, health, replies and other topics reach both listeners, first added first; a
    reading reaches neither."""
    heard: list[tuple[str, str, bytes]] = []
    listeners = DeviceListeners()
    listeners.add(lambda topic, payload: heard.append(("a", topic, payload)))
    listeners.add(lambda topic, payload: heard.append(("b", topic, payload)))
    listeners("d/dev-1/t/temp", b"1,0,1.0")
    listeners("d/dev-1/s", b"online")
    listeners("homeassistant/status", b"online")
    assert heard == [
        ("a", "d/dev-1/s", b"online"),
        ("b", "d/dev-1/s", b"online"),
        ("a", "homeassistant/status", b"online"),
        ("b", "homeassistant/status", b"online"),
    ]
