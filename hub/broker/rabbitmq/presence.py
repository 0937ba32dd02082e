"""Who is connected to which node, from the cluster's event exchange (`amq.rabbitmq.event`).

Plain logic, no I/O. ``connection.created`` names the client (its id only inside
``variable_map``, printed as an Erlang term), ``connection.closed`` only the connection's name,
node and pid: it is matched by pid. A node that crashes sends no ``connection.closed`` for its
clients: once the management API reports it down for ``grace`` seconds, each of its clients
that has not connected again elsewhere is reported lost (``node_lost``).
"""

from __future__ import annotations

import re
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

MAX_CONNECTIONS = 500_000  # connections remembered; the oldest are forgotten past it
_CLIENT_ID = re.compile(r'<<"client_id">>\s*=>\s*<<"((?:[^"\\]|\\.)*)">>')
_TUPLE = re.compile(r"^\{([0-9, ]+)\}$")


@dataclass
class Conn:
    client_id: str
    user: str
    name: str  # "IP:PORT -> IP:PORT": what the management API closes a connection by
    pid: str
    node: str
    network: str  # "mqtt" or "ws"
    peer: str


def _text(value: Any) -> str:
    if isinstance(value, bytes | bytearray):
        return bytes(value).decode("utf-8", "replace")
    return "" if value is None else str(value)


def _host(value: Any) -> str:
    text = _text(value)
    match = _TUPLE.match(text)
    if match is None:
        return text
    parts = [int(p) for p in match.group(1).split(",")]
    if len(parts) == 4:
        return ".".join(map(str, parts))
    return ":".join(f"{p:x}" for p in parts)


def connection(headers: dict[str, Any]) -> Conn | None:
    """The MQTT client a ``connection.created`` event describes, or None (AMQP, the hub)."""
    protocol = _text(headers.get("protocol"))
    if "MQTT" not in protocol:
        return None
    match = _CLIENT_ID.search(_text(headers.get("variable_map")))
    if match is None:
        return None
    return Conn(
        client_id=match.group(1)[:256],
        user=_text(headers.get("user"))[:256],
        name=_text(headers.get("name"))[:256],
        pid=_text(headers.get("pid"))[:256],
        node=_text(headers.get("node"))[:256],
        network="ws" if "Web MQTT" in protocol else "mqtt",
        peer=f"{_host(headers.get('peer_host'))}:{_text(headers.get('peer_port'))}"[:300],
    )


class Presence:
    """The connected MQTT clients, by client id and by connection pid."""

    def __init__(self) -> None:
        self.by_client: dict[str, Conn] = {}
        self._by_pid: OrderedDict[str, Conn] = OrderedDict()
        self._by_name: dict[str, Conn] = {}  # a connection learnt from the management API
        self._down: dict[str, float] = {}  # node -> when it was first seen down
        # client id -> the node of a connection replaced by one elsewhere with no close
        # event between (a crashed node's client that reconnected, or a take-over)
        self.moved: OrderedDict[str, str] = OrderedDict()

    def created(self, conn: Conn) -> Conn | None:
        """Records a new connection; returns the one it replaced for the same client id (a
        take-over, or a reconnect after a node was lost), if any."""
        old = self.by_client.get(conn.client_id)
        if old is not None:
            self._by_pid.pop(old.pid, None)
            self._by_name.pop(old.name, None)
            if old.node != conn.node:
                self.moved[conn.client_id] = old.node
                self.moved.move_to_end(conn.client_id)
                while len(self.moved) > MAX_CONNECTIONS:
                    self.moved.popitem(last=False)
        self.by_client[conn.client_id] = conn
        if conn.pid:
            self._by_pid[conn.pid] = conn
        else:
            self._by_name[conn.name] = conn
        while len(self._by_pid) > MAX_CONNECTIONS:
            _, gone = self._by_pid.popitem(last=False)
            if self.by_client.get(gone.client_id) is gone:
                del self.by_client[gone.client_id]
        return old

    def closed(self, pid: str, name: str = "") -> Conn | None:
        """The client whose current connection this was (by pid, or by name for one learnt
        from the management API), removed; None for a connection that was replaced already or
        is not an MQTT client's."""
        conn = self._by_pid.pop(pid, None) or self._by_name.pop(name, None)
        if conn is None or self.by_client.get(conn.client_id) is not conn:
            return None
        del self.by_client[conn.client_id]
        return conn

    def nodes(self, running: dict[str, bool], now: float) -> list[str]:
        """The management API's node health: remembers since when each node is down; returns
        the nodes newly seen down."""
        newly = []
        for node, up in running.items():
            if up:
                self._down.pop(node, None)
            elif node not in self._down:
                self._down[node] = now
                newly.append(node)
        return newly

    def clients_of(self, node: str) -> list[Conn]:
        """The clients whose connection is, or was until they connected elsewhere, on
        ``node`` (for those moved, their connection now; their move is forgotten)."""
        found = [c for c in self.by_client.values() if c.node == node]
        for cid in [cid for cid, was in self.moved.items() if was == node]:
            del self.moved[cid]
            if cid in self.by_client:
                found.append(self.by_client[cid])
        return found

    def lost(self, now: float, grace: float) -> list[Conn]:
        """The clients of nodes down for at least ``grace`` seconds, removed: they did not
        connect again elsewhere in time."""
        dead = {node for node, since in self._down.items() if now - since >= grace}
        if not dead:
            return []
        gone = [c for c in self.by_client.values() if c.node in dead]
        for conn in gone:
            del self.by_client[conn.client_id]
            self._by_pid.pop(conn.pid, None)
            self._by_name.pop(conn.name, None)
        return gone

    def running(self, node: str) -> bool:
        return node not in self._down
