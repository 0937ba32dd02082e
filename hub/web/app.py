"""The aiohttp application: the console pages, the HTTP API, the vendored browser libraries
and the /mqtt WebSocket, with one table of routes that says what each one needs."""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web

from hub.broker import Broker
from hub.security import EVENTS_FILTER, TOKEN_USERNAME, create_token
from hub.topics import ROOT
from hub.web.api import Api
from hub.web.auth import Access, Auth, principal_of
from hub.web.files import Files
from hub.web.headers import add_security_headers, json_errors
from hub.web.inputs import error
from hub.web.manage import Manage

log = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).parent / "static"
STATIC_NAME_RE = re.compile(r"^[a-z][a-z0-9_-]{0,40}\.(js|css|png|svg)\Z")
# Browser libraries come from npm (package.json at the repository root), never from the web.
NODE_MODULES = Path(__file__).resolve().parents[2] / "node_modules"
VENDOR_FILES = {
    "mqtt.min.js": NODE_MODULES / "mqtt" / "dist" / "mqtt.min.js",
    "uPlot.iife.min.js": NODE_MODULES / "uplot" / "dist" / "uPlot.iife.min.js",
    "uPlot.min.css": NODE_MODULES / "uplot" / "dist" / "uPlot.min.css",
}

MQTT_PATH = "/mqtt"
PAGE_TOKEN_TTL_S = 600  # the page renews it (GET /api/hub) before it expires
MAX_BODY = 64 * 1024
TOPICS = {
    "telemetry": f"{ROOT}/{{device}}/t/{{sensor}}",
    "status": f"{ROOT}/{{device}}/s",
    "health": f"{ROOT}/{{device}}/m",
    "command": f"{ROOT}/{{device}}/c",
    "reply": f"{ROOT}/{{device}}/r",
    "events": EVENTS_FILTER,
}


@dataclass(frozen=True)
class Route:
    method: str
    path: str
    access: Access
    handler: str  # "<part>.<method>": pages, auth, api, fleet, alarms or manage


