"""An asyncio TCP proxy between the firmware and the hub that injects network faults.

Faults: `drop()` resets every open connection; `blackhole` swallows bytes both ways while
keeping connections open (a half-open link: writes succeed, nothing ever comes back; a new
connection's CONNECT is never answered); `puback_delay` holds the hub's PUBACKs back;
`connack_delay` holds the hub's CONNACKs back (a hub slow to log devices in, as in a reconnect
storm); `upstream = None` refuses devices as a hub that is down would (accept, then close);
`connack` answers every CONNECT with that CONNACK return code (3: server unavailable) and
closes, as a broker that is up but cannot serve does. Hub-to-device bytes are parsed into MQTT
packets so single packet types can be delayed. `accepted_at` records every device connection,
whatever became of it, so tests can time reconnect attempts.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field

PUBACK = 0x40
CONNACK = 0x20


@dataclass
class _Pair:
    device: asyncio.StreamWriter
    hub: asyncio.StreamWriter | None = None
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    def close(self) -> None:
        for writer in (self.device, self.hub):
            if writer is not None:
                with contextlib.suppress(Exception):
                    writer.transport.abort()  # RST, like a cable pulled or a NAT timeout
        for task in self.tasks:
            task.cancel()

    def close_hub_side(self) -> None:
        if self.hub is not None:
            with contextlib.suppress(Exception):
                self.hub.transport.abort()


def split_packets(buffer: bytearray) -> list[bytes]:
    """Removes and returns the complete MQTT packets at the start of buffer."""
    packets = []
    while len(buffer) >= 2:
        length, shift, i = 0, 0, 1
        while True:
            if i >= len(buffer):
                return packets
            byte = buffer[i]
            length |= (byte & 0x7F) << shift
            shift += 7
            i += 1
            if not byte & 0x80:
                break
        if len(buffer) < i + length:
            return packets
        packets.append(bytes(buffer[: i + length]))
        del buffer[: i + length]
    return packets


class FaultProxy:
    """Listens on a free port and forwards to upstream (host, port) unless told otherwise."""

    def __init__(
        self, upstream: tuple[str, int] | None, host: str = "127.0.0.1", port: int = 0
    ) -> None:
        self.upstream = upstream
        self.host = host
        self.port = port  # 0: a free one, set once listening
        self.blackhole = False
        self.puback_delay = 0.0
        self.connack_delay = 0.0
        self.connack: int | None = None  # refuse every CONNECT with this return code
        self.accepted_at: list[float] = []  # time.monotonic() of every device connection
        self.refused = 0  # CONNECTs answered with `connack`
        self.connections = 0  # device connections that reached the hub
        self.connected_at: list[float] = []  # time.monotonic() of each
        self.pubacks_delayed = 0
        self._pairs: list[_Pair] = []
        self._server: asyncio.Server | None = None

    async def __aenter__(self) -> FaultProxy:
        self._server = await asyncio.start_server(self._accept, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.drop()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    def drop(self) -> None:
        """Resets every open connection at once."""
        pairs, self._pairs = self._pairs, []
        for pair in pairs:
            pair.close()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        pair = _Pair(writer)
        self._pairs.append(pair)
        self.accepted_at.append(time.monotonic())
        if self.connack is not None:
            await self._refuse(reader, writer, pair, self.connack)
            return
        if self.blackhole:  # swallow everything; the device must notice on its own
            pair.tasks.append(asyncio.current_task())  # type: ignore[arg-type]
            with contextlib.suppress(Exception):
                while await reader.read(4096):
                    pass
            return
        if self.upstream is None:
            pair.close()
            return
        try:
            hub_reader, hub_writer = await asyncio.open_connection(*self.upstream)
        except OSError:
            pair.close()
            return
        pair.hub = hub_writer
        self.connections += 1
        self.connected_at.append(time.monotonic())
        up = asyncio.create_task(self._pump_up(reader, hub_writer, pair))
        down = asyncio.create_task(self._pump_down(hub_reader, writer, pair))
        pair.tasks += [up, down]

    async def _refuse(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, pair: _Pair, code: int
    ) -> None:
        """Reads the CONNECT (within 10 s), answers CONNACK with `code`, closes."""
        buffer = bytearray()
        with contextlib.suppress(Exception):
            async with asyncio.timeout(10):
                while not split_packets(buffer):
                    data = await reader.read(4096)
                    if not data:
                        break
                    buffer.extend(data)
                else:
                    writer.write(bytes((0x20, 2, 0, code)))
                    await writer.drain()
                    self.refused += 1
                    writer.close()  # a FIN after the CONNACK, as a broker does
                    await writer.wait_closed()
        pair.close()

    async def _pump_up(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, pair: _Pair
    ) -> None:
        with contextlib.suppress(Exception):
            while data := await reader.read(4096):
                if not self.blackhole:
                    writer.write(data)
                    await writer.drain()
        pair.close()

    async def _pump_down(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, pair: _Pair
    ) -> None:
        buffer = bytearray()
        loop = asyncio.get_running_loop()
        with contextlib.suppress(Exception):
            while data := await reader.read(4096):
                buffer.extend(data)
                for packet in split_packets(buffer):
                    if self.blackhole:
                        continue
                    if packet[0] == PUBACK and self.puback_delay > 0:
                        self.pubacks_delayed += 1
                        loop.call_later(self.puback_delay, self._late_write, writer, packet)
                    elif packet[0] == CONNACK and self.connack_delay > 0:
                        # What follows the CONNACK waits behind it, in order.
                        await asyncio.sleep(self.connack_delay)
                        writer.write(packet)
                    else:
                        writer.write(packet)
                await writer.drain()
        if self.blackhole:
            pair.close_hub_side()  # half-open: the hub gave up, the device must not hear it
        else:
            pair.close()

    @staticmethod
    def _late_write(writer: asyncio.StreamWriter, packet: bytes) -> None:
        if not writer.is_closing():
            writer.write(packet)
