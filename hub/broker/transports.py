"""The networks a connection's bytes travel on: TCP (asyncio protocol) and WebSocket (aiohttp).

Both push what they read into a :class:`Receiver` (the broker's Connection) and take its
writes. A TCP connection costs no task and no stream objects: asyncio calls ``data_received``
directly, so an idle device is a socket, an asyncio transport and two small slotted objects.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import struct
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol, cast

if TYPE_CHECKING:  # aiohttp loads with the web side, after the MQTT listener is up
    from aiohttp import web

log = logging.getLogger(__name__)


class Receiver(Protocol):
    """What a link feeds: the broker side of one connection."""

    def data_received(self, data: bytes) -> None: ...

    def connection_lost(self) -> None: ...


class Link:
    """What a connection needs from its network."""

    __slots__ = ()
    network = "?"
    peer: tuple[str, int]

    def write(self, data: bytes) -> None:
        raise NotImplementedError

    def buffered(self) -> int:
        """Bytes written but not yet handed to the kernel."""
        raise NotImplementedError

    def pause_reading(self) -> None:
        raise NotImplementedError

    def resume_reading(self) -> None:
        raise NotImplementedError

    def when_writable(self, callback: Callable[[], None]) -> None:
        """Calls back once, when the write buffer has drained (or the link has gone)."""
        raise NotImplementedError

    def abort(self) -> None:
        """Closes at once, dropping what is buffered; the receiver hears connection_lost."""
        raise NotImplementedError

    def close(self) -> None:
        """Sends what was written, then closes."""
        raise NotImplementedError

    def ssl_object(self) -> ssl.SSLObject | None:
        return None


def _peer(transport: asyncio.BaseTransport | None) -> tuple[str, int]:
    peer = transport.get_extra_info("peername") if transport is not None else None
    return (str(peer[0]), int(peer[1])) if peer else ("?", 0)


class TcpLink(asyncio.Protocol, Link):
    """MQTT over TCP (or TLS): an asyncio protocol; ``accept`` makes the receiver."""

    __slots__ = ("_receiver", "_transport", "_writable", "_write_paused", "accept", "peer")
    network = "mqtt"

    def __init__(self, accept: Callable[[Link], Receiver | None]) -> None:
        self.accept = accept
        self.peer = ("?", 0)
        self._transport: asyncio.Transport | None = None
        self._receiver: Receiver | None = None
        self._write_paused = False
        self._writable: Callable[[], None] | None = None

    # --- asyncio's side ----------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A stream transport (uvloop's are not subclasses of asyncio.Transport).
        self._transport = cast(asyncio.Transport, transport)
        self.peer = _peer(transport)
        self._receiver = self.accept(self)
        if self._receiver is None:
            self._transport.abort()

    def data_received(self, data: bytes) -> None:
        if self._receiver is not None:
            self._receiver.data_received(data)

    def eof_received(self) -> bool:
        return False  # MQTT has no half-close: the transport closes itself

    def connection_lost(self, exc: Exception | None) -> None:
        receiver, self._receiver = self._receiver, None
        self._write_paused = False
        self._call_writable()
        if receiver is not None:
            receiver.connection_lost()

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        self._call_writable()

    def _call_writable(self) -> None:
        callback, self._writable = self._writable, None
        if callback is not None:
            callback()

    # --- the connection's side ---------------------------------------------------------------
    def write(self, data: bytes) -> None:
        transport = self._transport
        if transport is not None and not transport.is_closing():
            transport.write(data)

    def buffered(self) -> int:
        return self._transport.get_write_buffer_size() if self._transport is not None else 0

    def pause_reading(self) -> None:
        if self._transport is not None and self._transport.is_reading():
            self._transport.pause_reading()

    def resume_reading(self) -> None:
        if self._transport is not None and not self._transport.is_closing():
            self._transport.resume_reading()

    def when_writable(self, callback: Callable[[], None]) -> None:
        if self._write_paused:
            self._writable = callback
        else:
            asyncio.get_running_loop().call_soon(callback)

    def abort(self) -> None:
        if self._transport is not None:
            self._transport.abort()

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()

    def ssl_object(self) -> ssl.SSLObject | None:
        obj = self._transport.get_extra_info("ssl_object") if self._transport else None
        return obj if isinstance(obj, ssl.SSLObject) else None


def ws_binary_frame(data: bytes) -> bytes:
    """One unmasked, unfragmented binary WebSocket frame (RFC 6455 section 5.2), as a server
    sends it."""
    n = len(data)
    if n < 126:
        return _WS_LEN1.pack(_WS_BINARY, n) + data
    if n < 65536:
        return _WS_LEN2.pack(_WS_BINARY, 126, n) + data
    return _WS_LEN3.pack(_WS_BINARY, 127, n) + data


_WS_BINARY = 0x82  # FIN, opcode 2
_WS_LEN1 = struct.Struct("!BB")
_WS_LEN2 = struct.Struct("!BBH")
_WS_LEN3 = struct.Struct("!BBQ")


class WebSocketLink(Link):
    """MQTT over WebSocket: binary messages carry any slice of the MQTT byte stream.

    aiohttp gives each WebSocket a handler task; ``serve`` is that task's loop. A write goes to
    the socket at once, as one binary frame (the connection coalesces what a pass of the event
    loop writes into one write): aiohttp's ``send_bytes`` is a coroutine, and a task per flush
    delayed every delivery by a further pass of the loop, seconds for a browser subscribed to a
    19,000-device fleet on a loaded hub (BENCHMARKS.md, session 6). The connection's bound on
    its write buffer (``buffered``) is the backpressure; with no permessage-deflate
    (hub/web/app.py) a frame is the bytes as they are.
    """

    __slots__ = (
        "_closed",
        "_closing",
        "_protocol",
        "_resumed",
        "_ssl",
        "_ws",
        "peer",
    )
    network = "ws"

    def __init__(self, ws: web.WebSocketResponse, request: web.Request) -> None:
        self._ws = ws
        self._protocol = request.protocol  # aiohttp's connection protocol: its drain
        self.peer = _peer(request.transport)
        obj = request.transport.get_extra_info("ssl_object") if request.transport else None
        self._ssl = obj if isinstance(obj, ssl.SSLObject) else None
        self._resumed: asyncio.Future[None] | None = None  # set while reading is paused
        self._closed = False
        self._closing: asyncio.Task[None] | None = None  # close(): the last write, then CLOSE

    async def serve(self, receiver: Receiver) -> None:
        """Feeds the receiver until the WebSocket closes."""
        from aiohttp import WSMsgType  # loaded already: aiohttp serves this WebSocket

        try:
            while not self._closed:
                if self._resumed is not None:
                    await self._resumed
                    continue
                msg = await self._ws.receive()
                if msg.type == WSMsgType.BINARY:
                    receiver.data_received(bytes(msg.data))
                    continue
                if msg.type == WSMsgType.TEXT:
                    log.info("%s:%d sent a text WebSocket message: MQTT needs binary", *self.peer)
                break  # CLOSE, CLOSED, ERROR, or a text frame [MQTT-6.0.0-1]
        finally:
            self._closed = True
            self.resume_reading()
            receiver.connection_lost()
            if self._closing is not None:
                # Closed from our side while a packet was handled (a CONNACK refusal decided at
                # once): the handler stays until that last write is out, or aiohttp would
                # close the socket under it.
                await asyncio.shield(self._closing)

    def write(self, data: bytes) -> None:
        if self._closed:
            return
        transport = self._transport()
        if transport is None or transport.is_closing():
            return
        transport.write(ws_binary_frame(data))

    def _transport(self) -> asyncio.Transport | None:
        transport = self._ws._req.transport if self._ws._req is not None else None
        return cast(asyncio.Transport | None, transport)

    def buffered(self) -> int:
        transport = self._transport()
        return transport.get_write_buffer_size() if transport is not None else 0

    def pause_reading(self) -> None:
        if self._resumed is None and not self._closed:
            self._resumed = asyncio.get_running_loop().create_future()

    def resume_reading(self) -> None:
        resumed, self._resumed = self._resumed, None
        if resumed is not None and not resumed.done():
            resumed.set_result(None)

    def when_writable(self, callback: Callable[[], None]) -> None:
        async def drained() -> None:
            with contextlib.suppress(ConnectionError, OSError, RuntimeError):
                drain = getattr(self._protocol, "_drain_helper", None)
                await (drain() if drain is not None else asyncio.sleep(0.01))
            callback()

        asyncio.get_running_loop().create_task(drained())

    def abort(self) -> None:
        self._closed = True
        self.resume_reading()
        transport = self._transport()
        if transport is not None:
            transport.abort()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True

        async def closing() -> None:  # what was written is in the transport already
            with contextlib.suppress(ConnectionError, OSError, asyncio.TimeoutError):
                await asyncio.wait_for(self._ws.close(), 1.0)

        self.resume_reading()
        self._closing = asyncio.get_running_loop().create_task(closing())

    def ssl_object(self) -> ssl.SSLObject | None:
        return self._ssl