A = Access
# Every route but /static/ (the pages' own scripts and styles, open to anyone). Tests send
# anonymous and hostile requests to each one.
ROUTES = (
    Route("GET", "/", A.PUBLIC_PAGE, "pages.index"),
    Route("GET", "/client", A.PAGE, "pages.client"),
    Route("GET", "/devices/{id}", A.PAGE, "pages.device"),
    Route("GET", "/login", A.OPEN, "pages.login"),
    Route("GET", "/vendor/{name}", A.OPEN, "pages.vendor"),
    Route("GET", MQTT_PATH, A.OPEN, "pages.mqtt"),
    Route("POST", "/api/login", A.OPEN, "auth.login"),
    Route("POST", "/api/logout", A.OPEN, "auth.logout"),
    Route("GET", "/api/session", A.SESSION, "auth.session_info"),
    Route("GET", "/api/hub", A.PUBLIC_USER, "pages.hub_info"),
    Route("GET", "/api/devices", A.PUBLIC_USER, "api.devices"),
    Route("GET", "/api/fleet", A.PUBLIC_USER, "fleet.fleet"),
    Route("GET", "/api/devices/{id}", A.PUBLIC_USER, "fleet.device"),
    Route("GET", "/api/devices/{id}/series", A.PUBLIC_USER, "fleet.series"),
    Route("GET", "/api/devices/{id}/health", A.PUBLIC_USER, "fleet.health"),
    Route("GET", "/api/devices/{id}/history", A.USER, "fleet.history"),
    Route("GET", "/api/devices/{id}/telemetry", A.PUBLIC_USER, "api.telemetry"),
    Route("GET", "/api/devices/{id}/telemetry.csv", A.PUBLIC_USER, "api.telemetry_csv"),
    Route("POST", "/api/devices/{id}/commands", A.USER, "api.command"),
    Route("GET", "/api/status", A.ADMIN, "api.status"),
    Route("GET", "/api/devices/{id}/commands/{cid}", A.USER, "api.command_status"),
    Route("GET", "/api/alarms", A.USER, "alarms.alarms"),
    Route("POST", "/api/alarms/{id}/ack", A.USER, "alarms.acknowledge"),
    Route("GET", "/api/alarms/rules", A.USER, "alarms.rules"),
    Route("POST", "/api/alarms/rules", A.ADMIN, "alarms.add_rule"),
    Route("DELETE", "/api/alarms/rules/{id}", A.ADMIN, "alarms.remove_rule"),
    Route("POST", "/api/devices", A.ADMIN, "manage.add_device"),
    Route("POST", "/api/devices/{id}/disable", A.ADMIN, "manage.disable_device"),
    Route("POST", "/api/devices/{id}/enable", A.ADMIN, "manage.enable_device"),
    Route("POST", "/api/devices/{id}/rotate", A.ADMIN, "manage.rotate_device"),
    Route("PUT", "/api/devices/{id}/tls_policy", A.ADMIN, "manage.tls_policy"),
    Route("POST", "/api/devices/{id}/cert", A.ADMIN, "manage.issue_cert"),
    Route("DELETE", "/api/devices/{id}", A.ADMIN, "manage.remove_device"),
    Route("GET", "/api/users", A.ADMIN, "manage.users"),
    Route("POST", "/api/users", A.ADMIN, "manage.add_user"),
    Route("POST", "/api/users/{name}/disable", A.ADMIN, "manage.disable_user"),
    Route("POST", "/api/users/{name}/enable", A.ADMIN, "manage.enable_user"),
    Route("DELETE", "/api/users/{name}", A.ADMIN, "manage.remove_user"),
    # Integrations: metrics (open to anyone with metrics_public), routes (hub/routes/).
    Route("GET", "/metrics", A.ADMIN, "metrics.scrape"),
    Route("GET", "/api/routes", A.ADMIN, "routes.listing"),
    Route("GET", "/api/routes/{name}/dead-letters", A.ADMIN, "routes.dead_letters"),
    # Desired state and groups (hub/web/desired_api.py).
    Route("GET", "/api/devices/{id}/desired", A.USER, "desired.device_desired"),
    Route("PUT", "/api/devices/{id}/desired", A.ADMIN, "desired.put_device_desired"),
    Route("GET", "/api/devices/{id}/state", A.USER, "desired.device_state"),
    Route("GET", "/api/groups", A.USER, "desired.groups"),
    Route("GET", "/api/groups/{name}/desired", A.USER, "desired.group_desired"),
    Route("PUT", "/api/groups/{name}/desired", A.ADMIN, "desired.put_group_desired"),
    Route("POST", "/api/routes/{name}/dead-letters/replay", A.ADMIN, "routes.replay"),
    # Staged rollouts of app updates (hub/web/rollouts_api.py).
    Route("GET", "/rollouts", A.PAGE, "pages.rollouts"),
    Route("GET", "/api/rollouts", A.ADMIN, "rollouts.listing"),
    Route("POST", "/api/rollouts", A.ADMIN, "rollouts.create"),
    Route("GET", "/api/rollouts/{id}", A.ADMIN, "rollouts.show"),
    Route("POST", "/api/rollouts/{id}/pause", A.ADMIN, "rollouts.pause"),
    Route("POST", "/api/rollouts/{id}/resume", A.ADMIN, "rollouts.resume"),
    Route("POST", "/api/rollouts/{id}/cancel", A.ADMIN, "rollouts.cancel"),
)


