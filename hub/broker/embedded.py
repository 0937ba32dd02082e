"""The embedded amqtt broker, fed with connections from sockets the hub owns."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from aiohttp import web
from amqtt.adapters import ReaderAdapter, StreamReaderAdapter, StreamWriterAdapter, WriterAdapter
from amqtt.broker import Broker

from hub.broker.adapters import WebSocketReader, WebSocketWriter

log = logging.getLogger(__name__)

# Listener names as amqtt knows them; the hub's servers hand connections to these.
MQTT_NETWORK = "mqtt"
WS_NETWORK = "ws"


def _amqtt_config() -> dict[str, Any]:
    external = {"type": "external"}
    return {
        # amqtt merges every listener with "default"; external listeners bind nothing.
        "listeners": {"default": external, MQTT_NETWORK: external, WS_NETWORK: external},
        "plugins": {"hub.broker.plugins.OpenAccessAuthPlugin": {}},
    }


class EmbeddedBroker:
    """An amqtt broker behind the interface the rest of the hub uses."""

    def __init__(self) -> None:
        self._broker: Broker | None = None
        self._connections: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        # amqtt's Broker must be built inside the running event loop.
        self._broker = Broker(_amqtt_config())
        await self._broker.start()

    async def stop(self) -> None:
        if self._broker is None:
            return
        broker, self._broker = self._broker, None
        await broker.shutdown()
        for task in list(self._connections):
            task.cancel()
        await asyncio.gather(*self._connections, return_exceptions=True)

    async def serve_stream(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        """Serve one MQTT-over-TCP connection until it closes."""
        await self._serve(StreamReaderAdapter(reader), StreamWriterAdapter(writer), MQTT_NETWORK)

    async def serve_websocket(self, ws: web.WebSocketResponse, peer: tuple[str, int]) -> None:
        """Serve one MQTT-over-WebSocket connection until it closes."""
        await self._serve(WebSocketReader(ws), WebSocketWriter(ws, peer), WS_NETWORK)

    async def _serve(self, reader: ReaderAdapter, writer: WriterAdapter, network: str) -> None:
        if self._broker is None:
            await writer.close()
            return
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)  # type: ignore[arg-type]
        try:
            await self._broker.external_connected(reader, writer, network)
        finally:
            self._connections.discard(task)  # type: ignore[arg-type]
