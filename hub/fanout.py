"""The listeners of device status, health and replies, behind one broker listener that skips
readings.

The broker hands every routed message to each of its listeners. Most of a fleet's messages are
readings (``d/<id>/t/<sensor>``), which ingest and the metrics take; the device state, commands,
app updates and Home Assistant discovery listen for other topics and return at once for a
reading, yet each call cost the reading its share (BENCHMARKS.md, session 6: a tenth of the
loop's time per reading went to them). Here a reading costs two string tests.
"""

from __future__ import annotations

from collections.abc import Callable

from hub.topics import PREFIX

Listener = Callable[[str, bytes], object]  # what it returns is ignored (it stores nothing)
_AFTER_ID = len(PREFIX)


def is_reading(topic: str) -> bool:
    """Whether the topic is a device's telemetry (``d/<id>/t/...``, hub/topics.py): its third
    level is ``t``. Whether it is a valid one is ingest's and the publish check's business."""
    if not topic.startswith(PREFIX):
        return False
    end = topic.find("/", _AFTER_ID)
    return end > 0 and topic.startswith("/t/", end)


class DeviceListeners:
    """One broker message listener calling each added listener, in order, for every message
    that is not a reading."""

    def __init__(self) -> None:
        self.listeners: list[Listener] = []

    def add(self, listener: Listener) -> None:
        self.listeners.append(listener)

    def __call__(self, topic: str, payload: bytes) -> None:
        if is_reading(topic):
            return
        for listener in self.listeners:
            listener(topic, payload)
