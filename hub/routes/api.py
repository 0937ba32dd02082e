"""The routes' HTTP API (admin): the routes with their counters, a route's dead letters, and
replaying them."""

from __future__ import annotations

import asyncio

from aiohttp import web

from hub.routes.service import Routes
from hub.web.inputs import error

MAX_LIMIT = 10_000


class RoutesApi:
    def __init__(self, routes: Routes) -> None:
        self.routes = routes

    async def listing(self, request: web.Request) -> web.Response:
        """GET /api/routes: each running route (no secret) with its counters."""
        return web.json_response({"routes": self.routes.listing()})

    def _name(self, request: web.Request) -> str:
        name = request.match_info["name"]
        if name not in self.routes.workers:
            raise error(web.HTTPNotFound, f"no route {name[:40]!r}")
        return name

    async def dead_letters(self, request: web.Request) -> web.Response:
        """GET /api/routes/{name}/dead-letters?limit=N: the oldest first."""
        name = self._name(request)
        text = request.query.get("limit", "1000")
        if not text.isdigit() or not 1 <= int(text) <= MAX_LIMIT:
            raise error(web.HTTPBadRequest, f"limit must be from 1 to {MAX_LIMIT}")
        db = self.routes.db
        if db is None:
            raise error(web.HTTPServiceUnavailable, "the routes are not running")
        letters = await asyncio.to_thread(db.dead_letters, name, int(text))
        return web.json_response({"route": name, "dead_letters": letters})

    async def replay(self, request: web.Request) -> web.Response:
        """POST /api/routes/{name}/dead-letters/replay: back into the route's queue."""
        name = self._name(request)
        db = self.routes.db
        if db is None:
            raise error(web.HTTPServiceUnavailable, "the routes are not running")
        moved = await asyncio.to_thread(db.replay, name)
        self.routes.replayed(name)
        return web.json_response({"route": name, "replayed": moved})
