"""The running hub: binds its sockets, starts the broker and the web side, stops them cleanly."""

from __future__ import annotations

import asyncio
import logging
import socket
import sqlite3
import time
from dataclasses import asdict, fields
from functools import partial

from aiohttp import web

from hub.accounts import Accounts
from hub.alarmservice import AlarmService
from hub.broker import Broker, BrokerSettings, EmbeddedBroker
from hub.certs import server_context
from hub.commands import Commands
from hub.config import HubConfig, prepare_data_dir
from hub.datalock import DataDirLock
from hub.devicepolicy import DevicePolicy
from hub.devicestate import DeviceStates
from hub.endpoints import Endpoints, ListenError
from hub.events import HubEvents
from hub.ingest import Ingest
from hub.recorder import Recorder
from hub.registry import Fingerprint, Registry
from hub.security import Gatekeeper, load_key
from hub.store import SqlHistory, open_store
from hub.topics import meta_topic, status_topic
from hub.web.api import Api
from hub.web.app import build_app
from hub.web.auth import Auth
from hub.web.fleet_api import FleetApi
from hub.web.guard import Acceptor, Guard, GuardedSite, GuardSettings
from hub.web.manage import Manage
from hub.web.session import Sessions

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


def _listen(host: str, port: int, what: str) -> socket.socket:
    try:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        return socket.create_server((host, port), family=family, reuse_port=False, backlog=1024)
    except OSError as exc:
        raise ListenError(f"cannot listen for {what} on {host}:{port}: {exc.strerror}") from exc


def _address(sock: socket.socket) -> tuple[str, int]:
    host, port = sock.getsockname()[:2]
    return host, port


