"""Helpers for the console's browser tests: accounts made with the hub's CLI, logging in through
the login page, and an MQTT "device" (paho, with a registered device's credentials) that
publishes what a test tells it to and answers commands."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
from playwright.sync_api import Page, expect

from hub.topics import command_topic, reply_topic
from tests.support.hubproc import HubProcess, hub_cli, scaled

# Runs in every page before its own scripts: a trap that markup from a device would call if it
# ever ran, and a record of every Content-Security-Policy violation.
TRAP_SCRIPT = """
window.__pwned = [];
window.__csp = [];
document.addEventListener("securitypolicyviolation", (e) => {
  window.__csp.push({directive: e.violatedDirective, blocked: e.blockedURI,
                     source: e.sourceFile, line: e.lineNumber, sample: e.sample});
});
"""


def ms(seconds: float) -> float:
    """A Playwright timeout (milliseconds) scaled by TIMEOUT_FACTOR."""
    return scaled(seconds) * 1000


def add_user(hub: HubProcess, name: str, role: str, password: str | None = None) -> str:
    """Creates an account with `hub user add NAME --role R --password-stdin`; returns its
    password."""
    password = password or f"pw-{name}-correct-horse-battery"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "hub",
            "user",
            "add",
            name,
            "--role",
            role,
            "--password-stdin",
            "--data-dir",
            str(hub.data_dir),
        ],
        input=password + "\n",
        capture_output=True,
        text=True,
        timeout=scaled(30),
    )
    assert result.returncode == 0, result.stderr
    return password


def login(page: Page, base_url: str, name: str, password: str, next_path: str = "/") -> None:
    """Logs in through the login page and waits for the page it sends us on to."""
    page.goto(f"{base_url}{next_path}")
    expect(page).to_have_url(re.compile(r"/login\?next="), timeout=ms(10))
    page.fill("#name", name)
    page.fill("#password", password)
    page.click("#login")
    expect(page).to_have_url(f"{base_url}{next_path}", timeout=ms(10))
    expect(page.locator("#who")).to_contain_text(name, timeout=ms(10))


def logged_in(page: Page, hub: HubProcess, role: str, next_path: str = "/") -> str:
    """Creates an account with the role, logs in as it and returns its name."""
    name = f"{role}-user"
    login(page, hub.http_url, name, add_user(hub, name, role), next_path)
    return name


_ADMIN_TOKENS: dict[Path, str] = {}


def hub_api(hub: HubProcess, method: str, path: str, body: object = None) -> tuple[int, Any]:
    """Calls the hub's HTTP API with an admin token (`hub token create --admin`)."""
    if hub.data_dir not in _ADMIN_TOKENS:
        result = hub_cli(hub.data_dir, "token", "create", "--admin", "--ttl", "3600")
        assert result.returncode == 0, result.stderr
        _ADMIN_TOKENS[hub.data_dir] = result.stdout.strip().splitlines()[-1]
    request = urllib.request.Request(
        hub.http_url + path,
        method=method,
        data=None if body is None else json.dumps(body).encode(),
        headers={
            "Authorization": f"Bearer {_ADMIN_TOKENS[hub.data_dir]}",
            "Content-Type": "application/json",
        },
    )
    try:
        with urllib.request.urlopen(request, timeout=scaled(10)) as response:
            data = response.read()
            return response.status, json.loads(data) if data else None
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"null")


def register(hub: HubProcess, device_id: str) -> dict[str, str]:
    """Registers a device (allowed on plain MQTT) through the running hub's admin API and
    returns its credentials."""
    status, creds = hub_api(hub, "POST", "/api/devices", {"id": device_id, "allow_insecure": True})
    assert status == 201, creds
    return dict(creds)


def registry(hub: HubProcess) -> dict[str, dict[str, Any]]:
    """The hub's registered devices by id, as GET /api/devices lists them."""
    status, devices = hub_api(hub, "GET", "/api/devices")
    assert status == 200, devices
    return {d["id"]: d for d in devices if d["registered"]}


class MqttDevice:
    """A registered device spoken for by paho over TCP: it publishes what it is told and answers
    each command on its command topic with `answer(command)`, if given."""

    def __init__(
        self,
        hub: HubProcess,
        creds: dict[str, str],
        answer: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
    ) -> None:
        self.id = creds["id"]
        self.answer = answer
        self.client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=self.id)
        self.client.username_pw_set(creds["username"], creds["password"])
        self._connected = threading.Event()
        self._refused: list[object] = []
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        self.client.connect(hub.host, hub.mqtt_port, keepalive=30)
        self.client.loop_start()
        if not self._connected.wait(scaled(10)) or self._refused:
            self.close()
            raise AssertionError(f"device {self.id} could not connect: {self._refused}")

    def _on_connect(
        self, client: paho.Client, userdata: Any, flags: Any, reason: Any, properties: Any
    ) -> None:
        if reason.is_failure:
            self._refused.append(reason)
        else:
            client.subscribe(command_topic(self.id), qos=1)
        self._connected.set()

    def _on_message(self, client: paho.Client, userdata: Any, message: paho.MQTTMessage) -> None:
        if self.answer is None or message.topic != command_topic(self.id):
            return
        command = json.loads(message.payload)
        reply = {"id": command["id"], **self.answer(command)}
        client.publish(reply_topic(self.id), json.dumps(reply), qos=1)

    def publish(self, topic: str, payload: str | bytes, *, retain: bool = False) -> None:
        """Publishes at QoS 1 and waits for the PUBACK (paho resends after a reconnect)."""
        info = self.client.publish(topic, payload, qos=1, retain=retain)
        info.wait_for_publish(timeout=scaled(10))
        assert info.is_published(), f"no PUBACK for {topic}"

    def attempt(self, topic: str, payload: str | bytes, *, retain: bool = False) -> None:
        """Publishes at QoS 0 something the hub may drop, or even disconnect the device for
        (paho then reconnects): nothing to wait for, and nothing is resent."""
        self.client.publish(topic, payload, qos=0, retain=retain)

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()

    def __enter__(self) -> MqttDevice:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def assert_no_script_ran(page: Page) -> None:
    """The trap was never called, no markup from a device became an element, no link leads to
    a javascript: URL, and the page caused no Content-Security-Policy violation."""
    assert page.evaluate("window.__pwned") == []
    assert page.locator("img, iframe, object, embed, svg script").count() == 0
    hrefs = page.eval_on_selector_all("[href]", "els => els.map(e => e.getAttribute('href'))")
    assert not [h for h in hrefs if h.strip().lower().startswith("javascript:")], hrefs
    violations = page.evaluate("window.__csp")
    assert violations == [], f"Content-Security-Policy violations: {violations}"


def health_json(**fields: object) -> str:
    """A health message as the topic contract has it, with some fields replaced."""
    health: dict[str, object] = {
        "fw": "0.1.0",
        "board": "unix-sim",
        "reset": "power-on",
        "up": 5,
        "heap": 30000,
        "rssi": None,
        "reconnects": 0,
        "queue": 0,
        "dropped": 0,
        "boot": "1f",
        "seq": 1,
        "error": None,
    }
    health.update(fields)
    return json.dumps(health)
