"""The two networks meet in one broker: MQTT over TCP and MQTT over WebSocket."""

import asyncio
import json
import urllib.error
import urllib.request

import pytest

from tests.support.hubproc import HubProcess, hub_cli, scaled
from tests.support.mqtt import PUBACK, RawClient, publish_packet


def run(coro):
    return asyncio.run(coro)


def test_tcp_publish_reaches_websocket_subscriber(shared_hub: HubProcess) -> None:
    """A device publishing over TCP reaches a browser-style client on /mqtt (subprotocol mqtt)."""

    async def scenario() -> None:
        browser = await RawClient.websocket(shared_hub.ws_url)
        assert await browser.connect("browser-1") == (False, 0)
        assert await browser.subscribe([("d/+/t/+", 1)]) == [1]
        device = await RawClient.tcp(shared_hub.host, shared_hub.mqtt_port)
        await device.connect("dev-a")
        await device.send(publish_packet("d/dev-a/t/temp", b"ab,0,20.5", qos=1, pid=7))
        assert (await device.expect(PUBACK)).body == b"\x00\x07"
        msg = await browser.next_message(scaled(5))
        assert (msg.topic, msg.payload, msg.qos) == ("d/dev-a/t/temp", b"ab,0,20.5", 1)
        await browser.close()
        await device.close()

    run(scenario())


def test_websocket_publish_reaches_tcp_subscriber(shared_hub: HubProcess) -> None:
    """A browser publishing over the WebSocket network reaches a TCP subscriber (commands)."""

    async def scenario() -> None:
        device = await RawClient.tcp(shared_hub.host, shared_hub.mqtt_port)
        await device.connect("dev-b")
        assert await device.subscribe([("d/dev-b/c", 1)]) == [1]
        browser = await RawClient.websocket(shared_hub.ws_url)
        await browser.connect("browser-2")
        await browser.send(publish_packet("d/dev-b/c", b'{"id":1,"op":"ping"}'))
        msg = await device.next_message(scaled(5))
        assert (msg.topic, msg.payload) == ("d/dev-b/c", b'{"id":1,"op":"ping"}')
        await browser.close()
        await device.close()

    run(scenario())


def _get(url: str) -> tuple[int, str, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=scaled(5)) as response:
            return response.status, response.headers.get("Content-Type", ""), response.read()
    except urllib.error.HTTPError as err:
        return err.code, err.headers.get("Content-Type", ""), err.read()


def test_dashboard_scripts_and_browser_library_are_served(shared_hub: HubProcess) -> None:
    """The dashboard's script and MQTT.js (from npm) are served by the hub; the page itself
    sends a visitor without a session to the login page."""
    request = urllib.request.Request(shared_hub.http_url + "/")
    try:
        with urllib.request.urlopen(request, timeout=scaled(5)) as response:
            landed = response.geturl()
    except urllib.error.HTTPError as err:  # the login page may come with the console pages
        landed = err.geturl()
    assert landed == shared_hub.http_url + "/login?next=/"
    status, _, body = _get(shared_hub.http_url + "/vendor/mqtt.min.js")
    assert status == 200 and len(body) > 10_000
    status, _, body = _get(shared_hub.http_url + "/static/dashboard.js")
    assert status == 200 and b"mqtt.connect" in body


def test_hub_info_names_the_websocket_path(shared_hub: HubProcess) -> None:
    """/api/hub tells a caller with a token the WebSocket path (on its own origin) and gives
    a short-lived token; without credentials it refuses."""
    assert _get(shared_hub.http_url + "/api/hub")[0] == 401
    result = hub_cli(shared_hub.data_dir, "token", "create", "--subscribe", "d/+/s")
    request = urllib.request.Request(
        shared_hub.http_url + "/api/hub",
        headers={"Authorization": f"Bearer {result.stdout.strip().splitlines()[-1]}"},
    )
    with urllib.request.urlopen(request, timeout=scaled(5)) as response:
        info = json.loads(response.read())
    assert (info["ws_path"], info["username"]) == ("/mqtt", "token")
    assert "ws_port" not in info and info["token"].startswith("v1.")


@pytest.mark.parametrize(("path", "status"), [("/mqtt", 400), ("/vendor/nope.js", 404)])
def test_bad_http_requests_get_clear_errors(
    shared_hub: HubProcess, path: str, status: int
) -> None:
    """A plain GET of /mqtt and an unknown vendored file are refused with a message."""
    code, _, body = _get(shared_hub.http_url + path)
    assert code == status and body
