"""A real local HTTP server (aiohttp) that receives webhook deliveries and fails in scripted
ways: a status, a slow answer (past the route's timeout), or a closed port (refused)."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable
from dataclasses import dataclass, field

from aiohttp import web

# A script answers each request: an HTTP status, or ("slow", seconds) before a 200.
Answer = int | tuple[str, float]


@dataclass
class Delivery:
    body: bytes
    headers: dict[str, str]
    method: str


@dataclass
class Receiver:
    script: Callable[[Delivery], Answer] = lambda delivery: 200
    received: list[Delivery] = field(default_factory=list)  # every request, answered or not
    accepted: list[Delivery] = field(default_factory=list)  # those answered 2xx
    runner: web.AppRunner | None = None
    port: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/in"

    async def _handle(self, request: web.Request) -> web.Response:
        delivery = Delivery(await request.read(), dict(request.headers), request.method)
        self.received.append(delivery)
        answer = self.script(delivery)
        if isinstance(answer, tuple):
            await asyncio.sleep(answer[1])
            answer = 200
        if 200 <= answer < 300:
            self.accepted.append(delivery)
        return web.Response(status=answer, text="scripted")

    async def start(self, port: int = 0) -> Receiver:
        app = web.Application()
        app.router.add_route("*", "/in", self._handle)
        self.runner = web.AppRunner(app, shutdown_timeout=0.1)
        await self.runner.setup()
        sock = socket.create_server(("127.0.0.1", port))
        await web.SockSite(self.runner, sock).start()
        self.port = int(sock.getsockname()[1])
        return self

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = None

    def bodies(self, device: str | None = None) -> list[bytes]:
        """The accepted bodies (of one device), in the order they arrived."""
        return [
            d.body
            for d in self.accepted
            if device is None or d.headers.get("X-Hub-Device") == device
        ]
