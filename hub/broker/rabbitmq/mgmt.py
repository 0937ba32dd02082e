"""The calls the hub makes to RabbitMQ's management API: node health, listeners, and closing a
client's connection. Each call tries the nodes' API URLs in turn, so a dead node is no outage."""

from __future__ import annotations

import base64
import logging
from typing import Any
from urllib.parse import quote

import aiohttp

log = logging.getLogger(__name__)

TIMEOUT_S = 3.0


class ManagementError(Exception):
    """No node's management API answered the call."""


class Management:
    def __init__(self, urls: tuple[str, ...], user: str, password: str) -> None:
        if not urls:
            raise ValueError("the management API needs at least one URL")
        self.urls = list(urls)
        token = base64.b64encode(f"{user}:{password}".encode()).decode()
        self._headers = {"Authorization": f"Basic {token}"}
        self._session: aiohttp.ClientSession | None = None

    async def _request(self, method: str, path: str, **kwargs: Any) -> tuple[int, Any]:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                headers=self._headers, timeout=aiohttp.ClientTimeout(total=TIMEOUT_S)
            )
        last = ""
        for i, url in enumerate(list(self.urls)):
            try:
                async with self._session.request(method, url + path, **kwargs) as response:
                    body = (
                        await response.json()
                        if response.content_type == "application/json"
                        else await response.text()
                    )
                    if i:  # the first that answered goes first next time
                        self.urls.remove(url)
                        self.urls.insert(0, url)
                    return response.status, body
            except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
                last = f"{url}: {exc or type(exc).__name__}"
        raise ManagementError(f"no management API answered {method} {path} ({last})")

    async def nodes(self) -> dict[str, bool]:
        """Each node's name -> whether the cluster reports it running."""
        status, body = await self._request("GET", "/api/nodes?columns=name,running")
        if status != 200 or not isinstance(body, list):
            raise ManagementError(f"GET /api/nodes answered {status}")
        return {str(n.get("name")): bool(n.get("running")) for n in body if isinstance(n, dict)}

    async def listeners(self) -> list[dict[str, Any]]:
        """Every node's listeners: {"node", "protocol", "ip_address", "port"}."""
        status, body = await self._request("GET", "/api/overview?columns=listeners")
        if status != 200 or not isinstance(body, dict):
            raise ManagementError(f"GET /api/overview answered {status}")
        return [x for x in body.get("listeners", []) if isinstance(x, dict)]

    async def connections(self) -> list[dict[str, Any]]:
        """Every client connection the cluster lists: name, node, user and client id."""
        path = "/api/connections?columns=name,node,user,client_properties,protocol"
        status, body = await self._request("GET", path)
        if status != 200 or not isinstance(body, list):
            raise ManagementError(f"GET /api/connections answered {status}")
        out = []
        for c in body:
            props = c.get("client_properties") if isinstance(c, dict) else None
            if isinstance(props, dict) and isinstance(props.get("client_id"), str):
                out.append(
                    {
                        "name": str(c.get("name")),
                        "node": str(c.get("node")),
                        "user": str(c.get("user")),
                        "client_id": props["client_id"],
                        "protocol": str(c.get("protocol")),
                    }
                )
        return out

    async def ensure_policy(
        self, vhost: str, name: str, body: dict[str, Any], kind: str = "policies"
    ) -> None:
        """Creates or updates a policy (PUT /api/policies/VHOST/NAME), or an operator policy
        (``kind="operator-policies"``: it applies beside a queue's policy)."""
        path = f"/api/{kind}/{quote(vhost, safe='')}/{quote(name, safe='')}"
        status, answer = await self._request("PUT", path, json=body)
        if status not in (200, 201, 204):
            raise ManagementError(f"PUT policy {name} answered {status}: {str(answer)[:200]}")

    async def close_connection(self, name: str, reason: str) -> bool:
        """Closes a client's connection by its name; False when the cluster does not know it
        (yet: connections reach the management API's statistics after a few seconds)."""
        path = "/api/connections/" + quote(name, safe="")
        status, _ = await self._request("DELETE", path, headers={"X-Reason": reason[:100]})
        if status in (200, 204):
            return True
        if status == 404:
            return False
        raise ManagementError(f"DELETE connection answered {status}")

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
