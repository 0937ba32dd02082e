"""Limits on the HTTP and WebSocket ports, and an accept loop that survives running out of file
descriptors (for every listener, MQTT's included).

A :class:`GuardedProtocol` sits in front of aiohttp's protocol for each connection: it counts
connections per address and in all (a connection over either cap gets a 503 and is closed, so
file descriptors stay in reserve for devices on the MQTT port), closes a connection whose
request headers are not complete within ``header_timeout`` (slowloris; an idle connection that
never sends a request included) or whose body does not arrive within ``body_timeout``, and
answers 413 (body), 431 (headers) or 411 (chunked body) with a JSON message without reading
the excess. Idle keep-alive connections are aiohttp's (``keepalive_timeout``, see
``handler_args``). An upgraded WebSocket is left to the broker (10 s to CONNECT, keepalive).

:class:`GuardedSite` serves aiohttp through the hub's accept loop (hub/acceptor.py).
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import resource
import socket
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, cast

from aiohttp import web

from hub.acceptor import ERROR_LOG_EVERY_S, Acceptor

log = logging.getLogger(__name__)

_HEADER_END = b"\r\n\r\n"
_LENGTH = re.compile(rb"\r\ncontent-length:[ \t]*([^\r]*)", re.IGNORECASE)
_CHUNKED = re.compile(rb"\r\ntransfer-encoding:[^\r]*chunked", re.IGNORECASE)
_UPGRADE = re.compile(rb"\r\nupgrade:[ \t]*websocket", re.IGNORECASE)

# Connection states of GuardedProtocol.
_HEADERS, _BODY, _IDLE, _PASS, _CLOSED = range(5)


@dataclass(frozen=True)
class GuardSettings:
    header_timeout: float = 10.0  # s from a request's first byte (or the connect) to its headers
    body_timeout: float = 30.0  # s from the end of the headers to the end of the body
    idle_timeout: float = 60.0  # s a keep-alive connection may wait for its next request
    max_body: int = 1024 * 1024  # bytes of a request body
    max_header_bytes: int = 16 * 1024
    max_per_address: int = 64  # connections at once from one address
    max_connections: int = 0  # on the HTTP/WebSocket ports together; 0: a quarter of the fd limit


@dataclass
class GuardStats:
    refused_address: int = 0
    refused_total: int = 0
    header_timeouts: int = 0
    body_timeouts: int = 0
    too_large: int = 0
    accept_errors: int = 0
    open: int = 0
    by_address: dict[str, int] = field(default_factory=dict)


def fd_limit() -> int:
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def _response(status: int, reason: str, message: str) -> bytes:
    body = json.dumps({"error": message}).encode()
    head = (
        f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    )
    return head.encode() + body


class Guard:
    """The limits and the counts shared by every guarded connection of a hub."""

    def __init__(self, settings: GuardSettings) -> None:
        self.settings = settings
        self.stats = GuardStats()
        self._logged: dict[str, float] = {}

    def max_connections(self) -> int:
        """The configured cap, or a quarter of the open-file limit (read each time, so a limit
        raised or lowered while the hub runs counts): the rest stays for MQTT and files."""
        return self.settings.max_connections or max(16, fd_limit() // 4)

    def admit(self, address: str) -> str | None:
        """Counts a new connection in, or returns why it is refused."""
        stats = self.stats
        if stats.open >= self.max_connections():
            stats.refused_total += 1
            self.warn("total", "HTTP/WebSocket connection refused: %d open (the cap)", stats.open)
            return "too many connections to the hub"
        held = stats.by_address.get(address, 0)
        if held >= self.settings.max_per_address:
            stats.refused_address += 1
            self.warn(
                "address",
                "HTTP/WebSocket connection from %s refused: %d open (the cap)",
                address,
                held,
            )
            return "too many connections from your address"
        stats.by_address[address] = held + 1
        stats.open += 1
        return None

    def release(self, address: str) -> None:
        stats = self.stats
        stats.open -= 1
        held = stats.by_address.get(address, 1) - 1
        if held > 0:
            stats.by_address[address] = held
        else:
            stats.by_address.pop(address, None)

    def warn(self, key: str, message: str, *args: object) -> None:
        """A warning at most every ERROR_LOG_EVERY_S per key: an attack never floods the log."""
        now = time.monotonic()
        if now - self._logged.get(key, -ERROR_LOG_EVERY_S) >= ERROR_LOG_EVERY_S:
            self._logged[key] = now
            log.warning(message, *args)

    def handler_args(self) -> dict[str, Any]:
        """aiohttp's own per-connection settings (web.AppRunner's keyword arguments)."""
        return {"keepalive_timeout": self.settings.idle_timeout}

    def protocol(self, inner: Callable[[], asyncio.Protocol]) -> Callable[[], asyncio.Protocol]:
        return lambda: GuardedProtocol(self, inner)


class GuardedProtocol(asyncio.Protocol):
    """One HTTP connection: limits checked here, everything else forwarded to aiohttp."""

    def __init__(self, guard: Guard, inner: Callable[[], asyncio.Protocol]) -> None:
        self._guard = guard
        self._make_inner = inner
        self._inner: asyncio.Protocol | None = None
        self._transport: asyncio.Transport | None = None
        self._address: str | None = None  # set once admitted
        self._state = _HEADERS
        self._head = bytearray()
        self._body_left = 0
        self._timer: asyncio.TimerHandle | None = None

    # --- asyncio's side ----------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)
        peer = transport.get_extra_info("peername")
        address = str(peer[0]) if peer else "?"
        refused = self._guard.admit(address)
        if refused is not None:
            self._state = _CLOSED
            self._transport.write(_response(503, "Service Unavailable", refused))
            self._transport.close()
            return
        self._address = address
        self._inner = self._make_inner()
        self._inner.connection_made(transport)
        self._arm(self._guard.settings.header_timeout)

    def data_received(self, data: bytes) -> None:
        if self._state != _PASS and not self._inspect(data):
            return
        if self._inner is not None:
            self._inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self._inner.eof_received() if self._inner is not None else None

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel()
        self._state = _CLOSED
        if self._address is not None:
            self._guard.release(self._address)
            self._address = None
        inner, self._inner = self._inner, None
        if inner is not None:
            inner.connection_lost(exc)

    def pause_writing(self) -> None:
        if self._inner is not None:
            self._inner.pause_writing()

    def resume_writing(self) -> None:
        if self._inner is not None:
            self._inner.resume_writing()

    # --- limits ------------------------------------------------------------------------------
    def _inspect(self, data: bytes) -> bool:
        """Follows request boundaries; False when the connection was refused (data dropped)."""
        settings = self._guard.settings
        pos = 0
        while pos < len(data) and self._state != _PASS:
            state = self._state
            if state == _CLOSED:
                return False
            if state == _IDLE:
                self._state = _HEADERS
                self._arm(settings.header_timeout)
            elif state == _BODY:
                taken = min(self._body_left, len(data) - pos)
                self._body_left -= taken
                pos += taken
                if not self._body_left:
                    self._state = _IDLE
                    self._cancel()
            else:
                before = len(self._head)
                self._head += data[pos : pos + settings.max_header_bytes + 4]
                end = self._head.find(_HEADER_END, max(0, before - 3))
                if end < 0:
                    if len(self._head) > settings.max_header_bytes:
                        return self._refuse(
                            431,
                            "Request Header Fields Too Large",
                            f"request headers over {settings.max_header_bytes} bytes",
                        )
                    return True
                pos += end + 4 - before
                head = bytes(self._head[: end + 2])
                self._head.clear()
                if not self._headers_done(head):
                    return False
        return True

    def _headers_done(self, head: bytes) -> bool:
        settings = self._guard.settings
        if _UPGRADE.search(head):
            self._state = _PASS  # a WebSocket: the broker's timeouts apply from here on
            self._cancel()
            return True
        if _CHUNKED.search(head):
            return self._refuse(411, "Length Required", "send the body with a Content-Length")
        match = _LENGTH.search(head)
        length = 0
        if match is not None:
            try:
                length = int(match.group(1).strip())
            except ValueError:
                return self._refuse(400, "Bad Request", "Content-Length is not a number")
        if length > settings.max_body:
            why = f"request body of {length} bytes: at most {settings.max_body}"
            return self._refuse(413, "Payload Too Large", why)
        if length > 0:
            self._state = _BODY
            self._body_left = length
            self._arm(settings.body_timeout)
        else:
            self._state = _IDLE
            self._cancel()
        return True

    def _refuse(self, status: int, reason: str, message: str) -> bool:
        self._guard.stats.too_large += status != 400
        self._guard.warn(str(status), "HTTP request refused (%d): %s", status, message)
        self._state = _CLOSED
        self._cancel()
        if self._transport is not None:
            self._transport.write(_response(status, reason, message))
            self._transport.close()
        return False

    def _arm(self, seconds: float) -> None:
        self._cancel()
        self._timer = asyncio.get_running_loop().call_later(seconds, self._timed_out)

    def _cancel(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _timed_out(self) -> None:
        self._timer = None
        stats = self._guard.stats
        if self._state == _BODY:
            stats.body_timeouts += 1
            what = "request body"
        else:
            stats.header_timeouts += 1
            what = "request headers"
        self._guard.warn(
            "timeout",
            "closing an HTTP connection from %s: %s not complete in time",
            self._address,
            what,
        )
        self._state = _CLOSED
        if self._transport is not None:
            self._transport.abort()


class GuardedSite(web.SockSite):
    """aiohttp's SockSite with the guard in front of each connection and the Acceptor's loop."""

    __slots__ = ("_guard",)

    def __init__(
        self,
        runner: web.BaseRunner,
        sock: socket.socket,
        guard: Guard,
        *,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        super().__init__(runner, sock, ssl_context=ssl_context)
        self._guard = guard

    async def start(self) -> None:
        await web.BaseSite.start(self)  # registers the site with its runner
        server = self._runner.server
        assert server is not None
        self._server = Acceptor(
            self._guard.protocol(cast(Callable[[], asyncio.Protocol], server)),
            self._sock,
            ssl_context=self._ssl_context,
            handshake_timeout=self._guard.settings.header_timeout,  # counted before admission
            name=self.name,
            on_error=self._count_error,
        )

    def _count_error(self) -> None:
        self._guard.stats.accept_errors += 1
