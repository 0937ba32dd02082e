"""Byte-stream adapters that hand hub-owned connections to amqtt."""

from __future__ import annotations

import ssl

from aiohttp import WSMsgType, web
from amqtt.adapters import ReaderAdapter, WriterAdapter


class WebSocketReader(ReaderAdapter):
    """Reads MQTT bytes from an aiohttp WebSocket; one WebSocket message may hold any bytes."""

    def __init__(self, ws: web.WebSocketResponse) -> None:
        self._ws = ws
        self._buffer = bytearray()
        self._eof = False

    async def read(self, n: int = -1) -> bytes:
        while not self._eof and (n < 0 or len(self._buffer) < n):
            msg = await self._ws.receive()
            if msg.type == WSMsgType.BINARY:
                self._buffer.extend(msg.data)
            elif msg.type == WSMsgType.TEXT:
                self._buffer.extend(msg.data.encode())
            else:  # CLOSE, CLOSING, CLOSED, ERROR
                self._eof = True
        if n < 0 or len(self._buffer) < n:
            n = len(self._buffer)
        data = bytes(self._buffer[:n])
        del self._buffer[:n]
        return data

    def feed_eof(self) -> None:
        self._eof = True


class WebSocketWriter(WriterAdapter):
    """Writes MQTT bytes to an aiohttp WebSocket, one binary message per drain."""

    def __init__(self, ws: web.WebSocketResponse, peer: tuple[str, int]) -> None:
        self._ws = ws
        self._peer = peer
        self._pending = bytearray()

    def write(self, data: bytes) -> None:
        self._pending.extend(data)

    async def drain(self) -> None:
        if self._pending and not self._ws.closed:
            data = bytes(self._pending)
            self._pending.clear()
            await self._ws.send_bytes(data)

    def get_peer_info(self) -> tuple[str, int] | None:
        return self._peer

    def get_ssl_info(self) -> ssl.SSLObject | None:
        transport = self._ws._req.transport if self._ws._req is not None else None
        return transport.get_extra_info("ssl_object") if transport is not None else None

    async def close(self) -> None:
        await self._ws.close()
