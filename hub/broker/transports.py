"""Byte transports the broker core reads from and writes to: TCP streams and WebSockets."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl

from aiohttp import WSMsgType, web

log = logging.getLogger(__name__)
READ_CHUNK = 65536


class Transport:
    """What a connection needs from its network: read chunks, write bytes, close."""

    network = "?"
    peer: tuple[str, int] = ("?", 0)

    async def read(self) -> bytes:
        """The next chunk of bytes; b"" once the peer has gone."""
        raise NotImplementedError

    def write(self, data: bytes) -> None:
        raise NotImplementedError

    def buffered(self) -> int:
        """Bytes written but not yet handed to the kernel."""
        raise NotImplementedError

    async def drain(self) -> None:
        raise NotImplementedError

    def abort(self) -> None:
        """Closes at once; a pending read returns b""."""
        raise NotImplementedError

    async def close(self) -> None:
        """Flushes what was written, then closes."""
        raise NotImplementedError

    def ssl_object(self) -> ssl.SSLObject | None:
        return None


class StreamTransport(Transport):
    network = "mqtt"

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer
        self._transport = writer.transport
        peer = writer.get_extra_info("peername")
        self.peer = (str(peer[0]), int(peer[1])) if peer else ("?", 0)

    async def read(self) -> bytes:
        try:
            return await self._reader.read(READ_CHUNK)
        except (ConnectionError, OSError):
            return b""

    def write(self, data: bytes) -> None:
        if not self._transport.is_closing():
            self._transport.write(data)

    def buffered(self) -> int:
        return self._transport.get_write_buffer_size()

    async def drain(self) -> None:
        with contextlib.suppress(ConnectionError, OSError):
            await self._writer.drain()

    def abort(self) -> None:
        self._transport.abort()
        self._reader.feed_eof()

    async def close(self) -> None:
        if not self._transport.is_closing():
            with contextlib.suppress(ConnectionError, OSError):
                await asyncio.wait_for(self._writer.drain(), 1.0)
            self._transport.close()

    def ssl_object(self) -> ssl.SSLObject | None:
        obj = self._writer.get_extra_info("ssl_object")
        return obj if isinstance(obj, ssl.SSLObject) else None


class WebSocketTransport(Transport):
    """MQTT over WebSocket: binary messages carry any slice of the MQTT byte stream.

    Writes are coalesced: everything written before the event loop runs again goes out as one
    WebSocket message.
    """

    network = "ws"

    def __init__(self, ws: web.WebSocketResponse, request: web.Request) -> None:
        self._ws = ws
        peer = request.transport.get_extra_info("peername") if request.transport else None
        self.peer = (str(peer[0]), int(peer[1])) if peer else ("?", 0)
        self._ssl = request.transport.get_extra_info("ssl_object") if request.transport else None
        self._pending = bytearray()
        self._flusher: asyncio.Task[None] | None = None
        self._closed = False

    async def read(self) -> bytes:
        if self._closed:
            return b""
        msg = await self._ws.receive()
        if msg.type == WSMsgType.BINARY:
            return bytes(msg.data)
        if msg.type == WSMsgType.TEXT:
            log.info("%s:%d sent a text WebSocket message: MQTT needs binary", *self.peer)
        self._closed = True
        return b""  # CLOSE, CLOSED, ERROR, or a text frame [MQTT-6.0.0-1]

    def write(self, data: bytes) -> None:
        if self._closed:
            return
        self._pending.extend(data)
        if self._flusher is None:
            self._flusher = asyncio.get_running_loop().create_task(self._flush())

    async def _flush(self) -> None:
        try:
            while self._pending and not self._closed:
                data = bytes(self._pending)
                self._pending.clear()
                await self._ws.send_bytes(data)
        except (ConnectionError, OSError, RuntimeError):
            self._closed = True
        finally:
            self._flusher = None

    def buffered(self) -> int:
        transport = self._ws._req.transport if self._ws._req is not None else None
        return len(self._pending) + (transport.get_write_buffer_size() if transport else 0)

    async def drain(self) -> None:
        if self._flusher is not None:
            await asyncio.shield(self._flusher)

    def abort(self) -> None:
        self._closed = True
        self._pending.clear()
        transport = self._ws._req.transport if self._ws._req is not None else None
        if transport is not None:
            transport.abort()

    async def close(self) -> None:
        if not self._ws.closed:
            with contextlib.suppress(ConnectionError, OSError, asyncio.TimeoutError):
                await asyncio.wait_for(self.drain(), 1.0)
                self._closed = True
                await asyncio.wait_for(self._ws.close(), 1.0)
        self._closed = True

    def ssl_object(self) -> ssl.SSLObject | None:
        return self._ssl if isinstance(self._ssl, ssl.SSLObject) else None
