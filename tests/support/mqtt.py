"""A raw MQTT 3.1.1 client for tests: exact bytes over TCP or the WebSocket network."""

from __future__ import annotations

import asyncio
import contextlib
import struct
from dataclasses import dataclass

import websockets
from websockets.asyncio.client import ClientConnection

CONNECT, CONNACK, PUBLISH, PUBACK = 1, 2, 3, 4
PUBREC, PUBREL, PUBCOMP, SUBSCRIBE = 5, 6, 7, 8
SUBACK, UNSUBSCRIBE, UNSUBACK = 9, 10, 11
PINGREQ, PINGRESP, DISCONNECT = 12, 13, 14


def encode_length(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def utf8(s: str | bytes) -> bytes:
    data = s.encode() if isinstance(s, str) else s
    return struct.pack("!H", len(data)) + data


def packet(kind: int, flags: int, body: bytes) -> bytes:
    return bytes([kind << 4 | flags]) + encode_length(len(body)) + body


def connect_packet(
    client_id: str,
    *,
    clean: bool = True,
    keepalive: int = 60,
    will: tuple[str, bytes, int, bool] | None = None,
    username: str | None = None,
    password: str | None = None,
) -> bytes:
    flags = 0x02 if clean else 0
    payload = utf8(client_id)
    if will is not None:
        topic, message, qos, retain = will
        flags |= 0x04 | qos << 3 | (0x20 if retain else 0)
        payload += utf8(topic) + utf8(message)
    if username is not None:
        flags |= 0x80
        payload += utf8(username)
    if password is not None:
        flags |= 0x40
        payload += utf8(password)
    body = utf8("MQTT") + bytes([4, flags]) + struct.pack("!H", keepalive) + payload
    return packet(CONNECT, 0, body)


def publish_packet(
    topic: str | bytes,
    payload: bytes,
    *,
    qos: int = 0,
    retain: bool = False,
    pid: int = 1,
    dup: bool = False,
) -> bytes:
    body = utf8(topic) + (struct.pack("!H", pid) if qos else b"") + payload
    return packet(PUBLISH, (dup << 3) | (qos << 1) | int(retain), body)


def subscribe_packet(pid: int, filters: list[tuple[str, int]]) -> bytes:
    body = struct.pack("!H", pid) + b"".join(utf8(f) + bytes([q]) for f, q in filters)
    return packet(SUBSCRIBE, 0x02, body)


def ack_packet(kind: int, pid: int) -> bytes:
    return packet(kind, 0x02 if kind == PUBREL else 0, struct.pack("!H", pid))


def unsubscribe_packet(pid: int, filters: list[str]) -> bytes:
    body = struct.pack("!H", pid) + b"".join(utf8(f) for f in filters)
    return packet(UNSUBSCRIBE, 0x02, body)


def pingreq_packet() -> bytes:
    return packet(PINGREQ, 0, b"")


def disconnect_packet() -> bytes:
    return packet(DISCONNECT, 0, b"")


def packet_id(p: Packet) -> int:
    """The packet identifier of an acknowledgement (PUBACK, PUBREC, PUBREL, PUBCOMP, SUBACK...)."""
    (pid,) = struct.unpack_from("!H", p.body)
    return int(pid)


@dataclass(frozen=True)
class Packet:
    kind: int
    flags: int
    body: bytes


@dataclass(frozen=True)
class Message:
    topic: str
    payload: bytes
    qos: int
    retain: bool
    dup: bool
    pid: int | None


def decode_publish(p: Packet) -> Message:
    (topic_len,) = struct.unpack_from("!H", p.body)
    topic = p.body[2 : 2 + topic_len].decode()
    qos = (p.flags >> 1) & 3
    rest = p.body[2 + topic_len :]
    pid = None
    if qos:
        (pid,) = struct.unpack_from("!H", rest)
        rest = rest[2:]
    return Message(topic, rest, qos, bool(p.flags & 1), bool(p.flags & 8), pid)


class ConnectionClosed(Exception):
    """The broker closed the connection."""


class RawClient:
    """Sends exact bytes and reads whole packets; the transport is TCP or a WebSocket."""

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._ws: ClientConnection | None = None
        self._early: list[Packet] = []  # PUBLISHes that arrived while waiting for an ack

    @classmethod
    async def tcp(cls, host: str, port: int) -> RawClient:
        client = cls()
        client._reader, client._writer = await asyncio.open_connection(host, port)
        return client

    @classmethod
    async def websocket(cls, url: str) -> RawClient:
        client = cls()
        client._ws = await websockets.connect(url, subprotocols=[websockets.Subprotocol("mqtt")])
        return client

    async def send(self, data: bytes) -> None:
        if self._ws is not None:
            await self._ws.send(data)
        else:
            assert self._writer is not None
            self._writer.write(data)
            await self._writer.drain()

    async def _fill(self) -> None:
        if self._ws is not None:
            try:
                data = await self._ws.recv()
            except websockets.ConnectionClosed:
                data = b""
            chunk = data.encode() if isinstance(data, str) else data
        else:
            assert self._reader is not None
            chunk = await self._reader.read(65536)
        if not chunk:
            raise ConnectionClosed("the broker closed the connection")
        self._buffer.extend(chunk)

    async def _take(self, n: int) -> bytes:
        while len(self._buffer) < n:
            await self._fill()
        data = bytes(self._buffer[:n])
        del self._buffer[:n]
        return data

    async def _read_packet(self) -> Packet:
        first = (await self._take(1))[0]
        length, shift = 0, 0
        while True:
            byte = (await self._take(1))[0]
            length |= (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                break
        return Packet(first >> 4, first & 0x0F, await self._take(length))

    async def recv(self, timeout: float = 5.0) -> Packet:
        return await asyncio.wait_for(self._read_packet(), timeout)

    async def expect(self, kind: int, timeout: float = 5.0) -> Packet:
        p = await self.recv(timeout)
        assert p.kind == kind, f"expected packet type {kind}, got {p}"
        return p

    async def connect(self, client_id: str, **kwargs: object) -> tuple[bool, int]:
        """Sends CONNECT; returns (session present, return code) from the CONNACK."""
        await self.send(connect_packet(client_id, **kwargs))  # type: ignore[arg-type]
        ack = await self.expect(CONNACK)
        return bool(ack.body[0] & 1), ack.body[1]

    async def subscribe(self, filters: list[tuple[str, int]], pid: int = 1) -> list[int]:
        await self.send(subscribe_packet(pid, filters))
        while (ack := await self.recv()).kind == PUBLISH:
            self._early.append(ack)  # retained messages may come before the SUBACK
        assert ack.kind == SUBACK, f"expected SUBACK, got {ack}"
        assert struct.unpack_from("!H", ack.body)[0] == pid
        return list(ack.body[2:])

    async def next_message(self, timeout: float = 5.0, *, ack: bool = True) -> Message:
        """Waits for a PUBLISH (answering pings on the way) and acknowledges QoS 1."""
        while True:
            p = self._early.pop(0) if self._early else await self.recv(timeout)
            if p.kind == PUBLISH:
                msg = decode_publish(p)
                if ack and msg.qos == 1 and msg.pid is not None:
                    await self.send(ack_packet(PUBACK, msg.pid))
                return msg

    async def messages_until(self, count: int, timeout: float = 5.0) -> list[Message]:
        return [await self.next_message(timeout) for _ in range(count)]

    async def expect_closed(self, timeout: float = 5.0) -> None:
        async def drain() -> None:
            while True:
                await self._read_packet()

        try:
            await asyncio.wait_for(drain(), timeout)
        except (ConnectionClosed, ConnectionResetError, BrokenPipeError):
            return
        except TimeoutError:
            raise AssertionError(f"the connection is still open after {timeout} s") from None

    async def packets_until_closed(self, timeout: float = 5.0) -> list[Packet]:
        """Reads until the broker closes the connection; returns what arrived on the way."""
        seen: list[Packet] = []
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        try:
            while (left := deadline - loop.time()) > 0:
                seen.append(await self.recv(left))
        except (ConnectionClosed, ConnectionResetError, BrokenPipeError):
            return seen
        except TimeoutError:
            pass
        shown = f"{seen[:3]} and {len(seen) - 3} more" if len(seen) > 3 else f"{seen}"
        raise AssertionError(f"the connection is still open after {timeout} s (received {shown})")

    async def recv_nothing(self, timeout: float) -> None:
        """Asserts that no packet at all arrives within timeout (the connection stays open)."""
        if self._early:
            raise AssertionError(f"expected nothing, got {self._early[0]}")
        try:
            p = await self.recv(timeout)
        except TimeoutError:
            return
        raise AssertionError(f"expected nothing for {timeout} s, got {p}")

    async def expect_reply(
        self, kind: int, pid: int | None = None, timeout: float = 5.0
    ) -> Packet:
        """Waits for a packet of kind (with pid), keeping PUBLISHes that come first for later."""
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            left = deadline - asyncio.get_running_loop().time()
            if left <= 0:
                raise TimeoutError(f"no packet of type {kind} within {timeout} s")
            p = await self.recv(left)
            if p.kind == PUBLISH and kind != PUBLISH:
                self._early.append(p)
                continue
            assert p.kind == kind, f"expected packet type {kind}, got {p}"
            if pid is not None:
                assert packet_id(p) == pid, f"expected packet id {pid}, got {p}"
            return p

    async def publish(
        self,
        topic: str | bytes,
        payload: bytes,
        *,
        qos: int = 0,
        retain: bool = False,
        pid: int = 1,
        timeout: float = 5.0,
    ) -> None:
        """Publishes and completes the sender's side of the QoS flow."""
        await self.send(publish_packet(topic, payload, qos=qos, retain=retain, pid=pid))
        if qos == 1:
            await self.expect_reply(PUBACK, pid, timeout)
        elif qos == 2:
            await self.expect_reply(PUBREC, pid, timeout)
            await self.send(ack_packet(PUBREL, pid))
            await self.expect_reply(PUBCOMP, pid, timeout)

    async def complete_qos2(self, pid: int, timeout: float = 5.0) -> None:
        """The receiver's side of a QoS 2 flow: PUBREC, wait for PUBREL, PUBCOMP."""
        await self.send(ack_packet(PUBREC, pid))
        await self.expect_reply(PUBREL, pid, timeout)
        await self.send(ack_packet(PUBCOMP, pid))

    async def unsubscribe(self, filters: list[str], pid: int = 1, timeout: float = 5.0) -> None:
        await self.send(unsubscribe_packet(pid, filters))
        await self.expect_reply(UNSUBACK, pid, timeout)

    async def ping(self, timeout: float = 5.0) -> None:
        """PINGREQ and wait for the PINGRESP (a PUBLISH arriving first is kept for later)."""
        await self.send(pingreq_packet())
        await self.expect_reply(PINGRESP, None, timeout)

    async def disconnect(self) -> None:
        """A clean DISCONNECT, then close the connection."""
        with contextlib.suppress(ConnectionError, websockets.ConnectionClosed):
            await self.send(disconnect_packet())
        await self.close()

    async def close(self) -> None:
        if self._ws is not None:
            await self._ws.close()
        elif self._writer is not None:
            self._writer.close()
            with contextlib.suppress(ConnectionResetError, BrokenPipeError):
                await self._writer.wait_closed()