class Pages:
    def __init__(self, broker: Broker, auth: Auth, mqtt_limits: Mapping[str, int]) -> None:
        self.broker = broker
        self.auth = auth
        self.mqtt_limits = dict(mqtt_limits)
        self.files = Files()

    async def _page(self, request: web.Request, name: str) -> web.StreamResponse:
        page = await self.files.response(request, STATIC_DIR / name, "no-store")
        if page is None:
            raise error(web.HTTPServiceUnavailable, f"the page {name} is not installed")
        return page

    async def index(self, request: web.Request) -> web.StreamResponse:
        return await self._page(request, "index.html")

    async def client(self, request: web.Request) -> web.StreamResponse:
        return await self._page(request, "client.html")

    async def device(self, request: web.Request) -> web.StreamResponse:
        """A device's page; the page itself reads the id from its path."""
        return await self._page(request, "device.html")

    async def rollouts(self, request: web.Request) -> web.StreamResponse:
        return await self._page(request, "rollouts.html")

    async def login(self, request: web.Request) -> web.StreamResponse:
        if self.auth.tls_port is not None and not request.secure:
            raise web.HTTPTemporaryRedirect(self.auth.https_url(request))
        return await self._page(request, "login.html")

    async def static(self, request: web.Request) -> web.StreamResponse:
        """/static/{name}: the pages' scripts and styles (open to anyone, like the login page)."""
        name = request.match_info["name"]
        found = None
        if STATIC_NAME_RE.match(name):  # no pages: they have routes (and guards) of their own
            found = await self.files.response(request, STATIC_DIR / name)
        if found is None:
            raise error(web.HTTPNotFound, f"no static file {name[:40]!r}")
        return found

    async def vendor(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        path = VENDOR_FILES.get(name)
        if path is None:
            raise error(web.HTTPNotFound, f"no vendored file {name[:40]!r}")
        found = await self.files.response(request, path)
        if found is None:
            raise error(
                web.HTTPServiceUnavailable,
                f"{name} is not installed: run tools/bootstrap.sh (npm ci) first",
            )
        return found

    async def hub_info(self, request: web.Request) -> web.Response:
        """A short-lived MQTT token scoped to the caller's role (or to a Bearer token's own
        scope) and the topic templates; the page connects to ws(s)://<its origin>/mqtt."""
        principal = principal_of(request)
        claims = self.auth.token_for(principal, PAGE_TOKEN_TTL_S)
        return web.json_response(
            {
                "ws_path": MQTT_PATH,
                "username": TOKEN_USERNAME,
                "token": create_token(self.auth.key, claims),
                "token_expires": int(claims.expires),
                "role": principal.role,
                "name": principal.name,
                "topics": TOPICS,
                # what one MQTT session may subscribe to: pages size their SUBSCRIBEs by it
                "limits": self.mqtt_limits,
            }
        )

    async def mqtt(self, request: web.Request) -> web.StreamResponse:
        """MQTT over WebSocket: clients log in inside MQTT (a token or a device's secret);
        the console's cookie authenticates nothing here."""
        # No permessage-deflate (aiohttp's default accepts a browser's offer): a zlib stream
        # each way is about 300 KB a tab, and compressing every frame costs the event loop
        # that delivers the fleet's readings CPU for packets of a few dozen bytes.
        ws = web.WebSocketResponse(protocols=("mqtt",), autoping=True, compress=False)
        if not ws.can_prepare(request).ok:
            raise error(
                web.HTTPBadRequest, "this is the MQTT-over-WebSocket endpoint: upgrade required"
            )
        await ws.prepare(request)
        await self.broker.serve_websocket(ws, request)
        if not ws.closed:
            await ws.close()
        return ws


@web.middleware
async def server_timing(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Adds ``Server-Timing: app;dur=<ms>`` (the guard and the handler; a handler may name its
    own parts before it): a page's Resource Timing then tells the hub's work from the time the
    request waited for the event loop (the console benchmark prints both)."""
    started = time.perf_counter()
    response = await handler(request)
    if not response.prepared:  # a WebSocket is answered long before its handler returns
        spent = f"app;dur={(time.perf_counter() - started) * 1000:.1f}"
        parts = response.headers.get("Server-Timing")
        response.headers["Server-Timing"] = f"{parts}, {spent}" if parts else spent
    return response


async def _not_running(request: web.Request) -> web.StreamResponse:
    raise error(web.HTTPServiceUnavailable, "not available: this part of the hub is not running")


def build_app(
    broker: Broker,
    auth: Auth,
    api: Api,
    manage: Manage,
    mqtt_limits: Mapping[str, int],
    integrations: dict[str, Any] | None = None,
) -> web.Application:
    """``integrations``: the "metrics" (hub.metrics.Metrics) and "routes" (hub.routes.api)
    parts; a route of a part that is missing answers 503."""
    app = web.Application(middlewares=[server_timing, json_errors], client_max_size=MAX_BODY)
    app.on_response_prepare.append(add_security_headers)
    parts: dict[str, Any] = {
        "pages": Pages(broker, auth, mqtt_limits),
        "auth": auth,
        "api": api,
        "manage": manage,
        "fleet": api.fleet,
        "alarms": api.alarms,
        **(integrations or {}),
    }
    pages = parts["pages"]
    metrics = parts.get("metrics")
    for route in ROUTES:
        part, method = route.handler.split(".")
        access = route.access
        if part == "metrics" and getattr(metrics, "public", False):
            access = A.OPEN  # metrics_public: Prometheus scrapes without a token
        target = getattr(parts[part], method) if part in parts else _not_running
        handler = auth.guard(access, target)
        app.router.add_route(route.method, route.path, handler)
    app.router.add_get("/static/{name}", pages.static)  # open: no guard

    async def warm(_: web.Application) -> None:
        """The console's files and the fleet's copy of the registry, read (and gzipped)
        before the first console asks for them: then a console opened while the hub is busy
        waits for neither."""
        try:
            found = await asyncio.to_thread(lambda: sorted(STATIC_DIR.iterdir()))
            for path in [*found, *VENDOR_FILES.values()]:
                await pages.files.get(path)
            await api.fleet.registered()
        except Exception as exc:  # each is read again when asked for; nothing is lost
            log.warning("could not read the console's files or the registry ahead: %s", exc)

    warming: list[asyncio.Task[None]] = []

    async def start_warming(_: web.Application) -> None:
        warming.append(asyncio.create_task(warm(app)))

    async def cleanup(_: web.Application) -> None:
        for task in warming:
            task.cancel()
        auth.close()

    app.on_startup.append(start_warming)
    app.on_cleanup.append(cleanup)
    return app
