"""Home Assistant MQTT discovery: retained documents under ``<hass_prefix>/`` that make each
device's sensors, outputs and online state appear in Home Assistant by themselves.

From what a device reports about itself (its readings' sensors, its health's board, firmware
and optional units, kept by hub/devicestate.py) and the topic contract (hub/topics.py):

- ``sensor`` per sensor: the reading topic, a ``value_template`` that takes the value out of
  ``<boot>,<seq>,<value>``, the unit (and a device class that fits it) when the device names it;
- ``switch`` per output of the device's board (boards/<board>.json, the file its firmware was
  built from; the firmware reports no list of its own): the command topic with the firmware's
  ``out`` command as payloads, the reply topic as state;
- ``binary_sensor`` (connectivity) on the status topic; every entity's availability follows
  the status topic too (``asleep`` counts as available: its last readings stand);
- a ``device`` block: identifiers, the board as model, the firmware as sw_version.

Documents are republished when Home Assistant says ``online`` on ``<prefix>/status``, updated
when a device's description changes, and removed (an empty retained message on each) when a
device is removed from the registry. Home Assistant logs in with a token of ``scope(prefix)``:
what it needs and nothing more (`hub hass token`).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import re
import time
from pathlib import Path
from typing import Any

from hub import __version__
from hub.broker import Broker
from hub.security import MAX_TTL_S, TokenClaims, create_token, load_key
from hub.topics import (
    COMMAND_FILTER,
    REPLY_FILTER,
    SENSOR_RE,
    STATUS_FILTER,
    STATUS_OFFLINE,
    STATUS_ONLINE,
    TELEMETRY_FILTER,
    command_topic,
    reply_topic,
    status_topic,
    telemetry_topic,
)

log = logging.getLogger(__name__)

BOARDS_DIR = Path(__file__).resolve().parents[1] / "boards"
OUTPUT_RE = re.compile(r"^[a-z0-9][a-z0-9_]{0,15}\Z")
MAX_OUTPUTS = 16
REPUBLISH_SLICE = 200  # documents published before the event loop gets a turn
ORIGIN = {"name": "mpy-iot-hub", "sw_version": __version__}
# A unit a device names -> the Home Assistant device class it fits (others: none).
DEVICE_CLASSES = {
    "°C": "temperature",
    "°F": "temperature",
    "K": "temperature",
    "hPa": "pressure",
    "Pa": "pressure",
    "kPa": "pressure",
    "mbar": "pressure",
    "lx": "illuminance",
    "V": "voltage",
    "mV": "voltage",
    "A": "current",
    "W": "power",
    "ppm": "carbon_dioxide",
}
_OFF, _ON = STATUS_OFFLINE.decode(), STATUS_ONLINE.decode()
AVAILABLE = f"{{{{ '{_OFF}' if value == '{_OFF}' else '{_ON}' }}}}"  # asleep: available


def scope(prefix: str, expires: float) -> TokenClaims:
    """Home Assistant's token: read the discovery documents, readings, status and replies;
    send commands and its own birth message; nothing else."""
    return TokenClaims(
        subscribe=(f"{prefix}/#", TELEMETRY_FILTER, STATUS_FILTER, REPLY_FILTER),
        publish=(COMMAND_FILTER, f"{prefix}/status"),
        expires=expires,
    )


def load_boards(folder: Path = BOARDS_DIR) -> dict[str, list[str]]:
    """Each board file's outputs, by board name (blocking: read once at start)."""
    boards: dict[str, list[str]] = {}
    for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        try:
            board = json.loads(path.read_text())
            outputs = [o for o in board.get("outputs", []) if isinstance(o, str)]
            boards[str(board["name"])] = [o for o in outputs if OUTPUT_RE.match(o)][:MAX_OUTPUTS]
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            log.warning("board file %s not used for Home Assistant: %s", path, exc)
    return boards


