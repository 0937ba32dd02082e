"""The fleet view's copy of the registry (hub/web/fleet_api.py): read as one digest, it follows
every change of who is registered, enabled or TLS-only, and a last-seen write parses nothing."""

from __future__ import annotations

from pathlib import Path

from hub.registry import Registry
from hub.web.fleet_api import FleetApi, Registered, parse_digest


class _States:
    """What FleetApi needs of hub.devicestate.DeviceStates here: no live state."""

    def __init__(self) -> None:
        self.states: dict[str, dict[str, object]] = {}

    def forget(self, device: str) -> None:
        pass


def test_the_digest_names_each_device_its_flag_and_policy(tmp_path: Path) -> None:
    """access_digest() lists every device in id order; parse_digest() reads it back, and an
    empty registry is an empty map."""
    registry = Registry(tmp_path)
    try:
        assert registry.access_digest() == "" and parse_digest("") == {}
        registry.add("b-2", allow_insecure=True)
        registry.add("a-1")
        registry.set_enabled("a-1", False)
        assert parse_digest(registry.access_digest()) == {
            "a-1": Registered(False, "tls-required"),
            "b-2": Registered(True, "allow-insecure"),
        }
    finally:
        registry.close()


def test_the_fleet_follows_changes_and_skips_last_seen_writes(tmp_path: Path) -> None:
    """Another connection's add, disable, TLS change and removal each show in the fleet's
    copy at the next read; a last-seen write moves data_version but keeps the same map."""
    writer, reader = Registry(tmp_path), Registry(tmp_path)
    fleet = FleetApi(reader, None, _States(), dict)  # type: ignore[arg-type]
    try:
        writer.add("dev-1")
        fleet._read_registry()
        first = fleet._registered
        assert first == {"dev-1": Registered(True, "tls-required")}
        writer.touch({"dev-1": 1234.5})
        fleet._read_registry()
        assert fleet._registered is first  # same digest: not parsed again
        writer.add("dev-2", allow_insecure=True)
        writer.set_enabled("dev-1", False)
        fleet._read_registry()
        assert fleet._registered == {
            "dev-1": Registered(False, "tls-required"),
            "dev-2": Registered(True, "allow-insecure"),
        }
        writer.set_tls_policy("dev-2", False)
        writer.remove("dev-1")
        fleet._read_registry()
        assert fleet._registered == {"dev-2": Registered(True, "tls-required")}
    finally:
        writer.close()
        reader.close()
