"""Cluster mode: the hub's broker seam (hub/broker/seam.py) over a RabbitMQ cluster.

Devices and browsers connect to the nodes; the hub binds no MQTT port. What the hub does:

- **Ingest**: readings arrive on a durable quorum queue bound to the device topics on
  ``amq.topic``; several hubs consume it as competing consumers. A reading is acknowledged to
  RabbitMQ only once every listener's commit handle has committed (so with PostgreSQL each is
  stored once, by (device, boot, seq), whichever hub took it). What cannot be stored (refused
  by the publish check, unparseable) is rejected to the dead-letter exchange, with a hub event;
  what the store cannot take now goes back to the queue.
- **State**: each hub also gets every status, health and reply message on a queue of its own,
  so presence, health and command replies are whole on every hub. RabbitMQ keeps retained
  messages per node and per exact topic, so retained look-ups come from what the hub saw.
- **Presence**: connects and disconnects from the event exchange; a node the management API
  reports down for a few seconds has its clients reported lost (``node_lost``).
- **Logins and rules**: the :class:`Authorizer` answers the nodes' HTTP auth backend from the
  hub's gatekeeper (its listener is hub/web/rabbitauth.py); ``kick`` closes connections
  through the management API.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import aiohttp
from aio_pika import ExchangeType
from aio_pika.abc import AbstractConnection, AbstractIncomingMessage

from hub.broker.login import Login
from hub.broker.rabbitmq.amqp import AmqpLink
from hub.broker.rabbitmq.authz import Authorizer
from hub.broker.rabbitmq.consumers import Consumers
from hub.broker.rabbitmq.keys import routing_key
from hub.broker.rabbitmq.mgmt import Management, ManagementError
from hub.broker.rabbitmq.presence import Conn, Presence, connection
from hub.broker.rabbitmq.settings import (
    SUBSCRIPTION_POLICY,
    SUBSCRIPTION_POLICY_BODY,
    RabbitSettings,
)
from hub.broker.rabbitmq.wsproxy import relay
from hub.broker.reporting import EventSink
from hub.broker.seam import MessageListener
from hub.broker.settings import PublishCheck, Refusal
from hub.config import ConfigError
from hub.security import Gatekeeper, Identity
from hub.topicmatch import filter_matches

if TYPE_CHECKING:
    from aiohttp import web

log = logging.getLogger(__name__)

EVENT_EXCHANGE = "amq.rabbitmq.event"
EVENT_KEYS = ("connection.created", "connection.closed")
START_TIMEOUT_S = 60.0  # declaring quorum queues on a loaded cluster can take half a minute
KICK_RETRY_S = 0.25  # a connection the management API does not list yet is closed again
KICK_GIVE_UP_S = 15.0
MAX_RETAINED = 200_000
MAX_KICKED = 10_000  # kicks waiting for their close event (a dead node sends none)
# A node seen down may have died up to a poll before; a command published just before that
# may still have been waiting in its queue.
LOSS_MARGIN_S = 1.0
# Each hub's queues of state messages and connection events are quorum queues of its own
# (named by a random instance id), so that they survive the node the hub's link is on: the
# devices' "online" after a node's crash arrives even when the hub's link died with it. A
# hub that is gone leaves them to expire after this long unused.
HUB_QUEUE_EXPIRES_MS = 120_000
# Each session's queue is bounded as the embedded broker's --max-queued and --max-queued-bytes
# bound it (the oldest messages make room: RabbitMQ's default overflow, with no event). An
# operator policy, since a policy with ha-* keys does not apply to the quorum queues of
# persistent sessions in 3.10, and a queue takes only one policy.
BOUNDS_POLICY = "mpy-hub-mqtt-session-bounds"


def bounds_policy(max_queued: int, max_queued_bytes: int) -> dict[str, Any]:
    return {
        "pattern": "^mqtt-subscription-",
        "apply-to": "queues",
        "priority": 0,
        "definition": {"max-length": max_queued, "max-length-bytes": max_queued_bytes},
    }


class RabbitBroker:
    def __init__(
        self,
        settings: RabbitSettings,
        *,
        ingest_filters: tuple[str, ...],
        state_filters: tuple[str, ...],
        login_failures: int = 10,
    ) -> None:
        """``ingest_filters``: the topics to store, consumed by the hubs together;
        ``state_filters``: the topics every hub sees (status, health, replies)."""
        self.settings = settings
        self.ingest_filters = ingest_filters
        self.state_filters = state_filters
        self.login_failures = login_failures
        self._gatekeeper: Gatekeeper | None = None
        self.publish_check: PublishCheck | None = None
        self._event_sinks: list[EventSink] = []
        self.message_listeners: list[MessageListener] = []
        self.authorizer: Authorizer | None = None
        self._login: Login | None = None
        self.presence = Presence()
        self._retained: OrderedDict[str, bytes] = OrderedDict()
        # pid (or name) of a connection closed by kick -> the reason, for its close event.
        self._kicked: OrderedDict[str, str] = OrderedDict()
        self.mgmt = Management(settings.mgmt_urls, settings.user, settings.password)
        self.link = AmqpLink(
            settings.amqp_urls, settings.user, settings.password, settings.vhost, self._setup
        )
        self.listeners: dict[str, list[tuple[str, int]]] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._watcher: asyncio.Task[None] | None = None
        self._ws_session: aiohttp.ClientSession | None = None
        self.consumers = Consumers(self)
        self.instance = uuid.uuid4().hex[:12]
        self._up_at: dict[str, float] = {}  # node -> when it was last seen running
        self._loss_listeners: list[Callable[[list[str], float], None]] = []

    # --- wiring ---------------------------------------------------------------------------
    def set_gatekeeper(self, gatekeeper: Gatekeeper) -> None:
        self._gatekeeper = gatekeeper

    def set_publish_check(self, check: PublishCheck | None) -> None:
        self.publish_check = check

    def add_event_sink(self, sink: EventSink) -> None:
        self._event_sinks.append(sink)

    def add_message_listener(self, listener: MessageListener) -> None:
        self.message_listeners.append(listener)

    def add_loss_listener(self, listener: Callable[[list[str], float], None]) -> None:
        """``listener(devices, since)`` hears of devices whose node crashed: their connection
        may have been dead since ``since`` (time.time()) without a will or close event, and
        what was published to them meanwhile may be lost (hub/commands.py sends it again)."""
        self._loss_listeners.append(listener)

    # --- lifecycle ------------------------------------------------------------------------
    async def start(self) -> None:
        if self._gatekeeper is None:
            raise RuntimeError("the broker needs a gatekeeper (set_gatekeeper) to start")
        self._login = Login(self._gatekeeper, self.login_failures)
        self.authorizer = Authorizer(
            self._login,
            self.emit,
            hub_user=self.settings.user,
            vhost=self.settings.vhost,
            ttl=self.settings.auth_cache_s,
            topic_check=self._topic_check,
        )
        self.link.start()
        try:
            await asyncio.wait_for(self.link.connected.wait(), START_TIMEOUT_S)
            self.listeners = await self._find_listeners()
            if not self.listeners["mqtt"] or not self.listeners["ws"]:
                raise ManagementError("the cluster has no MQTT or no Web MQTT listener")
            s = self.settings
            await self.mgmt.ensure_policy(s.vhost, SUBSCRIPTION_POLICY, SUBSCRIPTION_POLICY_BODY)
            await self.mgmt.ensure_policy(
                s.vhost,
                BOUNDS_POLICY,
                bounds_policy(s.max_queued, s.max_queued_bytes),
                kind="operator-policies",
            )
        except (TimeoutError, ManagementError) as exc:
            await self.stop()
            what = exc if isinstance(exc, ManagementError) else "no node answered"
            raise ConfigError(
                f"cannot reach the RabbitMQ cluster at {', '.join(self.settings.amqp_urls)} "
                f"(rabbitmq_amqp, rabbitmq_mgmt, rabbitmq_credentials): {what}"
            ) from None
        self._watcher = asyncio.get_running_loop().create_task(self._watch_nodes())

    def _topic_check(self, topic: str) -> Refusal | None:
        """What the publish check decides from a topic alone (the auth backend sees no
        payload; an empty one passes its payload checks): sensor names and counts."""
        check = self.publish_check
        return check(None, topic, b"", False) if check is not None else None

    async def stop(self) -> None:
        if self._watcher is not None:
            self._watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watcher
            self._watcher = None
        await self.link.stop()
        for task in list(self._tasks):
            task.cancel()
        await self.mgmt.close()
        if self._ws_session is not None:
            await self._ws_session.close()
        if self._login is not None:
            self._login.close()

    async def _find_listeners(self) -> dict[str, list[tuple[str, int]]]:
        """Where clients connect: each node's MQTT and Web MQTT listeners."""
        found: dict[str, list[tuple[str, int]]] = {"mqtt": [], "ws": []}
        for item in sorted(await self.mgmt.listeners(), key=lambda x: str(x.get("node"))):
            network = {"mqtt": "mqtt", "http/web-mqtt": "ws"}.get(str(item.get("protocol")))
            if network is None:
                continue
            host = str(item.get("ip_address") or "127.0.0.1")
            opts = item.get("socket_opts")
            if host in ("::", "0.0.0.0") and isinstance(opts, dict) and opts.get("ip"):
                ip = opts["ip"]
                host = ".".join(map(str, ip)) if isinstance(ip, list) else str(ip)
            found[network].append((host, int(item.get("port") or 0)))
        return found

    # --- messages -------------------------------------------------------------------------
    def publish(self, topic: str, payload: bytes, qos: int = 0, retain: bool = False) -> None:
        """Publishes as the hub on ``amq.topic`` (QoS 2 is 1 in RabbitMQ). RabbitMQ keeps no
        retained message for AMQP publishes: the hub remembers it for its look-ups."""
        if retain:
            self.remember(topic, payload)
        self.link.publish(routing_key(topic), payload, qos)

    def retained(self, topic: str) -> bytes | None:
        return self._retained.get(topic)

    def retained_topics(self, topic_filter: str) -> list[str]:
        return [t for t in self._retained if filter_matches(topic_filter, t)]

    def remember(self, topic: str, payload: bytes) -> None:
        if not payload:
            self._retained.pop(topic, None)
            return
        self._retained[topic] = payload
        self._retained.move_to_end(topic)
        while len(self._retained) > MAX_RETAINED:
            self._retained.popitem(last=False)

    # --- clients --------------------------------------------------------------------------
    def _identity(self, conn: Conn) -> Identity:
        known = self.authorizer.identity(conn.user, conn.client_id) if self.authorizer else None
        if known is not None:
            return known
        # Connected before this hub started: named by its user (a device's is its id).
        return Identity("token" if conn.user == "token" else "device", conn.user)

    def stats(self) -> dict[str, Any]:
        """The nodes count traffic and sessions themselves (their management API and
        Prometheus plugin); the hub knows only who is connected."""
        return {}

    def clients(self) -> dict[str, Any]:
        return {cid: self._identity(c) for cid, c in self.presence.by_client.items()}

    def kick(self, should_go: Callable[[Any], str | None]) -> int:
        """Closes, through the management API, each client whose identity makes should_go
        return a reason; forgets cached logins so the next one is decided afresh."""
        if self.authorizer is not None:
            self.authorizer.forget_answers()
        count = 0
        for conn in list(self.presence.by_client.values()):
            reason = should_go(self._identity(conn))
            if reason:
                count += 1
                self._kicked[conn.pid or conn.name] = reason
                while len(self._kicked) > MAX_KICKED:
                    self._kicked.popitem(last=False)
                self.spawn(self._close(conn, reason))
        return count

    async def _close(self, conn: Conn, reason: str) -> None:
        deadline = time.monotonic() + KICK_GIVE_UP_S
        while time.monotonic() < deadline:
            try:
                if await self.mgmt.close_connection(conn.name, reason):
                    return
            except ManagementError as exc:
                log.warning("cannot close %s's connection: %s", conn.client_id, exc)
            if self.presence.by_client.get(conn.client_id) is not conn:
                return  # gone by itself meanwhile
            await asyncio.sleep(KICK_RETRY_S)
        log.warning(
            "the cluster did not close %s's connection in %.0f s", conn.client_id, KICK_GIVE_UP_S
        )

    # --- networks -------------------------------------------------------------------------
    def client_listeners(self) -> dict[str, list[tuple[str, int]]]:
        """The nodes' MQTT and Web MQTT listeners (from the management API once started)."""
        return self.listeners

    def tcp_protocol(self) -> asyncio.Protocol:
        raise RuntimeError("in cluster mode devices connect to the RabbitMQ nodes, not the hub")

    async def serve_websocket(self, ws: web.WebSocketResponse, request: web.Request) -> None:
        """Relayed to a node's Web MQTT listener, so pages on the hub's origin work as they
        do with the embedded broker (browsers may also connect to a node's ``/ws``)."""
        if self._ws_session is None:
            self._ws_session = aiohttp.ClientSession()
        nodes = self.listeners.get("ws", [])
        urls = [f"ws://{h}:{p}{self.settings.ws_path}" for h, p in nodes]
        await relay(ws, self._ws_session, urls)

    # --- AMQP -----------------------------------------------------------------------------
    async def _setup(self, amqp: AbstractConnection) -> None:
        """Declares the queues (again, after a reconnect) and starts consuming them."""
        s = self.settings
        channel = await amqp.channel()
        await channel.set_qos(prefetch_count=s.prefetch)
        dead = await channel.declare_exchange(s.dead_letters, ExchangeType.FANOUT, durable=True)
        dead_queue = await channel.declare_queue(
            s.dead_letters, durable=True, arguments={"x-queue-type": "quorum"}
        )
        await dead_queue.bind(dead)
        ingest = await channel.declare_queue(
            s.ingest_queue,
            durable=True,
            arguments={"x-queue-type": "quorum", "x-dead-letter-exchange": s.dead_letters},
        )
        for topic_filter in self.ingest_filters:
            await ingest.bind("amq.topic", routing_key(topic_filter))
        own: dict[str, Any] = {"x-queue-type": "quorum", "x-expires": HUB_QUEUE_EXPIRES_MS}
        state = await channel.declare_queue(
            f"hub.state.{self.instance}", durable=True, arguments=own
        )
        for topic_filter in self.state_filters:
            await state.bind("amq.topic", routing_key(topic_filter))
        events = await channel.declare_queue(
            f"hub.events.{self.instance}", durable=True, arguments=own
        )
        for key in EVENT_KEYS:
            await events.bind(EVENT_EXCHANGE, key)
        await events.consume(self._on_event, no_ack=True)
        await state.consume(self.consumers.on_state, no_ack=True)
        await ingest.consume(self.consumers.on_reading)

    async def _on_event(self, message: AbstractIncomingMessage) -> None:
        headers = dict(message.headers or {})
        if message.routing_key == "connection.created":
            conn = connection(headers)
            if conn is None:
                return
            self.presence.created(conn)
            self._client_event("connected", conn)
        elif message.routing_key == "connection.closed":
            pid, name = str(headers.get("pid") or ""), str(headers.get("name") or "")
            gone = self.presence.closed(pid, name)
            reason = self._kicked.pop(pid, None) or self._kicked.pop(name, "closed")
            if gone is not None:
                self._client_event("disconnected", gone, reason=reason)

    def _client_event(self, kind: str, conn: Conn, **extra: Any) -> None:
        identity = self._identity(conn)
        self.emit(
            kind,
            {
                "kind": kind,
                "client_id": conn.client_id,
                "identity": identity.kind,
                "name": identity.name,
                "network": conn.network,
                "peer": conn.peer,
                "detail": "",
                "node": conn.node,
                **extra,
            },
        )

    async def _watch_nodes(self) -> None:
        """Node health from the management API: the clients of a node down for
        ``node_lost_grace`` s that did not reconnect elsewhere are reported lost."""
        while True:
            await asyncio.sleep(self.settings.node_poll)
            try:
                running = await self.mgmt.nodes()
            except ManagementError as exc:
                log.debug("node health: %s", exc)
                continue
            now = time.time()
            for node in self.presence.nodes(running, time.monotonic()):
                self._node_down(node, self._up_at.get(node, now) - LOSS_MARGIN_S)
            self._up_at.update((node, now) for node, up in running.items() if up)
            lost = self.presence.lost(time.monotonic(), self.settings.node_lost_grace)
            if lost:
                await self._report_lost(lost)

    def _node_down(self, node: str, since: float) -> None:
        """Tells the loss listeners which devices were on a node just seen down."""
        devices = [
            conn.client_id
            for conn in self.presence.clients_of(node)
            if self._identity(conn).kind == "device"
        ]
        log.warning("node %s is down: %d devices were on it", node, len(devices))
        for listener in self._loss_listeners:
            try:
                listener(devices, since)
            except Exception:
                log.exception("connection-loss listener failed")

    async def _report_lost(self, lost: list[Conn]) -> None:
        """Reports the clients of a dead node lost, unless the management API lists them on
        another node (their connection.created can be missed: the hub's own link may have
        been on the dead node)."""
        try:
            listed = {c["client_id"]: c for c in await self.mgmt.connections()}
        except ManagementError as exc:
            log.warning(
                "node health: cannot list connections (%s): reporting %d clients lost",
                exc,
                len(lost),
            )
            listed = {}
        for conn in lost:
            now = listed.get(conn.client_id)
            if now is not None and now["node"] != conn.node and self.presence.running(now["node"]):
                network = "ws" if "Web" in now["protocol"] else "mqtt"
                self.presence.created(
                    Conn(
                        conn.client_id,
                        now["user"],
                        now["name"],
                        "",
                        now["node"],
                        network,
                        conn.peer,
                    )
                )
                continue
            self._client_event("disconnected", conn, reason="node_lost")

    # --- helpers --------------------------------------------------------------------------
    def emit(self, kind: str, event: dict[str, Any]) -> None:
        for sink in self._event_sinks:
            try:
                sink(kind, event)
            except Exception:
                log.exception("event sink failed on %s", kind)

    def spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.debug("cluster call failed: %s", task.exception())
