"""The hub's HTTP API as the tools use it: is a device online, and with which boot."""

from __future__ import annotations

import json
import os
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from hub.security import KEY_FILE, TokenClaims, TokenError, create_token, load_key
from tools.errors import ToolError

DEFAULT_HTTP_PORT = 8080  # hub serve's --ws-port, which also serves HTTP by default
REQUEST_TIMEOUT_S = 5.0
TOKEN_TTL_S = 600


class HubApiError(ToolError):
    """The hub's HTTP API cannot be reached, or refused the request."""


def default_url(host: str) -> str:
    host = f"[{host}]" if ":" in host else host
    return f"http://{host}:{DEFAULT_HTTP_PORT}"


class HubApi:
    def __init__(self, url: str, token: str) -> None:
        self.url = url.rstrip("/")
        self.token = token

    def devices(self) -> list[dict[str, Any]]:
        """`GET /api/devices`: every device the token may read."""
        request = urllib.request.Request(
            f"{self.url}/api/devices", headers={"Authorization": f"Bearer {self.token}"}
        )
        try:
            with urllib.request.urlopen(request, timeout=REQUEST_TIMEOUT_S) as response:
                rows = json.loads(response.read())
        except urllib.error.HTTPError as exc:
            if exc.code in (401, 403):
                raise HubApiError(
                    f"the hub at {self.url} refused the API token ({exc.code})"
                ) from None
            raise HubApiError(f"the hub at {self.url} answered {exc.code}") from None
        except (OSError, ValueError) as exc:
            raise HubApiError(
                f"cannot reach the hub's HTTP API at {self.url} (--api): {exc}"
            ) from None
        if not isinstance(rows, list):
            raise HubApiError(f"{self.url}/api/devices did not answer with a list")
        return [row for row in rows if isinstance(row, dict)]

    def device(self, device: str) -> dict[str, Any] | None:
        return next((row for row in self.devices() if row.get("id") == device), None)


def boot_of(row: dict[str, Any] | None) -> str | None:
    """The boot id in a device's health, as the hub last saw it."""
    health = (row or {}).get("health")
    boot = health.get("boot") if isinstance(health, dict) else None
    return boot if isinstance(boot, str) else None


def make_token(data_dir: Path | None, device: str, token: str | None) -> str:
    """--token, else HUB_TOKEN, else a short-lived read token for the device made with the hub's
    key in data_dir."""
    token = token or os.environ.get("HUB_TOKEN")
    if token:
        return token
    if data_dir is None:
        raise HubApiError("give --data-dir (the hub's) or --token to see the device come online")
    if not (data_dir / KEY_FILE).is_file():  # load_key would make one, which no hub knows
        raise HubApiError(
            f"no hub key in {data_dir} (is --data-dir the hub's data dir?): give --token instead"
        )
    claims = TokenClaims(subscribe=(f"d/{device}/t/+",), expires=time.time() + TOKEN_TTL_S)
    try:
        return create_token(load_key(data_dir), claims)
    except TokenError as exc:
        raise HubApiError(str(exc)) from None
