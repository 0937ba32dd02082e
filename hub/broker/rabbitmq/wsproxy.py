"""The hub's `/mqtt` WebSocket in cluster mode: each connection is relayed, frame for frame, to
a node's Web MQTT listener (the first that answers), so the console's pages, which connect to
their own origin's `/mqtt`, work unchanged. The client logs in inside MQTT as before; the node
asks the hub's auth backend. Nothing is parsed here: MQTT is between the client and the node."""

from __future__ import annotations

import asyncio
import contextlib
import logging

import aiohttp
from aiohttp import WSMsgType, web

log = logging.getLogger(__name__)

CONNECT_TIMEOUT_S = 5.0
MAX_FRAME = 1024 * 1024  # the largest WebSocket message relayed either way


Socket = aiohttp.ClientWebSocketResponse | web.WebSocketResponse


async def _pump(source: Socket, sink: Socket) -> None:
    async for message in source:
        if message.type != WSMsgType.BINARY:  # MQTT is binary: text, errors end the relay
            break
        await sink.send_bytes(message.data)


async def relay(
    ws: web.WebSocketResponse, session: aiohttp.ClientSession, urls: list[str]
) -> None:
    """Relays one client's WebSocket to the first node in ``urls`` that accepts it."""
    upstream = None
    for url in urls:
        try:
            upstream = await session.ws_connect(
                url,
                protocols=("mqtt",),
                max_msg_size=MAX_FRAME,
                autoping=True,
                timeout=aiohttp.ClientWSTimeout(ws_close=CONNECT_TIMEOUT_S),
            )
            break
        except (aiohttp.ClientError, TimeoutError) as exc:
            log.debug("Web MQTT on %s: %s", url, exc)
    if upstream is None:
        await ws.close(code=1011, message=b"no node of the cluster answers")
        return
    tasks = [
        asyncio.ensure_future(_pump(ws, upstream)),
        asyncio.ensure_future(_pump(upstream, ws)),
    ]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await upstream.close()
        await ws.close()
