"""What the hub needs from a broker: the one protocol the rest of the hub, the tests and the
bench use. :class:`hub.broker.EmbeddedBroker` implements it, and so does
:class:`hub.broker.RabbitBroker` over a RabbitMQ cluster, so it speaks of messages, clients and
networks, never of amqtt or AMQP.

The broker knows no device-topic grammar: callers ask for retained messages by topic or by
filter (``hub.topics.STATUS_FILTER`` for "which devices have a status").
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from hub.broker.reporting import EventSink
from hub.broker.settings import PublishCheck
from hub.commitlog import Batch

if TYPE_CHECKING:
    from aiohttp import web

    from hub.security import Gatekeeper

# listener(topic, payload) -> the commit handle of a message it stores, else None.
MessageListener = Callable[[str, bytes], Batch | None]


class Broker(Protocol):
    # --- wiring (before start) -------------------------------------------------------------
    def set_gatekeeper(self, gatekeeper: Gatekeeper) -> None:
        """Who may connect: the hub's registry, tokens and development mode."""

    def set_publish_check(self, check: PublishCheck | None) -> None:
        """check(identity, topic, payload, retain) sees every client's message (and will)
        the topic rules allow, before it is routed or retained; a Refusal drops it
        (acknowledged) with a hub event."""

    def add_event_sink(self, sink: EventSink) -> None:
        """sink(kind, details) is called for connects, disconnects and every refusal."""

    def add_message_listener(self, listener: MessageListener) -> None:
        """listener(topic, payload) sees every message the broker routes; a message it
        stores is acknowledged once its commit handle has committed."""

    # --- lifecycle -------------------------------------------------------------------------
    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    # --- messages --------------------------------------------------------------------------
    def publish(self, topic: str, payload: bytes, qos: int = 0, retain: bool = False) -> None:
        """Publishes as the hub itself (events, commands)."""

    def retained(self, topic: str) -> bytes | None:
        """The payload retained on a topic, if any."""

    def retained_topics(self, topic_filter: str) -> list[str]:
        """The topics with a retained message that the filter matches."""

    def stats(self) -> dict[str, Any]:
        """What the broker moved and holds, for the metrics endpoint; keys it cannot tell are
        left out: ``messages_received`` and ``messages_sent`` (QoS -> count),
        ``bytes_received``, ``bytes_sent``, ``sessions_persistent``, ``sessions_clean``,
        ``queued_messages``, ``inflight_messages``."""

    # --- clients ---------------------------------------------------------------------------
    def clients(self) -> dict[str, Any]:
        """Connected clients: client id -> identity (hub.security.Identity)."""

    def kick(self, should_go: Callable[[Any], str | None]) -> int:
        """Disconnects every client whose identity makes should_go return a reason; returns
        how many."""

    # --- networks (the hub owns the sockets) -----------------------------------------------
    def client_listeners(self) -> dict[str, list[tuple[str, int]]] | None:
        """None when clients connect through the hub's own sockets (``tcp_protocol``,
        ``serve_websocket``); otherwise the broker's nodes serve them (cluster mode) and this
        says where, once started: ``{"mqtt": [(host, port), ...], "ws": [...]}``."""

    def tcp_protocol(self) -> asyncio.Protocol:
        """A protocol for one MQTT-over-TCP(-TLS) connection (``loop.create_server``)."""

    async def serve_websocket(self, ws: web.WebSocketResponse, request: web.Request) -> None:
        """Serves one MQTT-over-WebSocket connection until it closes."""
