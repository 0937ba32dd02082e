"""The running hub: binds its sockets, starts the broker and the web side, stops them cleanly.

Start-up order (issue #18): everything MQTT needs comes first (the registry and logins, the
broker's durable state, storage and the device state), then the MQTT listeners accept, then
the ready line; aiohttp, the console and its API, Home Assistant discovery and the cluster's
auth backend are imported and started after it. Their sockets are bound and listening from
the start, so a browser that connects early waits in the kernel's queue for a fraction of a
second instead of being refused.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
import socket
import sqlite3
import time
from dataclasses import asdict, fields
from functools import partial
from typing import TYPE_CHECKING

from hub.acceptor import Acceptor
from hub.alarmservice import AlarmService
from hub.broker import (
    Broker,
    BrokerSettings,
    EmbeddedBroker,
    RabbitSettings,
    open_broker_state,
)
from hub.certs import server_context
from hub.commands import Commands
from hub.config import HubConfig, prepare_data_dir
from hub.datalock import DataDirLock
from hub.desired.service import DesiredService
from hub.devicepolicy import DevicePolicy
from hub.devicestate import DeviceStates
from hub.endpoints import Endpoints, ListenError
from hub.events import HubEvents
from hub.fanout import DeviceListeners
from hub.ingest import Ingest
from hub.metrics import Metrics
from hub.ota.guard import update_guard
from hub.ota.rollout import RolloutEngine
from hub.ota.transfer import Transfer
from hub.recorder import Recorder
from hub.registry import Fingerprint, Registry
from hub.routes.service import Routes
from hub.security import Gatekeeper, load_key
from hub.store import SqlHistory, open_store
from hub.topics import (
    HEALTH_FILTER,
    REPLY_FILTER,
    STATUS_FILTER,
    TELEMETRY_FILTER,
    meta_topic,
    status_topic,
)

if TYPE_CHECKING:  # loaded by start_web, after the MQTT listeners (aiohttp takes a while)
    import ssl

    from aiohttp import web

    from hub.accounts import Accounts
    from hub.hass import HassDiscovery
    from hub.web.rabbitauth import AuthBackend

log = logging.getLogger(__name__)

SHUTDOWN_GRACE_S = 1.0
REGISTRY_POLL_S = 0.5


def _reason_to_kick(changed: dict[str, str], identity: object) -> str | None:
    if getattr(identity, "kind", None) != "device":
        return None
    return changed.get(str(getattr(identity, "name", "")))


def _what_changed(before: Fingerprint, after: Fingerprint | None) -> str | None:
    if after is None:
        return "kicked: device removed from the registry"
    if not after.enabled:
        return "disabled" if before.enabled else None
    if after.secret_hash != before.secret_hash:
        return "kicked: secret rotated"
    if after.tls_policy != before.tls_policy:
        return "kicked: TLS policy changed"
    if after.cert_fingerprint != before.cert_fingerprint and before.cert_fingerprint:
        return "kicked: client certificate replaced"
    return None


# BrokerSettings fields the hub's config does not set: the broker's own constants.
BROKER_CONSTANTS = frozenset({"max_qos", "connect_timeout", "keepalive_sweep"})


def broker_settings(config: HubConfig) -> BrokerSettings:
    """The broker's settings from the hub's config: every BrokerSettings field HubConfig has
    comes from it, so the two never disagree (tests/hub/test_config.py checks)."""
    names = {f.name for f in fields(BrokerSettings)} - BROKER_CONSTANTS
    return BrokerSettings(**{name: getattr(config, name) for name in names})


def mqtt_limits(config: HubConfig) -> dict[str, int]:
    """The subscription quotas the console's pages must fit in (served by /api/hub)."""
    return {
        "filters_per_subscribe": config.max_filters_per_subscribe,
        "subscriptions": config.max_subscriptions,
    }


# Connections the kernel completes and queues before the hub accepts them. Longer is not
# better: a device gives up on a CONNECT after its I/O timeout (5 s), so a queue longer than
# the hub drains in that time holds only connections whose device has left, and the hub spends
# a reconnect storm on dead ones (congestion collapse). Measured (BENCHMARKS.md, session 4):
# 10,000 devices after a SIGKILL on a loaded machine were all back within 300 s with 1,024,
# 1,608 of them with the kernel's 4,096. Past a full queue a SYN is dropped and the device's
# kernel sends it again a second later: the hub's backpressure.
LISTEN_BACKLOG = 1024

