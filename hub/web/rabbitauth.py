"""The listener RabbitMQ's HTTP auth backend asks in cluster mode (rabbitmq_auth_backend_http):
``/user``, ``/vhost``, ``/resource`` and ``/topic``, POST (form) or GET (query), answered
``allow`` or ``deny`` by the broker's :class:`hub.broker.rabbitmq.Authorizer`.

Only the cluster may ask: the listener binds ``auth_http_host`` (loopback by default) and
refuses every caller whose address is neither loopback nor listed in ``auth_http_allow``.
Requests are small and bounded: a body over 16 KiB gets 413, a value over 1,024 characters
a ``deny``.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Awaitable, Callable, Iterable

from aiohttp import web

from hub.broker import Authorizer

log = logging.getLogger(__name__)

MAX_BODY = 16 * 1024
MAX_VALUE = 1024
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(text.strip())
    except ValueError:
        return None


class AuthBackend:
    def __init__(self, authorizer: Authorizer, allow: Iterable[str] = ()) -> None:
        self.authorizer = authorizer
        self.allowed = {a for a in (_address(x) for x in allow if x.strip()) if a is not None}
        self.refused_callers = 0
        self._runner: web.AppRunner | None = None

    def app(self) -> web.Application:
        app = web.Application(client_max_size=MAX_BODY, middlewares=[self._only_the_cluster])
        for path, handler in (
            ("/user", self._user),
            ("/vhost", self._vhost),
            ("/resource", self._resource),
            ("/topic", self._topic),
        ):
            app.router.add_route("POST", path, handler)
            app.router.add_route("GET", path, handler)
        return app

    async def start(self, host: str, port: int) -> tuple[str, int]:
        """Listens; returns the real address (port 0 picks a free one)."""
        self._runner = web.AppRunner(self.app(), access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port, reuse_address=True)
        await site.start()
        server = site._server
        sockets = getattr(server, "sockets", None) or []
        bound = sockets[0].getsockname()[:2] if sockets else (host, port)
        return str(bound[0]), int(bound[1])

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    @web.middleware
    async def _only_the_cluster(
        self, request: web.Request, handler: Handler
    ) -> web.StreamResponse:
        peer = _address(request.remote or "")
        if peer is None or not (peer.is_loopback or peer in self.allowed):
            self.refused_callers += 1
            if self.refused_callers in (1, 10, 100) or self.refused_callers % 1000 == 0:
                log.warning(
                    "auth listener: refused a caller that is not the cluster (%s; %d so far)",
                    request.remote,
                    self.refused_callers,
                )
            return web.Response(status=403, text="deny")
        return await handler(request)

    @staticmethod
    async def _params(request: web.Request) -> dict[str, str] | None:
        if request.method == "POST":
            form = await request.post()
            values = {k: v for k, v in form.items() if isinstance(v, str)}
        else:
            values = dict(request.query)
        if any(len(v) > MAX_VALUE or len(k) > 64 for k, v in values.items()):
            return None
        return values

    async def _user(self, request: web.Request) -> web.Response:
        p = await self._params(request)
        if p is None or not p.get("username"):
            return web.Response(text="deny")
        answer = await self.authorizer.user(
            p["username"], p.get("password", ""), p.get("client_id", "")
        )
        return web.Response(text=answer)

    async def _vhost(self, request: web.Request) -> web.Response:
        p = await self._params(request)
        if p is None:
            return web.Response(text="deny")
        answer = self.authorizer.vhost(
            p.get("username", ""), p.get("vhost", ""), p.get("client_id", "")
        )
        return web.Response(text=answer)

    async def _resource(self, request: web.Request) -> web.Response:
        p = await self._params(request)
        if p is None:
            return web.Response(text="deny")
        answer = self.authorizer.resource(
            p.get("username", ""),
            p.get("vhost", ""),
            p.get("resource", ""),
            p.get("name", ""),
            p.get("permission", ""),
            p.get("client_id", ""),
        )
        return web.Response(text=answer)

    async def _topic(self, request: web.Request) -> web.Response:
        p = await self._params(request)
        if p is None:
            return web.Response(text="deny")
        client_id = p.get("variable_map.client_id") or p.get("client_id", "")
        answer = self.authorizer.topic(
            p.get("username", ""),
            p.get("vhost", ""),
            p.get("name", ""),
            p.get("permission", ""),
            p.get("routing_key", ""),
            client_id,
        )
        return web.Response(text=answer)
