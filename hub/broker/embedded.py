"""The embedded broker: the hub's MQTT core (hub/broker/core.py) on amqtt's plugin framework.

It implements :class:`hub.broker.seam.Broker`. amqtt's Broker supplies the lifecycle (its
start and shutdown events reach the plugins) and loads the users' plugins
(hub/broker/extensions.py); the hub's gatekeeper decides logins first (hub/broker/login.py).
Connections come from sockets the hub owns. With a state store (hub/broker/statestore.py)
the broker's state is loaded before ``start`` returns and written as it changes
(hub/broker/journal.py).
"""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from amqtt.broker import Broker
from amqtt.errors import PluginError, PluginLoadError

from hub.broker.core import BrokerCore, BrokerSettings, EventSink, PublishCheck
from hub.broker.extensions import Extensions
from hub.broker.journal import Journal
from hub.broker.login import Login
from hub.broker.seam import MessageListener
from hub.broker.session import Message
from hub.broker.statestore import SqlBrokerState
from hub.broker.traffic import session_stats
from hub.broker.transports import Link, Receiver, TcpLink, WebSocketLink
from hub.config import ConfigError
from hub.security import Gatekeeper

if TYPE_CHECKING:  # aiohttp loads with the web side, after the MQTT listener is up
    from aiohttp import web

log = logging.getLogger(__name__)


