"""The aiohttp application: static pages, vendored browser libraries and the /mqtt WebSocket."""

from __future__ import annotations

import logging
import time
from pathlib import Path

from aiohttp import web

from hub.broker import EmbeddedBroker
from hub.security import TOKEN_USERNAME, TokenClaims, create_token
from hub.web.api import Api

log = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).parent / "static"
# Browser libraries come from npm (package.json at the repository root), never from the web.
NODE_MODULES = Path(__file__).resolve().parents[2] / "node_modules"
VENDOR_FILES = {
    "mqtt.min.js": NODE_MODULES / "mqtt" / "dist" / "mqtt.min.js",
    "uPlot.iife.min.js": NODE_MODULES / "uplot" / "dist" / "uPlot.iife.min.js",
    "uPlot.min.css": NODE_MODULES / "uplot" / "dist" / "uPlot.min.css",
}

MQTT_PATH = "/mqtt"
BROKER_KEY = web.AppKey("broker", EmbeddedBroker)
WS_PORT_KEY = web.AppKey("ws_port", int)
KEY_KEY = web.AppKey("key", bytes)
DASHBOARD_FILTERS = ("d/+/t/+", "d/+/s", "d/+/m", "d/+/r")
DASHBOARD_TOKEN_TTL_S = 3600


async def _index(request: web.Request) -> web.FileResponse:
    return web.FileResponse(STATIC_DIR / "index.html")


async def _client(request: web.Request) -> web.FileResponse:
    return web.FileResponse(STATIC_DIR / "client.html")


async def _vendor(request: web.Request) -> web.FileResponse:
    name = request.match_info["name"]
    path = VENDOR_FILES.get(name)
    if path is None:
        raise web.HTTPNotFound(text=f"no vendored file {name!r}")
    if not path.is_file():
        raise web.HTTPServiceUnavailable(
            text=f"{name} is not installed: run tools/bootstrap.sh (npm ci) first"
        )
    return web.FileResponse(path)


async def _hub_info(request: web.Request) -> web.Response:
    """Tells a page where the MQTT-over-WebSocket network is, with a read-only token for the
    dashboard (the fleet's telemetry, presence, health and replies; never hub events)."""
    claims = TokenClaims(subscribe=DASHBOARD_FILTERS, expires=time.time() + DASHBOARD_TOKEN_TTL_S)
    return web.json_response(
        {
            "ws_port": request.app[WS_PORT_KEY],
            "ws_path": MQTT_PATH,
            "username": TOKEN_USERNAME,
            "token": create_token(request.app[KEY_KEY], claims),
            "token_ttl_s": DASHBOARD_TOKEN_TTL_S,
        }
    )


async def _mqtt_websocket(request: web.Request) -> web.StreamResponse:
    ws = web.WebSocketResponse(protocols=("mqtt",), autoping=True)
    if not ws.can_prepare(request).ok:
        raise web.HTTPBadRequest(text="this is the MQTT-over-WebSocket endpoint: upgrade required")
    await ws.prepare(request)
    await request.app[BROKER_KEY].serve_websocket(ws, request)
    if not ws.closed:
        await ws.close()
    return ws


def build_app(
    broker: EmbeddedBroker, ws_port: int, key: bytes, api: Api | None = None
) -> web.Application:
    app = web.Application()
    if api is not None:
        app.router.add_routes(api.routes())
    app[BROKER_KEY] = broker
    app[WS_PORT_KEY] = ws_port
    app[KEY_KEY] = key
    app.router.add_get("/", _index)
    app.router.add_get("/client", _client)
    app.router.add_get(MQTT_PATH, _mqtt_websocket)
    app.router.add_get("/api/hub", _hub_info)
    app.router.add_get("/vendor/{name}", _vendor)
    app.router.add_static("/static/", STATIC_DIR)
    return app
