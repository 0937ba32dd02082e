"""HTTP and WebSocket ports under attack: slowloris and idle sockets are closed, one address
cannot take every connection, oversized bodies get 413 JSON, and devices still connect over
MQTT while an attacker holds sockets or the hub runs out of file descriptors."""

from __future__ import annotations

import asyncio
import contextlib
import json
import resource
import select
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.hubproc import HubProcess, scaled, start_hub
from tests.support.mqtt import RawClient
from tests.support.waits import eventually_async

TIMEOUT_S = 1.0  # the hub's header, body and idle timeouts in these tests
PER_ADDRESS = 4


def _limited_hub(tmp_path: Path, timeout: float, *extra: str) -> HubProcess:
    """A hub with the given HTTP timeouts, a small per-address cap and small bodies, serving
    HTTP and WebSocket on separate ports; its log goes to hub.log."""
    logs = (tmp_path / "hub.log").open("w")
    process = start_hub(
        tmp_path / "data",
        "--http-port",
        "0",
        "--http-header-timeout",
        str(timeout),
        "--http-body-timeout",
        str(timeout),
        "--http-idle-timeout",
        str(timeout),
        "--http-max-per-address",
        str(PER_ADDRESS),
        "--http-max-body",
        "1000",
        "--log-level",
        "INFO",
        *extra,
        stderr=logs,
    )
    assert process.http_port != process.ws_port
    return process


@pytest.fixture
def hub(tmp_path: Path) -> Iterator[HubProcess]:
    """A limited hub with timeouts of TIMEOUT_S."""
    process = _limited_hub(tmp_path, TIMEOUT_S)
    yield process
    process.stop()


def _connect(hub: HubProcess, port: int, source: str = "127.0.0.1") -> socket.socket:
    sock = socket.create_connection((hub.host, port), timeout=5, source_address=(source, 0))
    return sock


def _closed_within(sock: socket.socket, seconds: float, trickle: bytes = b"") -> float:
    """Reads (sending ``trickle`` every 0.2 s) until the hub closes; returns how long it took."""
    start = time.monotonic()
    sock.settimeout(0.2)
    while time.monotonic() - start < seconds:
        try:
            if trickle:
                sock.sendall(trickle)
            data = sock.recv(4096)
        except TimeoutError:
            continue
        except (ConnectionResetError, BrokenPipeError):
            return time.monotonic() - start
        if not data:
            return time.monotonic() - start
    raise AssertionError(f"the hub kept the connection open for {seconds:.1f} s")


def _request(sock: socket.socket, raw: bytes) -> tuple[int, bytes]:
    """Sends a request and reads one response (status, body)."""
    sock.settimeout(5)
    sock.sendall(raw)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(4096)
        assert chunk, f"closed without a response: {data!r}"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    while len(body) < length:
        chunk = sock.recv(4096)
        if not chunk:
            break
        body += chunk
    return int(head.split(b" ")[1]), body


def _websocket_upgrade(sock: socket.socket) -> None:
    status, _ = _request(
        sock,
        b"GET /mqtt HTTP/1.1\r\nHost: hub\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
        b"Sec-WebSocket-Protocol: mqtt\r\n\r\n",
    )
    assert status == 101


def test_slowloris_and_idle_connections_are_closed_on_both_ports(hub: HubProcess) -> None:
    """A socket that sends nothing, one that trickles headers, and an idle keep-alive
    connection are each closed after the configured timeout, on the HTTP and WebSocket ports."""
    bound = scaled(TIMEOUT_S + 2)
    for port in (hub.http_port, hub.ws_port):
        with _connect(hub, port) as silent:
            assert _closed_within(silent, bound) >= TIMEOUT_S - 0.2
        with _connect(hub, port) as slow:
            slow.sendall(b"GET /login HTTP/1.1\r\nHost: hub\r\n")
            assert _closed_within(slow, bound, trickle=b"X-Slow: 1\r\n") >= TIMEOUT_S - 0.2
        with _connect(hub, port) as keepalive:
            status, body = _request(keepalive, b"GET /login HTTP/1.1\r\nHost: hub\r\n\r\n")
            assert status == 200 and b"<form" in body  # the login page, open to anyone
            assert _closed_within(keepalive, bound) >= TIMEOUT_S - 0.2
        with _connect(hub, port) as slow_body:
            slow_body.sendall(
                b"POST /api/devices/x/commands HTTP/1.1\r\nHost: hub\r\nContent-Length: 100\r\n"
                b"Content-Type: application/json\r\n\r\n{"
            )
            assert _closed_within(slow_body, bound, trickle=b" ") >= TIMEOUT_S - 0.2


def test_one_address_cannot_take_every_connection(hub: HubProcess) -> None:
    """Idle WebSocket upgrades count against the per-address cap: the next connection from that
    address gets a 503 JSON answer and is closed, while another address still gets in."""
    with contextlib.ExitStack() as stack:
        for _ in range(PER_ADDRESS):
            ws = stack.enter_context(_connect(hub, hub.ws_port, "127.0.0.2"))
            _websocket_upgrade(ws)
        with _connect(hub, hub.ws_port, "127.0.0.2") as refused:
            status, body = _request(refused, b"GET /login HTTP/1.1\r\nHost: hub\r\n\r\n")
            assert status == 503
            assert "too many connections from your address" in json.loads(body)["error"]
        with _connect(hub, hub.ws_port, "127.0.0.3") as other:
            status, _ = _request(other, b"GET /login HTTP/1.1\r\nHost: hub\r\n\r\n")
            assert status == 200


