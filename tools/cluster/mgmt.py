"""The few calls the launcher makes to RabbitMQ's management API (HTTP, basic auth)."""

from __future__ import annotations

import base64
import json
import urllib.request

from tools.cluster.nodes import HOST, Credentials


def get(port: int, path: str, admin: Credentials, timeout: float = 10) -> object:
    """GET http://HOST:port/path as the administrator; the decoded JSON answer."""
    token = base64.b64encode(f"{admin.user}:{admin.password}".encode()).decode()
    request = urllib.request.Request(
        f"http://{HOST}:{port}{path}", headers={"Authorization": f"Basic {token}"}
    )
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.load(response)


def send(port: int, method: str, path: str, admin: Credentials, body: object = None) -> None:
    """PUT or DELETE http://HOST:port/path as the administrator (a JSON body, if any)."""
    token = base64.b64encode(f"{admin.user}:{admin.password}".encode()).decode()
    request = urllib.request.Request(
        f"http://{HOST}:{port}{path}",
        data=None if body is None else json.dumps(body).encode(),
        method=method,
        headers={"Authorization": f"Basic {token}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        response.read()


def running_nodes(port: int, admin: Credentials) -> list[str]:
    """Names of the nodes the management API on port reports running, sorted."""
    nodes = get(port, "/api/nodes", admin)
    if not isinstance(nodes, list):
        raise ValueError(f"/api/nodes answered {nodes!r}")
    return sorted(n["name"] for n in nodes if n.get("running"))
