"""The hub's accept loop for every listening socket (MQTT, TLS, and the console's through
hub/web/guard.py), in place of ``loop.create_server``'s.

Two things asyncio's own loop does not do:

- **It survives running out of file descriptors.** asyncio 3.11 goes on calling ``accept()`` up
  to ``backlog`` times after EMFILE, logs a traceback for each and schedules as many retries
  (the flood in issue #13: 385,654 tracebacks in 55 s). Here an accept error pauses accepting
  on that socket for ACCEPT_PAUSE_S and is logged at most every ERROR_LOG_EVERY_S.
- **No task per plain connection.** ``loop.connect_accepted_socket`` is a coroutine, so each
  accepted socket would cost a task, a waiter future and two loop passes (8 % of a CONNECT's
  CPU in a reconnect storm, BENCHMARKS.md session 4). A plain TCP socket is handed to the
  selector loop's transport factory directly, as asyncio's own accept loop does
  (``BaseSelectorEventLoop._accept_connection2``); TLS sockets, and loops without that factory,
  keep the coroutine (the handshake needs it).
"""

from __future__ import annotations

import asyncio
import errno
import logging
import socket
import ssl
import time
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)

ACCEPT_BATCH = 256  # connections accepted per readiness event, as asyncio's backlog loop
ACCEPT_PAUSE_S = 0.5
ERROR_LOG_EVERY_S = 5.0
_OUT_OF_RESOURCES = (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM)


class Acceptor(asyncio.AbstractServer):
    """Accepts connections on a listening socket for a protocol factory, as
    ``loop.create_server`` does, and pauses briefly when the process is out of descriptors."""

    def __init__(
        self,
        factory: Callable[[], asyncio.BaseProtocol],
        sock: socket.socket,
        *,
        ssl_context: ssl.SSLContext | None = None,
        handshake_timeout: float = 60.0,
        name: str = "",
        on_error: Callable[[], None] | None = None,
    ) -> None:
        self._loop = asyncio.get_running_loop()
        self._handshake_timeout = handshake_timeout
        self._factory = factory
        self._sock = sock
        self._ssl = ssl_context
        host, port = sock.getsockname()[:2]
        self._name = name or f"{host}:{port}"
        self._on_error = on_error
        self._closed = False
        self._errors = 0
        self._logged = -ERROR_LOG_EVERY_S
        self._resume: asyncio.TimerHandle | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        # asyncio's selector loops make a socket's transport without a coroutine (private,
        # stable since 3.4; uvloop has none): plain connections skip the task.
        self._make_transport = (
            None if ssl_context else getattr(self._loop, "_make_socket_transport", None)
        )
        sock.setblocking(False)
        self._loop.add_reader(sock.fileno(), self._accept)

    def _accept(self) -> None:
        for _ in range(ACCEPT_BATCH):
            try:
                conn, address = self._sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except ConnectionAbortedError:
                continue
            except OSError as exc:
                self._accept_failed(exc)
                return
            conn.setblocking(False)
            if self._make_transport is not None:
                self._plain(conn, address)
                continue
            task = self._loop.create_task(self._connect(conn))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    def _plain(self, conn: socket.socket, address: Any) -> None:
        """A plain connection's transport and protocol, as asyncio's accept loop makes them
        (the protocol's ``connection_made`` runs on the next loop pass)."""
        try:
            protocol = self._factory()
            assert self._make_transport is not None
            self._make_transport(conn, protocol, extra={"peername": address})
        except Exception:  # the protocol factory failed: this connection only
            log.exception("connection on %s could not start", self._name)
            conn.close()

    async def _connect(self, conn: socket.socket) -> None:
        try:
            await self._loop.connect_accepted_socket(
                self._factory,
                conn,
                ssl=self._ssl,
                ssl_handshake_timeout=self._handshake_timeout if self._ssl else None,
            )
        except (TimeoutError, OSError, ssl.SSLError, EOFError) as exc:
            log.debug("connection on %s failed before it started: %s", self._name, exc)
            conn.close()

    def _accept_failed(self, exc: OSError) -> None:
        self._errors += 1
        if self._on_error is not None:
            self._on_error()
        now = time.monotonic()
        if now - self._logged >= ERROR_LOG_EVERY_S:
            self._logged = now
            hint = " (out of file descriptors?)" if exc.errno in _OUT_OF_RESOURCES else ""
            log.error(
                "cannot accept connections on %s: %s%s; %d accept errors so far, pausing %.1f s",
                self._name,
                exc.strerror or exc,
                hint,
                self._errors,
                ACCEPT_PAUSE_S,
            )
        self._loop.remove_reader(self._sock.fileno())
        self._resume = self._loop.call_later(ACCEPT_PAUSE_S, self._start_again)

    def _start_again(self) -> None:
        self._resume = None
        if not self._closed:
            self._loop.add_reader(self._sock.fileno(), self._accept)

    # --- asyncio.AbstractServer ------------------------------------------------------------
    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._resume is not None:
            self._resume.cancel()
        else:
            self._loop.remove_reader(self._sock.fileno())
        self._sock.close()

    async def wait_closed(self) -> None:
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    def get_loop(self) -> asyncio.AbstractEventLoop:
        return self._loop

    def is_serving(self) -> bool:
        return not self._closed

    async def start_serving(self) -> None:
        return None

    async def serve_forever(self) -> None:
        raise NotImplementedError