def test_oversized_and_chunked_bodies_are_refused_with_json(hub: HubProcess) -> None:
    """A body over --http-max-body gets 413, a chunked one 411, a bad Content-Length 400 and
    oversized headers 431, each with a JSON error, before any of it is read; a request under
    the limits and the next one on the same connection are answered."""
    head = b"POST /api/devices/x/commands HTTP/1.1\r\nHost: hub\r\n"
    with _connect(hub, hub.http_port) as sock:
        status, body = _request(sock, head + b"Content-Length: 5000\r\n\r\n")
        assert status == 413
        assert json.loads(body)["error"] == "request body of 5000 bytes: at most 1000"
    with _connect(hub, hub.http_port) as sock:
        status, body = _request(sock, head + b"Transfer-Encoding: chunked\r\n\r\n")
        assert status == 411 and "Content-Length" in json.loads(body)["error"]
    with _connect(hub, hub.http_port) as sock:
        status, body = _request(sock, head + b"Content-Length: lots\r\n\r\n")
        assert status == 400 and "Content-Length" in json.loads(body)["error"]
    with _connect(hub, hub.http_port) as sock:
        status, body = _request(sock, head + b"X-Big: " + b"a" * 20_000 + b"\r\n\r\n")
        assert status == 431 and "headers over" in json.loads(body)["error"]
    with _connect(hub, hub.http_port) as sock:  # under the limit: the API answers (no token)
        status, _ = _request(sock, head + b"Content-Length: 2\r\n\r\n{}")
        assert status == 401
        # Pipelined after a body: the next request is followed, and answered, too.
        status, _ = _request(sock, b"GET /login HTTP/1.1\r\nHost: hub\r\n\r\n")
        assert status == 200


def test_devices_connect_while_sockets_are_held_and_descriptors_run_out(tmp_path: Path) -> None:
    """With the hub's open-file limit lowered to 128, an attacker holding idle sockets from
    many addresses fills only the HTTP/WebSocket share (a quarter), so a device still connects
    over MQTT; a flood that exhausts descriptors on the MQTT port is logged a few times (no
    tracebacks) and devices connect again once it ends."""
    hub = _limited_hub(tmp_path, 30.0)  # the attacker's sockets are not timed out meanwhile
    try:
        _hold_and_flood(hub)
    finally:
        hub.stop()
    log = (tmp_path / "hub.log").read_text()
    assert "Traceback" not in log
    accept_errors = log.count("cannot accept connections")
    assert 1 <= accept_errors <= 3, log[-3000:]


def _refusals(socks: list[socket.socket], enough: int, limit: float) -> int:
    """How many of ``socks`` were answered 503 within ``limit`` seconds, counting until
    ``enough`` were (the hub answers them as it accepts them, a batch per loop pass)."""
    pending, refused = list(socks), 0
    deadline = time.monotonic() + limit
    while pending and refused < enough and (left := deadline - time.monotonic()) > 0:
        readable, _, _ = select.select(pending, [], [], left)
        for sock in readable:
            pending.remove(sock)
            with contextlib.suppress(OSError):
                refused += sock.recv(64).startswith(b"HTTP/1.1 503")
    return refused


def _hold_and_flood(hub: HubProcess) -> None:
    resource.prlimit(hub.proc.pid, resource.RLIMIT_NOFILE, (128, 128))

    async def device_connects(name: str) -> None:
        client = await RawClient.tcp(hub.host, hub.mqtt_port)
        assert await client.connect(name) == (False, 0)
        await client.close()

    with contextlib.ExitStack() as stack:
        held = [
            stack.enter_context(_connect(hub, hub.ws_port, f"127.0.1.{n}"))
            for n in range(1, 31)
            for _ in range(PER_ADDRESS)
        ]
        # 120 sockets: with the hub's own ~20 descriptors, more than its 128 if all were kept.
        asyncio.run(device_connects("while-held"))
        refused = _refusals(held, enough=len(held) - 32, limit=scaled(3))
        assert refused >= len(held) - 32  # the hub kept at most a quarter of 128
    flood: list[socket.socket] = []
    try:
        for _ in range(150):  # more descriptors than the hub has left
            flood.append(_connect(hub, hub.mqtt_port))
        time.sleep(scaled(2))  # on purpose: the hub runs out of descriptors for a while
    finally:
        for sock in flood:
            sock.close()

    async def connects() -> bool:
        try:
            await asyncio.wait_for(device_connects("after-flood"), scaled(2))
        except (TimeoutError, OSError) as exc:
            raise AssertionError(f"{type(exc).__name__}: {exc}") from exc
        return True

    asyncio.run(eventually_async(connects, 5, "a device to connect after the flood", poll=0.2))
