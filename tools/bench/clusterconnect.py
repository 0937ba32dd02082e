"""One CONNECT+SUBSCRIBE taken apart, for tools/bench/cluster.py: devices connect one at a
time to a node (no storm, no queueing) and each step is timed: TCP, CONNECT -> CONNACK (the
node asks the hub's auth backend ``/user`` and ``/vhost``), SUBSCRIBE -> SUBACK (``/resource``
four times and ``/topic`` once, then the subscription queue declared, and mirrored by the
hub's policy); with the CPU the nodes and the hubs spent per device, and the auth backend's
answer time asked directly (``/user``, as the nodes ask it: one kept-alive connection).
"""

from __future__ import annotations

import contextlib
import http.client
import os
import socket
import statistics
import time
import urllib.parse
from typing import Any

from tools.bench.mqtt import DISCONNECT, connect_packet, subscribe_packet

HOST = "127.0.0.1"


def cpu_seconds(pids: list[int]) -> float:
    """User and system CPU the processes have used so far."""
    ticks = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        ticks += int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


def _packet(s: socket.socket) -> tuple[int, bytes]:
    head = s.recv(1)
    if not head:
        raise ConnectionError("the node closed the connection")
    length, shift = 0, 0
    while True:
        byte = s.recv(1)[0]
        length |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            break
    body = b""
    while len(body) < length:
        chunk = s.recv(length - len(body))
        if not chunk:
            raise ConnectionError("the node closed the connection")
        body += chunk
    return head[0], body


def connect_once(
    port: int, ident: str, secret: str, qos: int = 1
) -> tuple[socket.socket, list[float]]:
    """A device's CONNECT and its SUBSCRIBE to d/<id>/c (at QoS 1 as the firmware does);
    returns the socket and the seconds of TCP, CONNACK and SUBACK."""
    t0 = time.monotonic()
    s = socket.create_connection((HOST, port), timeout=60)
    t1 = time.monotonic()
    s.sendall(connect_packet(ident, ident, secret, 60))
    kind, body = _packet(s)
    if kind != 0x20 or body[1] != 0:
        raise ConnectionError(f"CONNACK {body!r}")
    t2 = time.monotonic()
    s.sendall(subscribe_packet(1, [(f"d/{ident}/c", qos)]))
    kind, body = _packet(s)
    if kind != 0x90 or body[2] == 0x80:
        raise ConnectionError("subscription refused")
    return s, [t1 - t0, t2 - t1, time.monotonic() - t2]


def auth_answer_ms(auth_port: int, devices: list[list[str]]) -> float:
    """Median ms of the hub's answer to ``/user`` for these devices (not cached: each is a
    first login), over one kept-alive connection."""
    conn = http.client.HTTPConnection(HOST, auth_port, timeout=30)
    times = []
    try:
        for ident, secret in devices:
            form = {"username": ident, "password": secret, "client_id": ident, "vhost": "/"}
            t0 = time.monotonic()
            conn.request(
                "POST",
                "/user",
                urllib.parse.urlencode(form),
                {"Content-Type": "application/x-www-form-urlencoded"},
            )
            conn.getresponse().read()
            times.append(time.monotonic() - t0)
    finally:
        conn.close()
    return round(statistics.median(times) * 1000, 2)


def connect_parts(
    mqtt_port: int,
    devices: list[list[str]],
    node_pids: list[int],
    hub_pids: list[int],
) -> dict[str, Any]:
    """Connects ``devices`` one at a time to the node, then disconnects them."""
    node0, hub0, wall0 = cpu_seconds(node_pids), cpu_seconds(hub_pids), time.monotonic()
    socks, steps = [], []
    try:
        for ident, secret in devices:
            s, timed = connect_once(mqtt_port, ident, secret)
            socks.append(s)
            steps.append(timed)
        wall = time.monotonic() - wall0
        node1, hub1 = cpu_seconds(node_pids), cpu_seconds(hub_pids)
    finally:
        for s in socks:
            with contextlib.suppress(OSError):
                s.sendall(DISCONNECT)
            s.close()
    n = len(devices)

    def median_ms(k: int) -> float:
        return round(statistics.median(t[k] for t in steps) * 1000, 1)

    return {
        "devices": n,
        "per_s": round(n / wall, 1),
        "tcp_ms": median_ms(0),
        "connack_ms": median_ms(1),
        "suback_ms": median_ms(2),
        "node_cpu_ms": round((node1 - node0) / n * 1000, 1),
        "hub_cpu_ms": round((hub1 - hub0) / n * 1000, 1),
    }
