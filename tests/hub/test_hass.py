"""Home Assistant MQTT discovery against the real hub and a real unix-port device: documents
checked against the keys and types Home Assistant documents for each component; the republish
on homeassistant/status; an update when a device's description changes; removal; a switch
command that reaches the device and changes its output; the token's scope."""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path
from typing import Any

from hub.hass import documents, scope
from hub.security import token_identity
from tests.routes.helpers import write_config
from tests.support.devices import running_device
from tests.support.firmware import FAST
from tests.support.hubproc import HubProcess, hub_cli, provision, start_hub
from tests.support.mqtt import RawClient, publish_packet
from tests.support.waits import eventually_async

PREFIX = "homeassistant"
# The keys Home Assistant's MQTT integration documents for each component (configuration
# variables of sensor.mqtt, switch.mqtt and binary_sensor.mqtt, and the shared ones) with
# their types; a discovery document with another key or type is refused by Home Assistant.
COMMON = {
    "name": str,
    "unique_id": str,
    "device": dict,
    "origin": dict,
    "availability_topic": str,
    "availability_template": str,
    "payload_available": str,
    "payload_not_available": str,
    "qos": int,
    "icon": str,
    "entity_category": str,
    "enabled_by_default": bool,
}
SCHEMA: dict[str, dict[str, Any]] = {
    "sensor": {
        **COMMON,
        "state_topic": str,
        "value_template": str,
        "unit_of_measurement": str,
        "device_class": str,
        "state_class": str,
        "expire_after": int,
        "force_update": bool,
        "suggested_display_precision": int,
    },
    "switch": {
        **COMMON,
        "command_topic": str,
        "payload_on": str,
        "payload_off": str,
        "state_topic": str,
        "state_on": str,
        "state_off": str,
        "value_template": str,
        "optimistic": bool,
        "retain": bool,
        "device_class": str,
    },
    "binary_sensor": {
        **COMMON,
        "state_topic": str,
        "payload_on": str,
        "payload_off": str,
        "value_template": str,
        "device_class": str,
        "expire_after": int,
        "off_delay": int,
        "force_update": bool,
    },
}
REQUIRED = {
    "sensor": {"state_topic"},
    "switch": {"command_topic"},
    "binary_sensor": {"state_topic"},
}
DEVICE_KEYS = {
    "identifiers": list,
    "name": str,
    "manufacturer": str,
    "model": str,
    "sw_version": str,
    "hw_version": str,
    "connections": list,
    "configuration_url": str,
    "suggested_area": str,
    "via_device": str,
}
STATE_CLASSES = {"measurement", "total", "total_increasing"}
TOPIC_RE = re.compile(
    rf"^{PREFIX}/(sensor|switch|binary_sensor)/([a-zA-Z0-9_-]+)/([a-zA-Z0-9_-]+)/config$"
)


def check_document(topic: str, doc: dict[str, Any]) -> str:
    """Checks a discovery document against its component's keys and types; its component."""
    match = TOPIC_RE.match(topic)
    assert match, topic
    component = match[1]
    schema = SCHEMA[component]
    assert REQUIRED[component] <= set(doc), (topic, doc)
    for key, value in doc.items():
        assert key in schema, f"{topic}: {key} is not a {component} option"
        assert isinstance(value, schema[key]), f"{topic}: {key} is not {schema[key].__name__}"
    for key, value in doc["device"].items():
        assert isinstance(value, DEVICE_KEYS[key]), f"{topic}: device.{key}"
    assert doc["device"]["identifiers"] and doc["unique_id"]
    if "state_class" in doc:
        assert doc["state_class"] in STATE_CLASSES
    return component


def hass_hub(tmp_path: Path) -> HubProcess:
    config = write_config(tmp_path / "hub.toml", [], hass_discovery=True)
    return start_hub(tmp_path / "data", "--config", str(config), secure=True)


async def home_assistant(hub: HubProcess) -> tuple[RawClient, list[Any], Any]:
    """A client logged in as Home Assistant would (its token) that keeps what it receives."""
    made = hub_cli(hub.data_dir, "hass", "token")
    assert made.returncode == 0, made.stderr
    ha = await RawClient.tcp(hub.host, hub.mqtt_port)
    _, code = await ha.connect("home-assistant", username="token", password=made.stdout.strip())
    assert code == 0
    granted = await ha.subscribe([(f"{PREFIX}/#", 1), ("d/+/r", 1), ("$hub/events/#", 0)])
    assert granted == [1, 1, 0x80]  # hub events are not Home Assistant's
    seen: list[Any] = []

    async def read() -> None:
        while True:
            seen.append(await ha.next_message(timeout=3600))

    return ha, seen, asyncio.get_running_loop().create_task(read())


