"""Every response's security headers, and errors as JSON (never a 500 page).

The Content-Security-Policy allows scripts, styles, fonts and images from the hub only, no
inline script or style, and WebSocket connections to the hub's own origin (ws and wss), so
that a device's message that slips into markup cannot run.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Awaitable, Callable

from aiohttp import web

log = logging.getLogger(__name__)

_HOST_RE = re.compile(r"^(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9.-]+)(:[0-9]{1,5})?$")
_STATIC = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}


def content_security_policy(host: str) -> str:
    """The policy for a page the browser loaded from ``host`` (the Host header)."""
    connect = "'self'"
    if _HOST_RE.match(host):
        connect += f" ws://{host} wss://{host}"
    return (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        f"connect-src {connect}; font-src 'self'; base-uri 'none'; form-action 'self'; "
        "object-src 'none'; frame-ancestors 'none'"
    )


async def add_security_headers(request: web.Request, response: web.StreamResponse) -> None:
    """on_response_prepare: static files, errors and WebSocket handshakes included."""
    response.headers["Content-Security-Policy"] = content_security_policy(request.host)
    response.headers.update(_STATIC)
    if request.path.startswith("/api/"):
        response.headers["Cache-Control"] = "no-store"


def _json_error(exc: web.HTTPException) -> web.Response:
    if exc.content_type == "application/json":
        try:
            if "error" in json.loads(exc.text or ""):
                return _as_response(exc, exc.text or "")
        except ValueError:
            pass
    message = (exc.text or exc.reason or "error").strip()
    message = re.sub(r"^\d{3}: ", "", message)
    return _as_response(exc, json.dumps({"error": message}))


def _as_response(exc: web.HTTPException, body: str) -> web.Response:
    response = web.Response(status=exc.status, text=body, content_type="application/json")
    for name, value in exc.headers.items():
        if name.lower() not in ("content-type", "content-length"):
            response.headers[name] = value
    return response


@web.middleware
async def json_errors(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Turns every error into ``{"error": ...}`` with its status; an unexpected exception is
    logged and answered with a JSON 500 (a bug: tests send hostile input to every route)."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return _json_error(exc)
    except Exception:
        log.exception("unexpected error serving %s %s", request.method, request.path)
        return web.json_response({"error": "internal error"}, status=500)
