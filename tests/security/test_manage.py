"""Device and account management over the HTTP API by an admin, each action a hub event."""

from __future__ import annotations

import asyncio
import base64
import json
import subprocess
import sys
import time

from tests.security.test_access import Events, connect, token
from tests.support.console import Console
from tests.support.devices import HEALTH as SAMPLE_HEALTH
from tests.support.hubproc import HubProcess, add_account, hub_cli, provision, scaled
from tests.support.waits import eventually_async


async def _admin(hub: HubProcess) -> Console:
    browser = Console.http(hub) if hub.wss_port is None else Console.https(hub)
    assert (await browser.login("ada")).status == 200
    return browser


def test_device_lifecycle_with_events(console_hub: HubProcess) -> None:
    """An admin adds (secret shown once), disables (the device is kicked), enables, rotates
    (the old secret stops working), sets the TLS policy and removes a device; each is a hub
    event naming the admin."""
    hub = console_hub

    async def scenario() -> None:
        events = await Events.watch(hub)
        admin = await _admin(hub)
        added = await admin.request("POST", "/api/devices", {"id": "m-1", "allow_insecure": True})
        assert added.status == 201
        creds = added.json()
        assert set(creds) == {"id", "username", "password"} and creds["username"] == "m-1"
        topic, body = await events.expect("device_added")
        assert topic == "$hub/events/account/ada/info"
        assert (body["by"], body["device"]) == ("ada", "m-1")
        device, code = await connect(hub, "m-1", "m-1", creds["password"])
        assert code == 0
        disabled = await admin.request("POST", "/api/devices/m-1/disable")
        assert disabled.status == 200 and disabled.json()["enabled"] is False
        assert "secret_hash" not in disabled.json()
        await device.expect_closed(scaled(3))
        assert (await events.expect("device_disabled"))[1]["by"] == "ada"
        enabled = await admin.request("POST", "/api/devices/m-1/enable")
        assert enabled.json()["enabled"] is True
        await events.expect("device_enabled")
        rotated = await admin.request("POST", "/api/devices/m-1/rotate")
        assert rotated.status == 200 and rotated.json()["password"] != creds["password"]
        await events.expect("device_rotated")
        _, code = await connect(hub, "m-1", "m-1", creds["password"])
        assert code == 4
        device, code = await connect(hub, "m-1", "m-1", rotated.json()["password"])
        assert code == 0
        await device.close()
        policy = await admin.request(
            "PUT", "/api/devices/m-1/tls_policy", {"tls_policy": "tls-required"}
        )
        assert policy.status == 200 and policy.json()["tls_policy"] == "tls-required"
        _, body = await events.expect("device_tls_policy")
        assert body["tls_policy"] == "tls-required"
        bad = await admin.request("PUT", "/api/devices/m-1/tls_policy", {"tls_policy": "maybe"})
        assert bad.status == 400
        no_ca = await admin.request("POST", "/api/devices/m-1/cert")
        assert no_ca.status == 409 and "certs init" in no_ca.error
        twice = await admin.request("POST", "/api/devices", {"id": "m-1"})
        assert twice.status == 409
        gone = await admin.request("DELETE", "/api/devices/m-1")
        assert gone.status == 204
        assert (await events.expect("device_removed"))[1]["device"] == "m-1"
        again = await admin.request("DELETE", "/api/devices/m-1")
        assert again.status == 404

    asyncio.run(scenario())


def test_cert_is_issued_once_over_the_api(console_tls_hub: HubProcess) -> None:
    """With a hub CA, POST .../cert returns the client certificate and key (DER, base64) and
    records its fingerprint; a device_cert_issued event names the admin."""
    hub = console_tls_hub
    provision(hub, "m-cert", allow_insecure=False)

    async def scenario() -> str:
        events = await Events.watch(hub)
        admin = await _admin(hub)
        issued = await admin.request("POST", "/api/devices/m-cert/cert")
        assert issued.status == 200
        body = issued.json()
        cert = base64.b64decode(body["cert_der_b64"])
        assert base64.b64decode(body["key_der_b64"]) and cert[0] == 0x30  # DER sequences
        _, event = await events.expect("device_cert_issued")
        assert (event["by"], event["fingerprint"]) == ("ada", body["fingerprint"])
        return str(body["fingerprint"])

    fingerprint = asyncio.run(scenario())
    shown = hub_cli(hub.data_dir, "device", "show", "m-cert")
    assert json.loads(shown.stdout)["cert_fingerprint"] == fingerprint


async def _retained(hub: HubProcess, device: str) -> list[str]:
    """The retained topics a new subscriber to the device's topics receives."""
    watcher, code = await connect(
        hub, f"w-{time.monotonic_ns()}", "token", token(hub, "--subscribe", "d/#")
    )
    assert code == 0
    await watcher.subscribe([(f"d/{device}/#", 0)])
    topics = []
    try:
        while True:
            topics.append((await watcher.next_message(scaled(0.5))).topic)
    except TimeoutError:
        pass
    await watcher.close()
    return topics


