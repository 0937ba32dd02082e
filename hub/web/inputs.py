"""What the HTTP API accepts: JSON errors, JSON bodies and numeric query parameters.

Anything a client sends is hostile until checked here: a body that is not UTF-8, not JSON,
nested past the parser's depth, or of another content type gets a 4xx with a JSON message.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

from aiohttp import web

JSON_TYPES = ("application/json", "")  # "": no Content-Type (curl --data-binary, scripts)


def error(kind: type[web.HTTPException], message: str, **extra: Any) -> web.HTTPException:
    """An HTTP error whose body is ``{"error": message}`` (plus ``extra`` fields)."""
    body = json.dumps({"error": message, **extra})
    return kind(text=body, content_type="application/json")


async def json_object(request: web.Request) -> dict[str, Any]:
    """The request body as a JSON object, or a 4xx error that says what is wrong."""
    ctype = request.headers.get("Content-Type", "").split(";")[0].strip().lower()
    if ctype not in JSON_TYPES and not ctype.endswith("+json"):
        raise error(
            web.HTTPUnsupportedMediaType, "send the body as Content-Type: application/json"
        )
    raw = await request.read()  # bounded by the application's client_max_size (413)
    try:
        body = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise error(web.HTTPBadRequest, "the body is not UTF-8") from None
    except RecursionError:
        raise error(web.HTTPBadRequest, "the body is nested too deeply") from None
    except ValueError:
        raise error(web.HTTPBadRequest, "the body is not JSON") from None
    if not isinstance(body, dict):
        raise error(web.HTTPBadRequest, "the body must be a JSON object")
    return body


def text_field(body: Mapping[str, Any], name: str, limit: int = 256) -> str:
    value = body.get(name)
    if not isinstance(value, str) or not value or len(value) > limit:
        raise error(web.HTTPBadRequest, f'"{name}" must be a string of 1 to {limit} characters')
    return value


def number(query: Mapping[str, str], name: str) -> float | None:
    """A finite number from the query string, None when absent."""
    text = query.get(name)
    if text is None:
        return None
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise error(web.HTTPBadRequest, f"{name} must be a number, not {text[:40]!r}")
    return value