def latest(seen: list[Any]) -> dict[str, bytes]:
    docs: dict[str, bytes] = {}
    for message in seen:
        if message.topic.startswith(PREFIX + "/") and message.topic.endswith("/config"):
            docs[message.topic] = message.payload
    return docs


def test_a_device_appears_its_switch_works_and_it_is_removed(tmp_path: Path) -> None:
    """A unix-port device gets a sensor, a switch for its board's output and an online
    binary sensor, each document of Home Assistant's keys and types; switching the output
    through the document's command payloads changes it on the device (read back from the
    pin); Home Assistant's birth message brings every document again; removing the device
    clears them."""
    hub = hass_hub(tmp_path)
    creds = provision(hub, "ha-1")

    async def run() -> None:
        ha, seen, task = await home_assistant(hub)
        with running_device(
            tmp_path, hub, "ha-1", username="ha-1", password=creds["password"], **FAST
        ):

            def described() -> dict[str, bytes]:
                docs = latest(seen)
                assert {
                    f"{PREFIX}/sensor/ha-1/temp/config",
                    f"{PREFIX}/switch/ha-1/led/config",
                    f"{PREFIX}/binary_sensor/ha-1/online/config",
                } <= set(docs), docs
                assert (
                    json.loads(docs[f"{PREFIX}/sensor/ha-1/temp/config"])["device"].get(
                        "sw_version"
                    )
                    == "0.1.0"
                )
                return docs

            docs = await eventually_async(described, 30, "the device's documents")
            parsed = {topic: json.loads(payload) for topic, payload in docs.items()}
            assert {check_document(t, d) for t, d in parsed.items()} == set(SCHEMA)
            sensor = parsed[f"{PREFIX}/sensor/ha-1/temp/config"]
            assert sensor["state_topic"] == "d/ha-1/t/temp"
            assert sensor["device"]["model"] == "unix-sim"
            assert sensor["availability_topic"] == "d/ha-1/s"
            switch = parsed[f"{PREFIX}/switch/ha-1/led/config"]
            for payload, state in (("payload_on", "state_on"), ("payload_off", "state_off")):
                before = len(seen)
                await ha.send(publish_packet(switch["command_topic"], switch[payload].encode()))

                def answered(before: int = before) -> dict[str, Any]:
                    replies = [
                        json.loads(m.payload)
                        for m in seen[before:]
                        if m.topic == switch["state_topic"]
                    ]
                    assert replies, "no reply yet"
                    return replies[-1]

                reply = await eventually_async(answered, 10, "the device's reply")
                # The value_template: the output's name, ok, and v read back from the pin.
                assert reply["name"] == "led" and reply["ok"] is True
                assert str(reply["v"]) == switch[state]
            fresh = len([m for m in seen if m.topic.startswith(PREFIX) and not m.retain])
            await ha.send(publish_packet(f"{PREFIX}/status", b"online"))
            await eventually_async(
                lambda: (
                    len([m for m in seen if m.topic.startswith(PREFIX) and not m.retain])
                    >= fresh + 3
                ),
                10,
                "the documents published again",
            )
        removed = hub_cli(hub.data_dir, "device", "remove", "ha-1")
        assert removed.returncode == 0, removed.stderr
        await eventually_async(
            lambda: all(p == b"" for p in latest(seen).values()), 10, "every document cleared"
        )
        task.cancel()

    try:
        asyncio.run(run())
    finally:
        hub.stop()


def health(fw: str, units: dict[str, str]) -> bytes:
    meta = {
        "fw": fw,
        "board": "esp32-devkitc",
        "reset": "power-on",
        "up": 1,
        "heap": 1000,
        "rssi": None,
        "reconnects": 0,
        "queue": 0,
        "dropped": 0,
        "boot": "ab",
        "seq": 0,
        "error": None,
        "units": units,
    }
    return json.dumps(meta).encode()