async def _until_no_retained(hub: HubProcess, device: str) -> None:
    async def gone() -> bool:
        left = await _retained(hub, device)
        assert not left, f"still retained: {left}"
        return True

    # Each check listens for half a second: no pause between them.
    await eventually_async(gone, 5, "the removed device's retained topics to go", poll=0)


# A health message that follows the topic contract (anything else is dropped, not retained).
HEALTH = json.dumps({**SAMPLE_HEALTH, "heap": 1}).encode()


async def _device_with_retained(hub: HubProcess, device: str, password: str) -> None:
    client, code = await connect(hub, device, device, password)
    assert code == 0
    await client.publish(f"d/{device}/s", b"online", qos=1, retain=True)
    await client.publish(f"d/{device}/m", HEALTH, qos=1, retain=True, pid=2)
    await client.disconnect()
    assert sorted(await _retained(hub, device)) == [f"d/{device}/m", f"d/{device}/s"]


def test_removal_clears_retained_topics(console_hub: HubProcess) -> None:
    """Removing a device over the API or with `hub device remove` clears its retained
    presence and health, so no subscriber sees a ghost."""
    hub = console_hub
    api = provision(hub, "m-ret-api")
    cli = provision(hub, "m-ret-cli")

    async def scenario() -> None:
        await _device_with_retained(hub, "m-ret-api", api["password"])
        await _device_with_retained(hub, "m-ret-cli", cli["password"])
        admin = await _admin(hub)
        assert (await admin.request("DELETE", "/api/devices/m-ret-api")).status == 204
        await _until_no_retained(hub, "m-ret-api")
        assert hub_cli(hub.data_dir, "device", "remove", "m-ret-cli").returncode == 0
        await _until_no_retained(hub, "m-ret-cli")
        listed = await admin.request("GET", "/api/devices")
        assert not {"m-ret-api", "m-ret-cli"} & {d["id"] for d in listed.json()}

    asyncio.run(scenario())


def test_account_management(console_hub: HubProcess) -> None:
    """An admin lists, adds (one-time password), disables (its sessions end), enables and
    removes accounts, never its own; each is a hub event."""
    hub = console_hub

    async def scenario() -> None:
        events = await Events.watch(hub)
        admin = await _admin(hub)
        listed = await admin.request("GET", "/api/users")
        assert {"ada", "otto", "vera"} <= {u["name"] for u in listed.json()}
        assert all("password_hash" not in u for u in listed.json())
        added = await admin.request("POST", "/api/users", {"name": "nina", "role": "operator"})
        assert added.status == 201
        nina = added.json()
        assert (nina["name"], nina["role"]) == ("nina", "operator") and len(nina["password"]) > 10
        assert (await events.expect("user_added"))[1]["by"] == "ada"
        bad = await admin.request("POST", "/api/users", {"name": "Bad Name!", "role": "viewer"})
        assert bad.status == 400
        role = await admin.request("POST", "/api/users", {"name": "zed", "role": "root"})
        assert role.status == 400
        browser = Console.http(hub)
        assert (await browser.login("nina", nina["password"])).status == 200
        disabled = await admin.request("POST", "/api/users/nina/disable")
        assert disabled.status == 200 and disabled.json()["enabled"] is False
        await events.expect("user_disabled")
        assert (await browser.request("GET", "/api/session")).status == 401
        assert (await browser.login("nina", nina["password"])).status == 401
        assert (await admin.request("POST", "/api/users/nina/enable")).status == 200
        assert (await browser.login("nina", nina["password"])).status == 200
        own = await admin.request("POST", "/api/users/ada/disable")
        assert own.status == 409
        assert (await admin.request("DELETE", "/api/users/nina")).status == 204
        await events.expect("user_removed")
        assert (await browser.request("GET", "/api/session")).status == 401
        assert (await admin.request("DELETE", "/api/users/nina")).status == 404

    asyncio.run(scenario())


def test_a_new_password_ends_older_sessions(console_hub: HubProcess) -> None:
    """`hub user passwd` on a running hub logs the account's open sessions out; a login with
    the new password works."""
    hub = console_hub
    password = add_account(hub.data_dir, "pia", "viewer", "the first password")

    async def scenario() -> None:
        browser = Console.http(hub)
        assert (await browser.login("pia", password)).status == 200
        assert (await browser.request("GET", "/api/session")).status == 200
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "hub",
                "user",
                "passwd",
                "pia",
                "--password-stdin",
                "--data-dir",
                str(hub.data_dir),
            ],
            input="the second password\n",
            capture_output=True,
            text=True,
            timeout=scaled(30),
        )
        assert result.returncode == 0, result.stderr
        assert (await browser.request("GET", "/api/session")).status == 401
        assert (await browser.login("pia", "the second password")).status == 200
        assert (await browser.request("GET", "/api/session")).status == 200

    asyncio.run(scenario())
