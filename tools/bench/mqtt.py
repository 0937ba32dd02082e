"""The load generator's MQTT 3.1.1 client: raw packets over asyncio protocols, no library.

Kept independent of hub/broker/codec.py so that optimising the broker never changes the load.
A client parses the byte stream incrementally and counts what it receives; callers hook
``on_publish`` for latency and ``on_puback`` for flow control. MQTT over WebSocket goes
through the ``websockets`` client with the same parser.
"""

from __future__ import annotations

import asyncio
import struct
import time
from collections.abc import Callable

_U16 = struct.Struct("!H")

PublishHook = Callable[[bytes, bytes, float], None]


def _length(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _str(data: bytes) -> bytes:
    return _U16.pack(len(data)) + data


def connect_packet(
    client_id: str, username: str | None, password: str | None, keepalive: int, clean: bool = True
) -> bytes:
    flags = 0x02 if clean else 0
    payload = _str(client_id.encode())
    if username is not None:
        flags |= 0x80
        payload += _str(username.encode())
        if password is not None:
            flags |= 0x40
            payload += _str(password.encode())
    body = _str(b"MQTT") + bytes((4, flags)) + _U16.pack(keepalive) + payload
    return b"\x10" + _length(len(body)) + body


def subscribe_packet(pid: int, filters: list[tuple[str, int]]) -> bytes:
    body = _U16.pack(pid) + b"".join(_str(f.encode()) + bytes((q,)) for f, q in filters)
    return b"\x82" + _length(len(body)) + body


def publish_packet(topic: bytes, payload: bytes, qos: int, pid: int = 0) -> bytes:
    variable = _str(topic) + (_U16.pack(pid) if qos else b"")
    return bytes((0x30 | qos << 1,)) + _length(len(variable) + len(payload)) + variable + payload


DISCONNECT = b"\xe0\x00"
PINGREQ = b"\xc0\x00"


class Client(asyncio.Protocol):
    """One MQTT connection; counts publishes and acknowledgements it receives."""

    def __init__(self, on_publish: PublishHook | None = None) -> None:
        self.on_publish = on_publish
        self.on_puback: Callable[[int], None] | None = None
        self.on_received: Callable[[], None] | None = None  # after each chunk of PUBLISHes
        self.on_pingresp: Callable[[float], None] | None = None  # with its arrival time
        self.transport: asyncio.Transport | None = None
        self.received = 0
        self.pubacks = 0
        self.closed = False
        self.acks_only = False  # a publisher past its CONNACK: every packet is a 4-byte PUBACK
        self._buf = bytearray()
        self._tail = 0
        loop = asyncio.get_running_loop()
        self.connack: asyncio.Future[int] = loop.create_future()
        self.suback: asyncio.Future[bytes] = loop.create_future()
        self._resume: asyncio.Future[None] | None = None

    # --- asyncio.Protocol ----------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if not self.connack.done():
            self.connack.set_exception(ConnectionError("closed before CONNACK"))
        if self._resume is not None and not self._resume.done():
            self._resume.set_result(None)

    def pause_writing(self) -> None:
        self._resume = asyncio.get_running_loop().create_future()

    def resume_writing(self) -> None:
        if self._resume is not None and not self._resume.done():
            self._resume.set_result(None)
        self._resume = None

    def data_received(self, data: bytes) -> None:
        if self.acks_only:
            self._tail += len(data)
            self.pubacks += self._tail >> 2
            self._tail &= 3
            if self.on_puback is not None:
                self.on_puback(self.pubacks)
            return
        buf = self._buf
        buf += data
        end = len(buf)
        pos = 0
        acks: list[bytes] = []
        now = time.monotonic()
        hook = self.on_publish
        while end - pos >= 2:
            first = buf[pos]
            length = buf[pos + 1]
            i = pos + 2
            if length & 0x80:
                length &= 0x7F
                shift = 7
                while True:
                    if i >= end:
                        length = -1
                        break
                    byte = buf[i]
                    i += 1
                    length |= (byte & 0x7F) << shift
                    shift += 7
                    if not byte & 0x80:
                        break
                if length < 0:
                    break
            if end - i < length:
                break
            kind = first >> 4
            if kind == 3:
                self.received += 1
                qos = (first >> 1) & 3
                if qos or hook is not None:
                    tlen = buf[i] << 8 | buf[i + 1]
                    start = i + 2 + tlen
                    if qos:
                        acks.append(b"\x40\x02" + bytes(buf[start : start + 2]))
                        start += 2
                    if hook is not None:
                        hook(bytes(buf[i + 2 : i + 2 + tlen]), bytes(buf[start : i + length]), now)
            elif kind == 4:
                self.pubacks += 1
                if self.on_puback is not None:
                    self.on_puback(self.pubacks)
            elif kind == 2:
                if not self.connack.done():
                    self.connack.set_result(buf[i + 1])
            elif kind == 9 and not self.suback.done():
                self.suback.set_result(bytes(buf[i + 2 : i + length]))
            elif kind == 13 and self.on_pingresp is not None:
                self.on_pingresp(now)
            pos = i + length
        if pos:
            del buf[:pos]
        if acks and self.transport is not None:
            self.transport.write(b"".join(acks))
        if self.on_received is not None:
            self.on_received()

    # --- use ---------------------------------------------------------------------------------
    def write(self, data: bytes) -> None:
        if self.transport is not None and not self.closed:
            self.transport.write(data)

    async def drained(self) -> None:
        """Returns once the transport accepts writes again (TCP back-pressure)."""
        if self._resume is not None:
            await self._resume

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


async def open_tcp(
    host: str,
    port: int,
    client_id: str,
    username: str | None = None,
    password: str | None = None,
    *,
    keepalive: int = 120,
    on_publish: PublishHook | None = None,
    timeout: float = 30.0,
) -> Client:
    loop = asyncio.get_running_loop()
    _, client = await loop.create_connection(lambda: Client(on_publish), host, port)
    client.write(connect_packet(client_id, username, password, keepalive))
    code = await asyncio.wait_for(client.connack, timeout)
    if code != 0:
        client.close()
        raise ConnectionError(f"{client_id}: CONNACK {code}")
    return client


async def subscribe(client: Client, filters: list[tuple[str, int]], timeout: float = 30.0) -> None:
    client.write(subscribe_packet(1, filters))
    codes = await asyncio.wait_for(client.suback, timeout)
    if any(c == 0x80 for c in codes):
        raise ConnectionError(f"subscription refused: {filters}")


class WsClient:
    """MQTT over WebSocket (subprotocol mqtt) with the TCP client's parser."""

    def __init__(self, on_publish: PublishHook | None) -> None:
        self.client = Client(on_publish)
        self._ws: object = None
        self._reader: asyncio.Task[None] | None = None

    async def open(
        self, url: str, client_id: str, username: str | None, password: str | None
    ) -> None:
        from websockets.asyncio.client import connect

        ws = await connect(url, subprotocols=["mqtt"], max_size=None, compression=None)  # type: ignore[list-item]
        self._ws = ws
        self._reader = asyncio.get_running_loop().create_task(self._read())
        await ws.send(connect_packet(client_id, username, password, 120))
        code = await asyncio.wait_for(self.client.connack, 30)
        if code != 0:
            raise ConnectionError(f"{client_id}: CONNACK {code} over WebSocket")

    async def _read(self) -> None:
        ws = self._ws
        try:
            async for message in ws:  # type: ignore[attr-defined]
                if isinstance(message, bytes):
                    self.client.data_received(message)
        except Exception:
            pass

    async def send(self, packet: bytes) -> None:
        await self._ws.send(packet)  # type: ignore[attr-defined]

    async def subscribe(self, filters: list[tuple[str, int]]) -> None:
        await self._ws.send(subscribe_packet(1, filters))  # type: ignore[attr-defined]
        codes = await asyncio.wait_for(self.client.suback, 30)
        if any(c == 0x80 for c in codes):
            raise ConnectionError(f"subscription refused over WebSocket: {filters}")

    async def close(self) -> None:
        if self._ws is not None:
            await self._ws.close()  # type: ignore[attr-defined]
        if self._reader is not None:
            self._reader.cancel()