def test_documents_follow_a_description_change(tmp_path: Path) -> None:
    """A device that reports new firmware, a unit and a new sensor gets its documents
    updated (sw_version, unit and device class, a new sensor); its board's outputs (relay,
    led from boards/esp32-devkitc.json) become switches."""
    hub = hass_hub(tmp_path)
    creds = provision(hub, "ha-2")

    async def run() -> None:
        _, seen, task = await home_assistant(hub)
        dev = await RawClient.tcp(hub.host, hub.mqtt_port)
        _, code = await dev.connect("ha-2", username="ha-2", password=creds["password"])
        assert code == 0
        await dev.publish("d/ha-2/m", health("1.0", {}), qos=1, retain=True)
        await dev.publish("d/ha-2/t/temp", b"ab,1,21.5", qos=1, pid=2)
        sensor_topic = f"{PREFIX}/sensor/ha-2/temp/config"

        def sw(version: str) -> dict[str, Any]:
            doc = json.loads(latest(seen).get(sensor_topic) or b"{}")
            assert doc.get("device", {}).get("sw_version") == version, doc
            return doc

        first = await eventually_async(lambda: sw("1.0"), 10, "the first documents")
        assert "unit_of_measurement" not in first
        switches = {t for t in latest(seen) if "/switch/ha-2/" in t}
        assert switches == {
            f"{PREFIX}/switch/ha-2/relay/config",
            f"{PREFIX}/switch/ha-2/led/config",
        }
        await dev.publish(
            "d/ha-2/m", health("1.1", {"temp": "°C", "hum": "%"}), qos=1, pid=3, retain=True
        )
        await dev.publish("d/ha-2/t/hum", b"ab,2,40.0", qos=1, pid=4)
        second = await eventually_async(lambda: sw("1.1"), 10, "the updated documents")
        assert second["unit_of_measurement"] == "°C" and second["device_class"] == "temperature"

        def humidity() -> dict[str, Any]:
            doc = json.loads(latest(seen).get(f"{PREFIX}/sensor/ha-2/hum/config") or b"{}")
            assert doc.get("device_class") == "humidity", doc
            return doc

        check_document(
            f"{PREFIX}/sensor/ha-2/hum/config",
            await eventually_async(humidity, 10, "the new sensor"),
        )
        task.cancel()

    try:
        asyncio.run(run())
    finally:
        hub.stop()


def test_the_token_scope_is_what_home_assistant_needs() -> None:
    """Home Assistant's token reads discovery, readings, status and replies, sends commands
    and its birth message, and nothing else: no hub events, no discovery documents of its
    own, no device topics but commands."""
    who = token_identity(scope(PREFIX, 2e9))
    for topic_filter in (f"{PREFIX}/#", "d/+/t/+", "d/+/s", "d/+/r", "d/x/t/temp"):
        assert who.may_subscribe(topic_filter), topic_filter
    for topic_filter in ("$hub/events/#", "#", "d/#", "d/+/c", "d/+/m"):
        assert not who.may_subscribe(topic_filter), topic_filter
    assert who.may_publish("d/kitchen/c") and who.may_publish(f"{PREFIX}/status")
    for topic in (f"{PREFIX}/sensor/x/y/config", "d/kitchen/t/temp", "d/kitchen/s", "other"):
        assert not who.may_publish(topic), topic


def test_hostile_descriptions_stay_data() -> None:
    """What a device says about itself (units, board, firmware, sensor names) ends up as JSON
    strings in the documents, never in a template or a topic: a hostile unit or board name
    changes no template, a bad sensor name makes no document, and an unknown board has no
    switches."""
    state = {
        "board": '../../etc/passwd"}',
        "fw": "{{ 7*7 }}",
        "sensors": {"temp": {}, "Bad/Name": {}, "a" * 40: {}},
        "health": {"units": {"temp": "{% raw %}°C\"'"}},
    }
    docs = documents(PREFIX, "dev-x", state, [])
    assert set(docs) == {
        f"{PREFIX}/sensor/dev-x/temp/config",
        f"{PREFIX}/binary_sensor/dev-x/online/config",
    }
    sensor = docs[f"{PREFIX}/sensor/dev-x/temp/config"]
    check_document(f"{PREFIX}/sensor/dev-x/temp/config", json.loads(json.dumps(sensor)))
    assert sensor["value_template"] == "{{ value.split(',')[2] | float }}"
    assert sensor["unit_of_measurement"] == "{% raw %}°C\"'" and "device_class" not in sensor
    assert sensor["device"]["model"] == '../../etc/passwd"}'