def _device_block(device: str, state: dict[str, Any]) -> dict[str, Any]:
    block: dict[str, Any] = {
        "identifiers": [f"mpyhub_{device}"],
        "name": device,
        "manufacturer": "MicroPython IoT hub",
    }
    if state.get("board"):
        block["model"] = str(state["board"])
    if state.get("fw"):
        block["sw_version"] = str(state["fw"])
    return block


def _availability(device: str) -> dict[str, Any]:
    return {
        "availability_topic": status_topic(device),
        "availability_template": AVAILABLE,
        "payload_available": _ON,
        "payload_not_available": _OFF,
    }


def documents(
    prefix: str, device: str, state: dict[str, Any], outputs: list[str]
) -> dict[str, dict[str, Any]]:
    """Every discovery document of one device, by config topic."""
    block = _device_block(device, state)
    health = state.get("health") or {}
    units = health.get("units") or {}
    docs: dict[str, dict[str, Any]] = {}
    for sensor in sorted(state.get("sensors") or {}):
        if not SENSOR_RE.match(sensor):
            continue
        doc: dict[str, Any] = {
            "name": sensor,
            "unique_id": f"mpyhub_{device}_{sensor}",
            "state_topic": telemetry_topic(device, sensor),
            "value_template": "{{ value.split(',')[2] | float }}",
            "state_class": "measurement",
            **_availability(device),
            "device": block,
            "origin": ORIGIN,
        }
        unit = units.get(sensor)
        if isinstance(unit, str) and unit:
            doc["unit_of_measurement"] = unit
            kind = DEVICE_CLASSES.get(unit)
            if unit == "%" and sensor.startswith("hum"):
                kind = "humidity"
            if kind is not None:
                doc["device_class"] = kind
        docs[f"{prefix}/sensor/{device}/{sensor}/config"] = doc
    for name in outputs:
        docs[f"{prefix}/switch/{device}/{name}/config"] = {
            "name": name,
            "unique_id": f"mpyhub_{device}_out_{name}",
            "command_topic": command_topic(device),
            # The firmware's "out" command (firmware/node/commands.py); id 0 is never one of
            # the hub's own commands (they count from 1), so the hub leaves its reply alone.
            "payload_on": json.dumps({"id": 0, "op": "out", "name": name, "v": 1}),
            "payload_off": json.dumps({"id": 0, "op": "out", "name": name, "v": 0}),
            "state_topic": reply_topic(device),
            "value_template": "{% if value_json.name is defined and value_json.name == '"
            + name
            + "' and value_json.ok %}{{ value_json.v }}{% endif %}",
            "state_on": "1",
            "state_off": "0",
            "optimistic": False,
            "qos": 1,
            "retain": False,
            **_availability(device),
            "device": block,
            "origin": ORIGIN,
        }
    docs[f"{prefix}/binary_sensor/{device}/online/config"] = {
        "name": "online",
        "unique_id": f"mpyhub_{device}_online",
        "state_topic": status_topic(device),
        "device_class": "connectivity",
        "value_template": "{{ 'ON' if value == 'online' else 'OFF' }}",
        "payload_on": "ON",
        "payload_off": "OFF",
        "device": block,
        "origin": ORIGIN,
    }
    return docs