# What start_web needs, imported in a thread while the event loop serves MQTT: aiohttp and the
# console are most of the hub's imports (about 1.3 s of a loaded machine's CPU), and imported
# on the loop they held every CONNECT of a restarted hub's fleet until they were done.
WEB_MODULES = (
    "aiohttp.web",
    "hub.accounts",
    "hub.routes.api",
    "hub.web.api",
    "hub.web.app",
    "hub.web.auth",
    "hub.web.fleet_api",
    "hub.web.guard",
    "hub.web.manage",
    "hub.web.session",
)


def _import_web() -> None:
    for name in WEB_MODULES:
        importlib.import_module(name)


def make_broker(config: HubConfig) -> Broker:
    """The broker behind the seam: the embedded one, or a RabbitMQ cluster (cluster mode),
    told which topics to store (consumed by the hubs together) and which every hub sees."""
    if config.broker == "rabbitmq":
        from hub.broker import RabbitBroker  # aio-pika only where it is used

        return RabbitBroker(
            RabbitSettings.from_config(config),
            ingest_filters=(TELEMETRY_FILTER,),
            state_filters=(STATUS_FILTER, HEALTH_FILTER, REPLY_FILTER),
            login_failures=config.login_failures,
        )
    return EmbeddedBroker(broker_settings(config), plugins=config.amqtt_plugins)


def _listen(host: str, port: int, what: str) -> socket.socket:
    try:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        return socket.create_server(
            (host, port), family=family, reuse_port=False, backlog=LISTEN_BACKLOG
        )
    except OSError as exc:
        raise ListenError(f"cannot listen for {what} on {host}:{port}: {exc.strerror}") from exc


def _address(sock: socket.socket) -> tuple[str, int]:
    host, port = sock.getsockname()[:2]
    return host, port