def _amqtt_config(plugins: dict[str, dict[str, Any]]) -> dict[str, Any]:
    external = {"type": "external"}
    # amqtt merges every listener with "default"; external listeners bind nothing. An empty
    # "plugins" section loads no plugin (none from entry points either).
    return {"listeners": {"default": external}, "plugins": dict(plugins)}


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
        gatekeeper: Gatekeeper | None = None,
        plugins: dict[str, dict[str, Any]] | None = None,
        state: SqlBrokerState | None = None,
    ) -> None:
        """``plugins``: the users' amqtt plugins (dotted path -> config); ``state``: where the
        broker keeps what must survive a restart (None: memory only)."""
        self.settings = settings or BrokerSettings()
        self.state = state
        self.plugins = dict(plugins or {})
        self._gatekeeper = gatekeeper
        self._amqtt: _AmqttBroker | None = None
        self._core: BrokerCore | None = None
        self._event_sinks: list[EventSink] = []
        self._message_listeners: list[MessageListener] = []
        self.publish_check: PublishCheck | None = None

    def set_gatekeeper(self, gatekeeper: Gatekeeper) -> None:
        """Who may connect (before ``start``)."""
        self._gatekeeper = gatekeeper

    def set_publish_check(self, check: PublishCheck | None) -> None:
        """check(identity, topic, payload, retain) sees every client's message (and will)
        the topic rules allow, before it is routed or retained; a Refusal it returns drops the
        message (acknowledged) with a hub event. The hub's device policy is one."""
        self.publish_check = check
        if self._core is not None:
            self._core.publish_check = check

    def add_event_sink(self, sink: EventSink) -> None:
        """sink(kind, details) is called for connects, disconnects and every refusal."""
        self._event_sinks.append(sink)
        if self._core is not None:
            self._core.event_sinks.append(sink)

    def add_message_listener(self, listener: MessageListener) -> None:
        """listener(topic, payload) sees every message the broker routes (storage, API); it
        returns the commit handle of a message it stores (acknowledged once committed)."""
        self._message_listeners.append(listener)
        if self._core is not None:
            self._core.message_listeners.append(listener)

    async def start(self) -> None:
        if self._gatekeeper is None:
            raise RuntimeError("the broker needs a gatekeeper (set_gatekeeper) to start")
        # amqtt's Broker must be built inside the running event loop.
        try:
            amqtt = _AmqttBroker(_amqtt_config(self.plugins))
        except (PluginError, PluginLoadError) as exc:
            cause = exc.__cause__ or exc
            raise ConfigError(f"amqtt_plugins: {exc}: {cause}") from None
        login = Login(self._gatekeeper, self.settings.login_failures)
        core = BrokerCore(self.settings, login, Extensions(amqtt.plugins_manager))
        core.publish_check = self.publish_check
        core.event_sinks.extend(self._event_sinks)
        core.message_listeners.extend(self._message_listeners)
        amqtt.core = core
        if self.state is not None:
            journal = Journal(
                self.state, on_failure=self._state_failed, on_recovered=self._state_recovered
            )
            core.journal = journal
            # What a restart loads lives long: no collector pass over it while it loads, and
            # none after (gc.freeze, as hub/broker/retained.py does for retained messages).
            gc.disable()
            try:
                core.restore(await journal.load())
            finally:
                gc.enable()
            gc.freeze()
        try:
            await amqtt.start()
        except BaseException:
            login.close()
            raise
        core.start()
        self._amqtt, self._core = amqtt, core

    async def stop(self) -> None:
        if self._amqtt is None or self._core is None:
            return
        amqtt, core = self._amqtt, self._core
        self._amqtt = None
        await core.stop()
        await asyncio.sleep(0)  # let aborted connections run their endings
        await core.close_journal()
        await amqtt.shutdown()
        core.login.close()

    def _state_failed(self, exc: BaseException, first: bool) -> None:
        """The first failure of an outage: logged, and a ``store_failure`` hub event (with
        ``store: broker``) as ingest raises for readings."""
        if first:
            text = str(exc).strip().splitlines()
            detail = f"{type(exc).__name__}: {text[0][:300] if text else 'no message'}"
            log.error(
                "the broker's state cannot be written (publishes that change it go "
                "unacknowledged until it can): %s",
                detail,
            )
            self._hub_event("store_failure", detail)

    def _state_recovered(self) -> None:
        log.warning("the broker's state is written again")
        self._hub_event("store_recovered", "the broker's state is written again")

    def _hub_event(self, kind: str, detail: str) -> None:
        if self._core is not None:
            event = {
                "kind": kind,
                "client_id": "hub",
                "identity": None,
                "name": None,
                "detail": detail,
                "store": "broker",
            }
            self._core._emit(kind, event)

    def kick(self, should_go: Callable[[Any], str | None]) -> int:
        """Disconnects every client whose identity makes should_go return a reason."""
        if self._core is None:
            return 0
        return self._core.kick(lambda conn: should_go(conn.identity))

    def retained(self, topic: str) -> bytes | None:
        """The payload retained on a topic, if any."""
        if self._core is None:
            return None
        message = self._core.retained.get(topic)
        return message.payload if message is not None else None

    def retained_topics(self, topic_filter: str) -> list[str]:
        """The topics with a retained message that the filter matches."""
        if self._core is None:
            return []
        return [m.topic for m in self._core.retained.matching(topic_filter)]

    def stats(self) -> dict[str, Any]:
        """Traffic and sessions for the metrics endpoint (a pass over the sessions)."""
        core = self._core
        if core is None:
            return {}
        traffic = core.traffic
        return {
            "messages_received": dict(enumerate(traffic.received)),
            "messages_sent": dict(enumerate(traffic.sent)),
            "bytes_received": traffic.bytes_in,
            "bytes_sent": traffic.bytes_out,
            **session_stats(core.sessions.values()),
        }

    def clients(self) -> dict[str, Any]:
        """Connected clients: client id -> identity."""
        if self._core is None:
            return {}
        return {cid: conn.identity for cid, conn in self._core.connections.items()}

    def publish(self, topic: str, payload: bytes, qos: int = 0, retain: bool = False) -> None:
        """Publishes as the hub itself (events, commands)."""
        if self._core is not None:
            self._core.publish(Message(topic, payload, qos, retain))

    def _accept(self, link: Link) -> Receiver | None:
        return self._core.accept(link) if self._core is not None else None

    def client_listeners(self) -> None:
        """None: clients connect through the hub's own sockets."""
        return None

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
