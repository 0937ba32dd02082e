"""The two networks meet in one broker: MQTT over TCP and MQTT over WebSocket."""

import asyncio
import json
import urllib.request

import pytest

from tests.support.hubproc import HubProcess, scaled
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


def test_dashboard_page_and_browser_library_are_served(shared_hub: HubProcess) -> None:
    """The dashboard, its script and MQTT.js (from npm) are served by the hub."""
    status, ctype, body = _get(shared_hub.http_url + "/")
    assert status == 200 and ctype.startswith("text/html")
    assert b'src="/vendor/mqtt.min.js"' in body
    status, _, body = _get(shared_hub.http_url + "/vendor/mqtt.min.js")
    assert status == 200 and len(body) > 10_000
    status, _, body = _get(shared_hub.http_url + "/static/dashboard.js")
    assert status == 200 and b"mqtt.connect" in body


def test_hub_info_names_the_websocket_network(shared_hub: HubProcess) -> None:
    """/api/hub tells a page which port and path carry MQTT over WebSocket."""
    status, _, body = _get(shared_hub.http_url + "/api/hub")
    assert status == 200
    info = json.loads(body)
    assert (info["ws_port"], info["ws_path"], info["username"]) == (
        shared_hub.ws_port, "/mqtt", "token")  # fmt: skip
    assert info["token"].startswith("v1.") and info["token_ttl_s"] == 3600


@pytest.mark.parametrize(("path", "status"), [("/mqtt", 400), ("/vendor/nope.js", 404)])
def test_bad_http_requests_get_clear_errors(
    shared_hub: HubProcess, path: str, status: int
) -> None:
    """A plain GET of /mqtt and an unknown vendored file are refused with a message."""
    code, _, body = _get(shared_hub.http_url + path)
    assert code == status and body
