"""A reading travels from the firmware on the unix port, through the hub, to a WebSocket client."""

import asyncio
from pathlib import Path

from hub import topics
from tests.support.devices import running_device
from tests.support.hubproc import HubProcess, scaled
from tests.support.mqtt import Message, RawClient


async def _browser(hub: HubProcess, client_id: str, filters: list[str]) -> RawClient:
    client = await RawClient.websocket(hub.ws_url)
    assert await client.connect(client_id) == (False, 0)
    assert await client.subscribe([(f, 1) for f in filters]) == [1] * len(filters)
    return client


async def _next_on(client: RawClient, topic: str, timeout: float) -> Message:
    async def wait() -> Message:
        while (msg := await client.next_message(timeout)).topic != topic:
            pass
        return msg

    return await asyncio.wait_for(wait(), timeout)


def test_firmware_reading_reaches_websocket_subscriber(hub: HubProcess, tmp_path: Path) -> None:
    """Readings from the real firmware arrive over WebSocket with the contract's topic and payload."""

    async def scenario() -> None:
        browser = await _browser(hub, "browser-e2e", ["d/e2e-1/#"])
        with running_device(tmp_path, hub, "e2e-1", period_s=1):
            status = await _next_on(browser, "d/e2e-1/s", scaled(10))
            assert status.payload == b"online"
            first = await _next_on(browser, "d/e2e-1/t/temp", scaled(10))
            second = await _next_on(browser, "d/e2e-1/t/temp", scaled(10))
        a, b = topics.parse_reading(first.payload), topics.parse_reading(second.payload)
        assert a.boot == b.boot and b.seq == a.seq + 1
        assert 17.0 <= a.value <= 25.0  # the unix-sim board: 21 +- 3
        assert first.qos == 1  # readings are published at QoS 1
        await browser.close()

    asyncio.run(scenario())


def test_killed_device_goes_offline_through_its_will(hub: HubProcess, tmp_path: Path) -> None:
    """Killing a firmware process makes its retained status `offline` reach a subscriber."""

    async def scenario() -> None:
        browser = await _browser(hub, "browser-presence", ["d/+/s"])
        with running_device(tmp_path, hub, "will-1") as device:
            assert (await _next_on(browser, "d/will-1/s", scaled(10))).payload == b"online"
            device.kill()
            offline = await _next_on(browser, "d/will-1/s", scaled(10))
        assert offline.payload == b"offline"
        await browser.close()
        # A late subscriber gets the retained status.
        late = await _browser(hub, "browser-late", ["d/will-1/s"])
        retained = await late.next_message(scaled(5))
        assert (retained.payload, retained.retain) == (b"offline", True)
        await late.close()

    asyncio.run(scenario())


def test_device_answers_a_command(hub: HubProcess, tmp_path: Path) -> None:
    """A command published on the device's command topic is answered on its reply topic."""

    async def scenario() -> None:
        browser = await _browser(hub, "browser-cmd", ["d/cmd-1/s", "d/cmd-1/r"])
        with running_device(tmp_path, hub, "cmd-1", period_s=30):
            assert (await _next_on(browser, "d/cmd-1/s", scaled(10))).payload == b"online"
            from tests.support.mqtt import publish_packet

            await browser.send(publish_packet("d/cmd-1/c", b'{"id": 42, "op": "ping"}', qos=1))
            reply = await _next_on(browser, "d/cmd-1/r", scaled(10))
        assert b'"id": 42' in reply.payload and b'"ok": true' in reply.payload
        await browser.close()

    asyncio.run(scenario())
