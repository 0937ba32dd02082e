"""The device state table without the hub: readings as ingest hands them over, the broker's
status messages, and the observers each kind of change reaches."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hub.devicestate import MAX_SENSORS, DeviceStates
from hub.recorder import Recorder
from hub.store import SqliteStore


def test_readings_from_ingest_update_the_state_and_reach_only_reading_observers(
    tmp_path: Path,
) -> None:
    """A reading sets the sensor's value, boot and last seen and is noted for the recorder;
    reading observers hear of it, status observers do not; past MAX_SENSORS a new sensor only
    counts as seen; telemetry through the broker's listener changes nothing (ingest feeds it)."""
    store = SqliteStore(tmp_path)
    recorder = Recorder(store)
    states = DeviceStates(recorder)
    changes: list[tuple[str, str]] = []
    readings: list[tuple[str, str, float]] = []
    states.observers.append(lambda device, what, state: changes.append((device, what)))

    def on_reading(device: str, sensor: str, state: dict[str, Any]) -> None:
        readings.append((device, sensor, state["sensors"][sensor]["value"]))

    states.reading_observers.append(on_reading)
    states.on_reading("d1", "temp", "ab12", 21.5, 1000.0)
    state = states.states["d1"]
    assert state["sensors"] == {"temp": {"value": 21.5, "at": 1000.0}}
    assert state["boot"] == "ab12" and state["last_seen"] == 1000.0
    assert readings == [("d1", "temp", 21.5)] and changes == []
    assert recorder.pending.states["d1"] is state
    for n in range(MAX_SENSORS):
        states.on_reading("d1", f"s{n}", "ab12", float(n), 1001.0)
    assert len(state["sensors"]) == MAX_SENSORS and f"s{MAX_SENSORS - 1}" not in state["sensors"]
    assert state["last_seen"] == 1001.0
    states.on_message("d1/t/temp", b"ab12,1,99.0")  # not a device topic
    states.on_message("d/d1/t/temp", b"ab12,1,99.0")  # readings come from ingest
    assert state["sensors"]["temp"]["value"] == 21.5
    states.on_message("d/d1/s", b"online")
    assert state["status"] == "online" and changes == [("d1", "status")]
    store.close()
