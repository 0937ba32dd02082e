"""Users' amqtt plugins run after the hub's own checks: amqtt's HTTP auth and topic plugins
(amqtt.contrib.http) against a small local service admit a browser-like client the hub's
registry and tokens do not know, scope it, and refuse it when the service says no."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from aiohttp import web

from tests.support.hubproc import HubProcess, scaled, start_hub
from tests.support.mqtt import RawClient, publish_packet

USERS = {"alice": "wonderland"}  # what the service accepts; the hub knows no such user


class AuthService:
    """An HTTP service in amqtt's HTTP plugin protocol: /user answers logins and /acl topic
    checks (acc 2: publish, 4: subscribe) with {"ok": bool}; alice may use rooms/alice/#."""

    def __init__(self) -> None:
        self.asked: list[tuple[str, dict[str, Any]]] = []
        self.runner: web.AppRunner | None = None
        self.port = 0

    async def _user(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.asked.append(("user", body))
        ok = USERS.get(body.get("username")) == body.get("password") is not None
        return web.json_response({"ok": ok})

    async def _acl(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.asked.append(("acl", body))
        topic = str(body.get("topic"))
        ok = body.get("username") == "alice" and topic.startswith("rooms/alice/")
        return web.json_response({"ok": ok})

    async def start(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/user", self._user)
        app.router.add_route("*", "/acl", self._acl)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.port = self.runner.addresses[0][1]

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()


def _plugin_flags(port: int) -> list[str]:
    where = {"host": "127.0.0.1", "port": port, "timeout": 5}
    return [
        "--amqtt-plugin",
        "amqtt.contrib.http.UserAuthHttpPlugin=" + json.dumps({**where, "user_uri": "/user"}),
        "--amqtt-plugin",
        "amqtt.contrib.http.TopicAuthHttpPlugin=" + json.dumps({**where, "topic_uri": "/acl"}),
    ]


def test_amqtt_http_plugins_admit_scope_and_refuse_a_browser_client(tmp_path: Path) -> None:
    """Over MQTT-over-WebSocket, alice (known only to the HTTP service) is admitted, may
    subscribe and publish under rooms/alice/ and nowhere else, and a wrong password is
    refused after the service said no."""

    async def scenario() -> None:
        service = AuthService()
        await service.start()
        hub: HubProcess | None = None
        try:
            hub = await asyncio.to_thread(
                start_hub, tmp_path / "data", *_plugin_flags(service.port), secure=True
            )
            client = await RawClient.websocket(hub.ws_url)
            assert await client.connect(
                "alice-browser", username="alice", password="wonderland"
            ) == (False, 0)
            assert await client.subscribe([("rooms/alice/#", 0)]) == [0]
            assert await client.subscribe([("d/+/t/+", 0)], pid=2) == [0x80]
            await client.send(publish_packet("rooms/alice/chat", b"hello", qos=0))
            message = await client.next_message(timeout=scaled(5))
            assert (message.topic, message.payload) == ("rooms/alice/chat", b"hello")
            assert (
                "user",
                {"username": "alice", "password": "wonderland", "client_id": "alice-browser"},
            ) in service.asked

            intruder = await RawClient.websocket(hub.ws_url)
            _, code = await intruder.connect("mallory", username="alice", password="guess")
            assert code in (4, 5)
            await intruder.expect_closed(timeout=scaled(5))
            assert (
                "user",
                {"username": "alice", "password": "guess", "client_id": "mallory"},
            ) in service.asked
        finally:
            if hub is not None:
                await asyncio.to_thread(hub.stop)
            await service.stop()

    asyncio.run(scenario())


def test_a_plugin_that_cannot_load_stops_the_hub_with_a_clear_error(tmp_path: Path) -> None:
    """An --amqtt-plugin that is no module, or whose config the plugin rejects, is a
    `hub: error:` line and exit code 2."""
    for flag in (
        "no.such.Plugin={}",
        'amqtt.contrib.http.UserAuthHttpPlugin={"hots": 1}',
        "amqtt.contrib.http.UserAuthHttpPlugin=[1]",
        "NoDots={}",
    ):
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "hub",
                "serve",
                "--mqtt-port",
                "0",
                "--ws-port",
                "0",
                "--mqtts-port",
                "0",
                "--wss-port",
                "0",
                "--data-dir",
                str(tmp_path / "data"),
                "--amqtt-plugin",
                flag,
            ],
            capture_output=True,
            text=True,
            timeout=scaled(30),
        )
        assert result.returncode == 2, (flag, result.stderr[-2000:])
        assert "hub: error: " in result.stderr and "amqtt" in result.stderr, result.stderr
        assert "Traceback" not in result.stderr
