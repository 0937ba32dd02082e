"""The embedded broker behind the interface the rest of the hub uses.

amqtt's Broker provides the lifecycle, configuration and plugin framework; the hub's core
(hub/broker/core.py) handles sessions and delivery. Connections come from sockets the hub owns.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aiohttp import web
from amqtt.broker import Broker

from hub.broker.core import BrokerCore, BrokerSettings, EventSink, PublishCheck
from hub.broker.session import Message
from hub.broker.transports import Link, Receiver, TcpLink, WebSocketLink
from hub.commitlog import Batch

log = logging.getLogger(__name__)

MQTT_NETWORK = "mqtt"
WS_NETWORK = "ws"


def _amqtt_config(data_dir: Path, allow_anonymous: bool, login_failures: int) -> dict[str, Any]:
    external = {"type": "external"}
    return {
        # amqtt merges every listener with "default"; external listeners bind nothing.
        "listeners": {"default": external, MQTT_NETWORK: external, WS_NETWORK: external},
        "plugins": {
            "hub.broker.plugins.GatekeeperAuthPlugin": {
                "data_dir": str(data_dir),
                "allow_anonymous": allow_anonymous,
                "login_failures": login_failures,
            },
            "hub.broker.plugins.GatekeeperTopicPlugin": {},
        },
    }


class _AmqttBroker(Broker):
    """amqtt's Broker with its message routing handed to the hub's core."""

    core: BrokerCore

    async def internal_message_broadcast(
        self, topic: str, data: bytes, qos: int | None = None
    ) -> None:
        self.core.publish(Message(topic, bytes(data), qos or 0, False))


class EmbeddedBroker:
    def __init__(
        self,
        settings: BrokerSettings | None = None,
        *,
        data_dir: Path = Path("data"),
        allow_anonymous: bool = False,
    ) -> None:
        self.settings = settings or BrokerSettings()
        self.data_dir = data_dir
        self.allow_anonymous = allow_anonymous
        self._amqtt: _AmqttBroker | None = None
        self.core: BrokerCore | None = None
        self._event_sinks: list[EventSink] = []
        self._message_listeners: list[Callable[[str, bytes], Batch | None]] = []
        self.publish_check: PublishCheck | None = None

    def set_publish_check(self, check: PublishCheck | None) -> None:
        """check(identity, topic, payload, retain) sees every client's message (and will)
        the topic rules allow, before it is routed or retained; a Refusal it returns drops the
        message (acknowledged) with a hub event. The hub's device policy is one."""
        self.publish_check = check
        if self.core is not None:
            self.core.publish_check = check

    def add_event_sink(self, sink: EventSink) -> None:
        """sink(kind, details) is called for connects, disconnects and every refusal."""
        self._event_sinks.append(sink)
        if self.core is not None:
            self.core.event_sinks.append(sink)

    def add_message_listener(self, listener: Callable[[str, bytes], Batch | None]) -> None:
        """listener(topic, payload) sees every message the broker routes (storage, API); it
        returns the commit handle of a message it stores (acknowledged once committed)."""
        self._message_listeners.append(listener)
        if self.core is not None:
            self.core.message_listeners.append(listener)

    async def start(self) -> None:
        # amqtt's Broker must be built inside the running event loop.
        amqtt = _AmqttBroker(
            _amqtt_config(self.data_dir, self.allow_anonymous, self.settings.login_failures)
        )
        core = BrokerCore(self.settings, amqtt)
        core.publish_check = self.publish_check
        core.event_sinks.extend(self._event_sinks)
        core.message_listeners.extend(self._message_listeners)
        amqtt.core = core
        await amqtt.start()
        core.start(acl_enabled=amqtt.plugins_manager.is_topic_filtering_enabled())
        self._amqtt, self.core = amqtt, core

    async def stop(self) -> None:
        if self._amqtt is None or self.core is None:
            return
        amqtt, core = self._amqtt, self.core
        self._amqtt = None
        await core.stop()
        await asyncio.sleep(0)  # let aborted connections run their endings
        await amqtt.shutdown()

    def kick(self, should_go: Callable[[Any], str | None]) -> int:
        """Disconnects every client whose identity makes should_go return a reason."""
        if self.core is None:
            return 0
        return self.core.kick(lambda conn: should_go(conn.identity))

    def retained(self, topic: str) -> bytes | None:
        """The payload retained on a topic, if any."""
        if self.core is None:
            return None
        message = self.core.retained.get(topic)
        return message.payload if message is not None else None

    def retained_devices(self) -> set[str]:
        """Devices with a retained presence status (d/<id>/s)."""
        if self.core is None:
            return set()
        return {m.topic.split("/")[1] for m in self.core.retained.matching("d/+/s")}

    def publish(self, topic: str, payload: bytes, qos: int = 0, retain: bool = False) -> None:
        """Publishes as the hub itself (events, commands)."""
        if self.core is not None:
            self.core.publish(Message(topic, payload, qos, retain))

    def _accept(self, link: Link) -> Receiver | None:
        return self.core.accept(link) if self.core is not None else None

    def tcp_protocol(self) -> asyncio.Protocol:
        """A protocol for one MQTT-over-TCP connection (``loop.create_server``'s factory)."""
        return TcpLink(self._accept)

    async def serve_websocket(self, ws: web.WebSocketResponse, request: web.Request) -> None:
        """Serves one MQTT-over-WebSocket connection until it closes."""
        link = WebSocketLink(ws, request)
        receiver = self._accept(link)
        if receiver is None:
            link.abort()
            return
        await link.serve(receiver)