class HassDiscovery:
    """Publishes, updates and removes the documents as devices describe themselves."""

    def __init__(self, broker: Broker, prefix: str, boards: dict[str, list[str]]) -> None:
        self.broker = broker
        self.prefix = prefix
        self.boards = boards
        self.status_topic = f"{prefix}/status"
        self.published: dict[str, dict[str, bytes]] = {}  # device -> config topic -> payload
        self._described: dict[str, tuple[Any, ...]] = {}  # device -> what its documents use
        self._states: dict[str, dict[str, Any]] = {}
        self._task: asyncio.Task[None] | None = None

    def _signature(self, state: dict[str, Any]) -> tuple[Any, ...]:
        units = (state.get("health") or {}).get("units") or {}
        return (
            state.get("board"),
            state.get("fw"),
            tuple(sorted(units.items())),
            tuple(sorted(state.get("sensors") or {})),
        )

    def describe(self, device: str, state: dict[str, Any]) -> None:
        """Publishes what changed in a device's documents (and clears those it no longer
        has)."""
        signature = self._signature(state)
        if self._described.get(device) == signature:
            return
        self._described[device] = signature
        self._states[device] = state
        outputs = self.boards.get(str(state.get("board")), [])
        made = documents(self.prefix, device, state, outputs)
        docs = {t: json.dumps(doc, separators=(",", ":")).encode() for t, doc in made.items()}
        old = self.published.get(device, {})
        for topic, payload in docs.items():
            if old.get(topic) != payload:
                self.broker.publish(topic, payload, qos=1, retain=True)
        for topic in old.keys() - docs.keys():
            self.broker.publish(topic, b"", qos=1, retain=True)
        self.published[device] = docs

    def remove(self, device: str) -> None:
        for topic in self.published.pop(device, {}):
            self.broker.publish(topic, b"", qos=1, retain=True)
        self._described.pop(device, None)
        self._states.pop(device, None)

    # --- the device table's observer and the broker's listener --------------------------------
    def on_state(self, device: str, what: str, state: dict[str, Any]) -> None:
        """Status and health changes: a new description may change the documents."""
        if what == "health":
            self.describe(device, state)

    def on_reading(self, device: str, sensor: str, state: dict[str, Any]) -> None:
        """Every reading (the device table's reading observers): a sensor not described yet
        gets its document."""
        known = self._described.get(device)
        if known is not None and sensor in known[3]:
            return  # a reading of a sensor already described: the common case
        self.describe(device, state)

    def on_message(self, topic: str, payload: bytes) -> None:
        if topic == self.status_topic and payload == STATUS_ONLINE:
            if self._task is None or self._task.done():
                self._task = asyncio.get_running_loop().create_task(self.republish())
        elif not payload and topic.startswith("d/") and topic.endswith("/s"):
            device = topic[2:-2]
            if device in self.published:  # a removed device's status is cleared
                self.remove(device)
        return None

    async def republish(self) -> None:
        """Every document again (Home Assistant started): a slice at a time."""
        count = 0
        started = time.monotonic()
        for docs in list(self.published.values()):
            for topic, payload in docs.items():
                self.broker.publish(topic, payload, qos=1, retain=True)
                count += 1
                if count % REPUBLISH_SLICE == 0:
                    await asyncio.sleep(0)
        log.info(
            "Home Assistant is online: %d discovery documents published again in %.2f s",
            count,
            time.monotonic() - started,
        )

    def start(self, states: dict[str, dict[str, Any]]) -> None:
        """The documents of every device the hub knows (their retained copies may be gone)."""
        for device, state in states.items():
            self.describe(device, state)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)


# --- `hub hass token` -----------------------------------------------------------------------
def add_arguments(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="action", required=True)
    token = actions.add_parser("token", help="a token for Home Assistant's MQTT login")
    token.add_argument(
        "--prefix", default="homeassistant", help="Home Assistant's discovery prefix"
    )
    token.add_argument(
        "--ttl",
        type=int,
        default=MAX_TTL_S,
        metavar="SECONDS",
        help=f"how long it is valid (at most {MAX_TTL_S}, 30 days)",
    )
    token.add_argument("--data-dir", type=Path, default=Path("data"), help="hub state folder")


def run(args: argparse.Namespace) -> None:
    from hub.config import ConfigError, HubConfig

    if not 1 <= args.ttl <= MAX_TTL_S:
        raise ConfigError(f"--ttl must be from 1 to {MAX_TTL_S} seconds")
    HubConfig(hass_prefix=args.prefix)  # the same check as the setting
    claims = scope(args.prefix, time.time() + args.ttl)
    print(create_token(load_key(args.data_dir, create=False), claims))