class Hub:
    """Owns the hub's sockets, broker and web application."""

    def __init__(self, config: HubConfig) -> None:
        self.config = config
        self.broker: Broker = make_broker(config)
        self._auth_backend: AuthBackend | None = None  # cluster mode: RabbitMQ asks it
        self.auth_address: tuple[str, int] | None = None
        # Device topics: sensor names and quotas, status and health payloads (hub/devicepolicy).
        # ... and app updates come from the hub only (hub/ota/guard.py).
        self.broker.set_publish_check(
            DevicePolicy(config.max_sensors, config.max_sensor_name, then=update_guard)
        )
        self.events = HubEvents(lambda t, p: self.broker.publish(t, p, qos=1), batched=True)
        self.broker.add_event_sink(self.events)
        self.broker.add_event_sink(self._device_seen)
        self.metrics = Metrics(public=config.metrics_public)  # /metrics (hub/metrics.py)
        self.broker.add_event_sink(self.metrics.observed.on_event)
        self.broker.add_message_listener(self.metrics.observed.on_message)
        self.registry: Registry | None = None
        self._api_registry: Registry | None = None  # the HTTP API's own connection
        self._auth_registry: Registry | None = None  # the broker's logins' own connection
        self._fleet_registry: Registry | None = None  # the fleet list's
        self.accounts: Accounts | None = None
        self._seen: dict[str, float] = {}  # device id -> last connect or disconnect
        self.store: SqlHistory | None = None
        self.recorder: Recorder | None = None
        self.states: DeviceStates | None = None
        self.commands: Commands | None = None
        self.alarms: AlarmService | None = None
        self.ota: Transfer | None = None
        self.rollouts: RolloutEngine | None = None
        self.desired: DesiredService | None = None
        self.ingest: Ingest | None = None
        self.routes: Routes | None = None
        self.hass: HassDiscovery | None = None
        # Status, health and replies: their listeners, behind one that skips readings.
        self.device_listeners = DeviceListeners()
        self._watcher: asyncio.Task[None] | None = None
        self._servers: list[asyncio.AbstractServer] = []
        self._web_socks: list[socket.socket] = []  # bound and listening; served by start_web
        self._tls_web: tuple[socket.socket, ssl.SSLContext] | None = (
            None  # wss: its socket and context
        )
        self._key = b""
        self._web_runner: web.AppRunner | None = None
        self.endpoints: Endpoints | None = None
        self._lock = DataDirLock(config.data_dir)

    async def start(self) -> Endpoints:
        """Brings the MQTT side up and returns once its listeners accept (the ready line's
        moment); the HTTP and WebSocket sockets are bound and listening: ``start_web`` then
        serves them."""
        cfg = self.config
        began = time.monotonic()
        # One hub per data dir (DataDirBusy otherwise); `hub restore` checks the same lock.
        prepare_data_dir(cfg.data_dir)
        self._lock.acquire()
        # Cluster mode: devices connect to the RabbitMQ nodes; the hub binds no MQTT port.
        cluster = self.broker.client_listeners() is not None
        mqtt_sock = None if cluster else _listen(cfg.host, cfg.mqtt_port, "MQTT")
        sockets = [_listen(cfg.host, cfg.ws_port, "WS")]
        if not cfg.http_shares_ws_port:
            assert cfg.http_port is not None
            sockets.append(_listen(cfg.host, cfg.http_port, "HTTP"))
        ws_sock, *http_socks = sockets
        self._web_socks = sockets
        ws_address = _address(ws_sock)
        http_address = _address(http_socks[0]) if http_socks else ws_address
        tls = server_context(cfg.data_dir)
        tls_devices = server_context(cfg.data_dir, client_certs=True)
        tls_socks: list[socket.socket] = []
        if tls is not None and not cluster:
            tls_socks = [
                _listen(cfg.host, cfg.mqtts_port, "MQTT over TLS"),
                _listen(cfg.host, cfg.wss_port, "WSS"),
            ]
            self._tls_web = (tls_socks[1], tls)

        self.registry = Registry(cfg.data_dir)
        self._key = key = load_key(cfg.data_dir)
        # The broker's logins read the registry through a connection of their own.
        self._auth_registry = Registry(cfg.data_dir)
        gatekeeper = Gatekeeper(self._auth_registry, key, allow_anonymous=cfg.allow_anonymous)
        self.broker.set_gatekeeper(gatekeeper)
        self.store = open_store(cfg.store_url, cfg.data_dir, sync=cfg.store_sync)
        # The broker's retained messages and persistent sessions, beside the telemetry.
        if isinstance(self.broker, EmbeddedBroker):  # a cluster keeps its own
            self.broker.state = await asyncio.to_thread(
                open_broker_state, cfg.store_url, cfg.data_dir, sync=cfg.store_sync
            )
        self.ingest = Ingest(
            self.metrics.timed(self.store),  # each commit timed for /metrics
            cfg.retention_days * 86400 if cfg.retention_days else None,
            data_dir=cfg.data_dir,
            report=self.events,
            max_pending=cfg.store_queue,
            disk_low=cfg.disk_low,
        )
        # Routes (hub/routes/): a message both store is acknowledged once both have.
        self.routes = Routes(cfg.data_dir, self.broker, self.events)
        await self.routes.start(cfg.routes)
        self.broker.add_message_listener(self.routes.joined(self.ingest.on_message))
        self.ingest.start()
        # Each device's last known state, loaded before the hub accepts connections.
        self.recorder = Recorder(self.store)
        self.states = DeviceStates(self.recorder)
        self.states.load(await asyncio.to_thread(self.store.load_states))
        self.ingest.on_reading = self.states.on_reading  # readings, parsed once by ingest
        self.broker.add_message_listener(self.device_listeners)
        self.device_listeners.add(self.states.on_message)
        self.broker.add_event_sink(self.states.on_event)
        top = await asyncio.to_thread(self.store.max_command_id)
        self.commands = Commands(self.broker, self.recorder, top + 1)
        self.commands.load(await asyncio.to_thread(self.store.pending_commands))
        self.device_listeners.add(self.commands.on_message)
        self.states.observers.append(self.commands.on_state)
        add_loss_listener = getattr(self.broker, "add_loss_listener", None)  # cluster mode's
        if add_loss_listener is not None:  # a crashed node's devices: hub/commands.py
            add_loss_listener(self.commands.connections_lost)
        self.commands.start()
        self.alarms = AlarmService(self.store, self.recorder, self.states, self.events)
        await self.alarms.start()
        # App updates over the air (hub/ota): offers, chunks on request, each device's state.
        self.ota = Transfer(self.broker, cfg.data_dir, self.states, self.events)
        await self.ota.start()
        self.device_listeners.add(self.ota.on_message)
        self.states.observers.append(self.ota.on_state)
        # Staged rollouts (hub/ota/rollout.py): assign devices through the OTA store.
        self.rollouts = RolloutEngine(cfg.data_dir, self.states, self.events)
        await self.rollouts.start()
        # Desired state (hub/desired): each device's delta, as settings and app updates.
        self.desired = DesiredService(
            cfg.data_dir, self.states, self.commands, self.ota, self.events
        )
        await self.desired.start()
        self.broker.add_message_listener(self.desired.on_message)
        self.states.observers.append(self.desired.on_state)
        self.recorder.start()
        await self.broker.start()
        authorizer = getattr(self.broker, "authorizer", None)  # cluster mode's logins
        if authorizer is not None:
            from hub.web.rabbitauth import AuthBackend

            self._auth_backend = AuthBackend(authorizer, cfg.auth_http_allow.split(","))
            self.auth_address = await self._auth_backend.start(
                cfg.auth_http_host, cfg.auth_http_port
            )
        self._watcher = asyncio.get_running_loop().create_task(self._watch_registry())
        # The Acceptor pauses accepting when out of file descriptors (hub/acceptor.py).
        if mqtt_sock is not None:
            self._servers = [Acceptor(self.broker.tcp_protocol, mqtt_sock)]
        if tls_socks:
            self._servers.append(
                Acceptor(self.broker.tcp_protocol, tls_socks[0], ssl_context=tls_devices)
            )
        if (nodes := self.broker.client_listeners()) is not None:  # the cluster's first node
            mqtt_address, ws_address = nodes["mqtt"][0], nodes["ws"][0]
        else:
            assert mqtt_sock is not None
            mqtt_address = _address(mqtt_sock)
        self.endpoints = Endpoints(
            mqtt_address,
            ws_address,
            http_address,
            *([_address(tls_socks[0]), _address(tls_socks[1])] if tls_socks else []),
        )
        log.info(
            "hub listening: %s (MQTT up %.2f s after the start began)",
            self.endpoints.ready_line(),
            time.monotonic() - began,
        )
        return self.endpoints

    async def start_web(self) -> None:
        """The rest, after the MQTT listeners: aiohttp, the console and its API on the sockets
        ``start`` bound, Home Assistant discovery, the cluster's auth backend."""
        began = time.monotonic()
        # Off the loop: it goes on admitting devices meanwhile (sharing the GIL with this).
        await asyncio.to_thread(_import_web)
        from hub.accounts import Accounts
        from hub.routes.api import RoutesApi
        from hub.web.api import Api
        from hub.web.app import build_app
        from hub.web.auth import Auth
        from hub.web.fleet_api import FleetApi
        from hub.web.guard import Guard, GuardedSite, GuardSettings
        from hub.web.manage import Manage
        from hub.web.session import Sessions

        cfg = self.config
        assert self.states is not None and self.alarms is not None and self.ingest is not None
        assert self.routes is not None and self.store is not None and self.commands is not None
        if cfg.hass_discovery:  # Home Assistant MQTT discovery (hub/hass.py)
            from hub.hass import HassDiscovery, load_boards

            self.hass = HassDiscovery(
                self.broker, cfg.hass_prefix, await asyncio.to_thread(load_boards)
            )
            self.states.observers.append(self.hass.on_state)
            self.states.reading_observers.append(self.hass.on_reading)
            self.device_listeners.add(self.hass.on_message)
            self.hass.start(self.states.states)
        if cfg.public_view:
            log.warning(
                "PUBLIC VIEW: --public-view shows the console's read-only view (the fleet, "
                "telemetry, health and a viewer's MQTT token) to anyone who reaches the hub"
            )
        self._api_registry = Registry(cfg.data_dir)
        self._fleet_registry = Registry(cfg.data_dir)  # sees the console's changes too
        self.accounts = Accounts(cfg.data_dir)
        guard = Guard(
            GuardSettings(
                header_timeout=cfg.http_header_timeout,
                body_timeout=cfg.http_body_timeout,
                idle_timeout=cfg.http_idle_timeout,
                max_body=cfg.http_max_body,
                max_per_address=cfg.http_max_per_address,
                max_connections=cfg.http_max_connections,
            )
        )
        sessions = Sessions(cfg.session_idle_s, cfg.session_max_s)
        auth = Auth(
            self._key,
            self.accounts,
            sessions,
            self.events,
            public_view=cfg.public_view,
            tls_port=_address(self._tls_web[0])[1] if self._tls_web else None,
        )
        manage = Manage(self._api_registry, self.accounts, sessions, cfg.data_dir, self.events)
        ingest = self.ingest
        fleet = FleetApi(self._fleet_registry, self.store, self.states, self.alarms.alarms.counts)
        api = Api(
            self.broker,
            self._api_registry,
            self.store,
            fleet,
            self.commands,
            self.alarms,
            storage_stats=lambda: asdict(ingest.stats),
        )
        sources, alarms = self.metrics.sources, self.alarms
        sources.storage = lambda: asdict(ingest.stats)
        sources.retained = lambda: len(self.broker.retained_topics("#"))
        sources.broker = self.broker.stats
        sources.alarms = lambda: sum(alarms.alarms.counts().values())
        sources.routes = self.routes.listing
        integrations: dict[str, object] = {
            "metrics": self.metrics,
            "routes": RoutesApi(self.routes),
        }
        if self.rollouts is not None:  # staged rollouts' API (hub/web/rollouts_api.py)
            from hub.web.rollouts_api import RolloutsApi

            integrations["rollouts"] = RolloutsApi(self.rollouts, cfg.data_dir)
        if self.desired is not None:
            from hub.web.desired_api import DesiredApi

            integrations["desired"] = DesiredApi(self.desired, self._api_registry)
        from aiohttp import web

        self._web_runner = web.AppRunner(
            build_app(self.broker, auth, api, manage, mqtt_limits(cfg), integrations),
            access_log=None,
            shutdown_timeout=SHUTDOWN_GRACE_S,
            **guard.handler_args(),
        )
        await self._web_runner.setup()
        for sock in self._web_socks:
            await GuardedSite(self._web_runner, sock, guard).start()
        if self._tls_web is not None:
            sock, tls = self._tls_web
            await GuardedSite(self._web_runner, sock, guard, ssl_context=tls).start()
        log.info("console serving (%.2f s after MQTT)", time.monotonic() - began)

    def _device_seen(self, kind: str, event: dict[str, object]) -> None:
        """Notes when devices connect and disconnect; written to the registry in batches."""
        if event.get("identity") == "device" and kind in ("connected", "disconnected"):
            self._seen[str(event["name"])] = time.time()

    async def _write_seen(self) -> None:
        seen, self._seen = self._seen, {}
        if seen and self.registry is not None:
            await asyncio.get_running_loop().run_in_executor(None, self.registry.touch, seen)

    async def _watch_registry(self) -> None:
        """Records last-seen times; disconnects devices at once when `hub device` disables,
        removes or rotates them."""
        assert self.registry is not None
        registry = self.registry
        version = await asyncio.to_thread(registry.data_version)
        known = await asyncio.to_thread(registry.fingerprints)
        while True:
            await asyncio.sleep(REGISTRY_POLL_S)
            try:
                await self._write_seen()
            except sqlite3.Error as exc:
                log.warning("could not record when devices were last seen: %s", exc)
            latest = await asyncio.to_thread(registry.data_version)
            if latest == version:
                continue
            version = latest
            now = await asyncio.to_thread(registry.fingerprints)
            changed = {d: why for d in known if (why := _what_changed(known[d], now.get(d)))}
            # Added and disabled within one poll: it may have connected in between.
            changed.update(
                {d: "disabled" for d in now.keys() - known.keys() if not now[d].enabled}
            )
            removed = [d for d in known if d not in now]
            known = now
            if changed:
                self.broker.kick(partial(_reason_to_kick, changed))
            for device in removed:  # a removed device's presence and health are gone too
                self.broker.publish(status_topic(device), b"", qos=1, retain=True)
                self.broker.publish(meta_topic(device), b"", qos=1, retain=True)

    async def stop(self) -> None:
        self.events.flush()  # what was raised in the last pass, before the broker stops
        if self._watcher is not None:
            self._watcher.cancel()
        for server in self._servers:
            server.close()
        if self.routes is not None:
            await self.routes.pause()  # no route publishes into a stopped broker
        await self.broker.stop()
        if self._auth_backend is not None:
            await self._auth_backend.stop()
        if self._web_runner is not None:
            await self._web_runner.cleanup()
        for sock in self._web_socks:  # closed already if start_web served them
            sock.close()
        for server in self._servers:
            await server.wait_closed()
        if self.ingest is not None:
            await self.ingest.stop()
        if self.routes is not None:
            await self.routes.stop()
        if self.hass is not None:
            await self.hass.stop()
        if self.commands is not None:
            await self.commands.stop()
        if self.alarms is not None:
            await self.alarms.stop()
        if self.rollouts is not None:
            await self.rollouts.stop()
        if self.desired is not None:
            await self.desired.stop()
        if self.ota is not None:
            await self.ota.stop()
        if self.recorder is not None:
            await self.recorder.stop()
        if self.store is not None:
            self.store.close()
        if self.registry is not None:
            await self._write_seen()
            self.registry.close()
        for other in (
            self._api_registry,
            self._auth_registry,
            self._fleet_registry,
            self.accounts,
        ):
            if other is not None:
                other.close()
        self._lock.release()
        log.info("hub stopped")