class Hub:
    """Owns the hub's sockets, broker and web application."""

    def __init__(self, config: HubConfig) -> None:
        self.config = config
        self.broker: Broker = EmbeddedBroker(
            broker_settings(config),
            plugins=config.amqtt_plugins,
        )
        # Device topics: sensor names and quotas, status and health payloads (hub/devicepolicy).
        self.broker.set_publish_check(DevicePolicy(config.max_sensors, config.max_sensor_name))
        self.events = HubEvents(lambda t, p: self.broker.publish(t, p, qos=1))
        self.broker.add_event_sink(self.events)
        self.broker.add_event_sink(self._device_seen)
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
        self.ingest: Ingest | None = None
        self._watcher: asyncio.Task[None] | None = None
        self._servers: list[asyncio.AbstractServer] = []
        self.guard = Guard(
            GuardSettings(
                header_timeout=config.http_header_timeout,
                body_timeout=config.http_body_timeout,
                idle_timeout=config.http_idle_timeout,
                max_body=config.http_max_body,
                max_per_address=config.http_max_per_address,
                max_connections=config.http_max_connections,
            )
        )
        self._web_runner: web.AppRunner | None = None
        self.endpoints: Endpoints | None = None
        self._lock = DataDirLock(config.data_dir)

    async def start(self) -> Endpoints:
        cfg = self.config
        # One hub per data dir (DataDirBusy otherwise); `hub restore` checks the same lock.
        prepare_data_dir(cfg.data_dir)
        self._lock.acquire()
        sockets = [_listen(cfg.host, cfg.mqtt_port, "MQTT"), _listen(cfg.host, cfg.ws_port, "WS")]
        if not cfg.http_shares_ws_port:
            assert cfg.http_port is not None
            sockets.append(_listen(cfg.host, cfg.http_port, "HTTP"))
        mqtt_sock, ws_sock, *http_socks = sockets
        ws_address = _address(ws_sock)
        http_address = _address(http_socks[0]) if http_socks else ws_address
        tls = server_context(cfg.data_dir)
        tls_devices = server_context(cfg.data_dir, client_certs=True)
        tls_socks = []
        if tls is not None:
            tls_socks = [
                _listen(cfg.host, cfg.mqtts_port, "MQTT over TLS"),
                _listen(cfg.host, cfg.wss_port, "WSS"),
            ]

        self.registry = Registry(cfg.data_dir)
        self._api_registry = Registry(cfg.data_dir)
        self._fleet_registry = Registry(cfg.data_dir)  # sees the console's changes too
        self.accounts = Accounts(cfg.data_dir)
        key = load_key(cfg.data_dir)
        # The broker's logins read the registry through a connection of their own.
        self._auth_registry = Registry(cfg.data_dir)
        gatekeeper = Gatekeeper(self._auth_registry, key, allow_anonymous=cfg.allow_anonymous)
        self.broker.set_gatekeeper(gatekeeper)
        self.store = open_store(cfg.store_url, cfg.data_dir, sync=cfg.store_sync)
        self.ingest = Ingest(
            self.store,
            cfg.retention_days * 86400 if cfg.retention_days else None,
            data_dir=cfg.data_dir,
            report=self.events,
            max_pending=cfg.store_queue,
            disk_low=cfg.disk_low,
        )
        self.broker.add_message_listener(self.ingest.on_message)
        self.ingest.start()
        # Each device's last known state, loaded before the hub accepts connections.
        self.recorder = Recorder(self.store)
        self.states = DeviceStates(self.recorder)
        self.states.load(await asyncio.to_thread(self.store.load_states))
        self.broker.add_message_listener(self.states.on_message)
        self.broker.add_event_sink(self.states.on_event)
        top = await asyncio.to_thread(self.store.max_command_id)
        self.commands = Commands(self.broker, self.recorder, top + 1)
        self.commands.load(await asyncio.to_thread(self.store.pending_commands))
        self.broker.add_message_listener(self.commands.on_message)
        self.states.observers.append(self.commands.on_state)
        self.commands.start()
        self.alarms = AlarmService(self.store, self.recorder, self.states, self.events)
        await self.alarms.start()
        self.recorder.start()
        await self.broker.start()
        self._watcher = asyncio.get_running_loop().create_task(self._watch_registry())
        # The Acceptor pauses accepting when out of file descriptors (hub/web/guard.py).
        self._servers = [Acceptor(self.broker.tcp_protocol, mqtt_sock)]
        if tls_socks:
            self._servers.append(
                Acceptor(self.broker.tcp_protocol, tls_socks[0], ssl_context=tls_devices)
            )
        if cfg.public_view:
            log.warning(
                "PUBLIC VIEW: --public-view shows the console's read-only view (the fleet, "
                "telemetry, health and a viewer's MQTT token) to anyone who reaches the hub"
            )
        sessions = Sessions(cfg.session_idle_s, cfg.session_max_s)
        auth = Auth(
            key, self.accounts, sessions, self.events, public_view=cfg.public_view,
            tls_port=_address(tls_socks[1])[1] if tls_socks else None,
        )  # fmt: skip
        manage = Manage(self._api_registry, self.accounts, sessions, cfg.data_dir, self.events)
        ingest = self.ingest
        fleet = FleetApi(self._fleet_registry, self.store, self.states, self.alarms.alarms.counts)
        api = Api(
            self.broker, self._api_registry, self.store, fleet, self.commands, self.alarms,
            storage_stats=lambda: asdict(ingest.stats),
        )  # fmt: skip
        self._web_runner = web.AppRunner(
            build_app(self.broker, auth, api, manage),
            access_log=None,
            shutdown_timeout=SHUTDOWN_GRACE_S,
            **self.guard.handler_args(),
        )
        await self._web_runner.setup()
        for sock in [ws_sock, *http_socks]:
            await GuardedSite(self._web_runner, sock, self.guard).start()
        if tls_socks:
            await GuardedSite(self._web_runner, tls_socks[1], self.guard, ssl_context=tls).start()
        self.endpoints = Endpoints(
            _address(mqtt_sock),
            ws_address,
            http_address,
            *([_address(tls_socks[0]), _address(tls_socks[1])] if tls_socks else []),
        )
        log.info("hub listening: %s", self.endpoints.ready_line())
        return self.endpoints

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
            changed.update({d: "disabled" for d in now.keys() - known.keys()
                            if not now[d].enabled})  # fmt: skip
            removed = [d for d in known if d not in now]
            known = now
            if changed:
                self.broker.kick(partial(_reason_to_kick, changed))
            for device in removed:  # a removed device's presence and health are gone too
                self.broker.publish(status_topic(device), b"", qos=1, retain=True)
                self.broker.publish(meta_topic(device), b"", qos=1, retain=True)

    async def stop(self) -> None:
        if self._watcher is not None:
            self._watcher.cancel()
        for server in self._servers:
            server.close()
        await self.broker.stop()
        if self._web_runner is not None:
            await self._web_runner.cleanup()
        for server in self._servers:
            await server.wait_closed()
        if self.ingest is not None:
            await self.ingest.stop()
        if self.commands is not None:
            await self.commands.stop()
        if self.alarms is not None:
            await self.alarms.stop()
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
