"""The hub's AMQP 0-9-1 link to the cluster (aio-pika): connects to the first node that answers,
and to the next one when the connection is lost, running ``setup(connection)`` each time.

Publishing goes through a bounded outbox drained by one task, so ``publish`` never blocks the
caller and a message published while no node is reachable waits (up to ``OUTBOX`` of them)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from urllib.parse import urlsplit

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractConnection, AbstractExchange

log = logging.getLogger(__name__)


def _quiet_aiormq(record: logging.LogRecord) -> bool:
    """aiormq logs every failed connect at ERROR and a lost node with a traceback; the link
    says both once, in its own words (below)."""
    text = record.getMessage()
    return not ("error when creating transport" in text or "reader exited abnormally" in text)


logging.getLogger("aiormq.connection").addFilter(_quiet_aiormq)

OUTBOX = 10_000  # messages the hub may have waiting to be published
BACKOFF_S = (0.1, 0.25, 0.5, 1.0, 2.0)
CONNECT_TIMEOUT_S = 5.0

Setup = Callable[[AbstractConnection], Awaitable[None]]


class AmqpLink:
    def __init__(
        self, urls: tuple[str, ...], user: str, password: str, vhost: str, setup: Setup
    ) -> None:
        if not urls:
            raise ValueError("the AMQP link needs at least one URL")
        self.urls = urls
        self._user, self._password, self._vhost = user, password, vhost
        self._setup = setup
        self.connected = asyncio.Event()
        self.node_url = ""  # the URL of the node the link is on now
        self._outbox: asyncio.Queue[tuple[str, bytes, int]] = asyncio.Queue(OUTBOX)
        self._exchange: AbstractExchange | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._connection: AbstractConnection | None = None
        self._stopping = False
        self.dropped = 0  # messages dropped because the outbox was full

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._run()), loop.create_task(self._drain())]

    async def stop(self) -> None:
        self._stopping = True
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self._connection is not None:
            with contextlib.suppress(Exception):
                await self._connection.close()

    def publish(self, routing_key: str, body: bytes, qos: int) -> None:
        try:
            self._outbox.put_nowait((routing_key, body, qos))
        except asyncio.QueueFull:
            self.dropped += 1
            if self.dropped in (1, 10, 100) or self.dropped % 1000 == 0:
                log.warning(
                    "the cluster is unreachable and %d messages wait: %d dropped",
                    OUTBOX,
                    self.dropped,
                )

    async def _connect(self, url: str) -> AbstractConnection:
        parts = urlsplit(url)
        return await aio_pika.connect(
            host=parts.hostname or "127.0.0.1",
            port=parts.port or 5672,
            login=self._user,
            password=self._password,
            virtualhost=self._vhost,
            ssl=parts.scheme == "amqps",
            timeout=CONNECT_TIMEOUT_S,
            client_properties={"connection_name": "mpy-hub"},
        )

    async def _run(self) -> None:
        attempt = 0
        while not self._stopping:
            url = self.urls[attempt % len(self.urls)]
            try:
                connection = await self._connect(url)
            except Exception as exc:
                (
                    log.warning
                    if attempt % len(self.urls) == 0 and attempt % 50 == 0
                    else log.debug
                )("cannot reach the cluster at %s: %s", url, exc)
                await asyncio.sleep(BACKOFF_S[min(attempt, len(BACKOFF_S) - 1)])
                attempt += 1
                continue
            closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()

            def on_close(*_: object, closed: asyncio.Future[None] = closed) -> None:
                if not closed.done():
                    closed.set_result(None)

            connection.close_callbacks.add(on_close)
            self._connection = connection
            try:
                channel: AbstractChannel = await connection.channel(publisher_confirms=True)
                self._exchange = await channel.get_exchange("amq.topic", ensure=False)
                await self._setup(connection)
                self.node_url = url
                self.connected.set()
                log.info("connected to the cluster at %s", url)
                await closed
                log.warning("lost the cluster's node at %s: moving to the next", url)
            except Exception as exc:
                if not self._stopping:
                    log.warning("cluster link on %s failed: %s", url, exc)
            finally:
                self.connected.clear()
                self._exchange = None
                with contextlib.suppress(Exception):
                    await connection.close()
            attempt += 1
            await asyncio.sleep(BACKOFF_S[0])

    async def _drain(self) -> None:
        while True:
            key, body, qos = await self._outbox.get()
            while True:
                await self.connected.wait()
                exchange = self._exchange
                if exchange is None:
                    await asyncio.sleep(BACKOFF_S[0])
                    continue
                message = aio_pika.Message(
                    body,
                    delivery_mode=aio_pika.DeliveryMode.PERSISTENT if qos else None,
                    headers={"x-mqtt-publish-qos": min(qos, 1)},
                )
                try:
                    # Not mandatory: a hub event or a command nobody is subscribed to is
                    # dropped by RabbitMQ, not returned (aiormq logs each return at ERROR).
                    await exchange.publish(
                        message, routing_key=key, mandatory=False, timeout=CONNECT_TIMEOUT_S
                    )
                    break
                except Exception as exc:  # the link is going down: sent again once it is back
                    log.debug("publish to %s failed: %s", key, exc)
                    await asyncio.sleep(BACKOFF_S[0])
