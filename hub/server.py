"""The running hub: binds its sockets, starts the broker and the web side, stops them cleanly."""

from __future__ import annotations

import asyncio
import logging
import socket
from dataclasses import dataclass

from aiohttp import web

from hub.broker import BrokerSettings, EmbeddedBroker
from hub.config import HubConfig
from hub.web.app import build_app

log = logging.getLogger(__name__)

SHUTDOWN_GRACE_S = 1.0


class ListenError(OSError):
    """A listening socket could not be opened (port taken, bad address)."""


@dataclass(frozen=True)
class Endpoints:
    """The addresses the hub really listens on (port 0 resolved)."""

    mqtt: tuple[str, int]
    ws: tuple[str, int]
    http: tuple[str, int]

    def ready_line(self) -> str:
        def fmt(address: tuple[str, int]) -> str:
            host, port = address
            return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"

        return f"ready mqtt={fmt(self.mqtt)} ws={fmt(self.ws)} http={fmt(self.http)}"


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
        self.broker = EmbeddedBroker(
            BrokerSettings(
                max_payload=config.max_payload,
                max_queued=config.max_queued,
                max_inflight=config.max_inflight,
            )
        )
        self._mqtt_server: asyncio.Server | None = None
        self._web_runner: web.AppRunner | None = None
        self.endpoints: Endpoints | None = None

    async def start(self) -> Endpoints:
        cfg = self.config
        sockets = [_listen(cfg.host, cfg.mqtt_port, "MQTT"), _listen(cfg.host, cfg.ws_port, "WS")]
        if not cfg.http_shares_ws_port:
            assert cfg.http_port is not None
            sockets.append(_listen(cfg.host, cfg.http_port, "HTTP"))
        mqtt_sock, ws_sock, *http_socks = sockets
        ws_address = _address(ws_sock)
        http_address = _address(http_socks[0]) if http_socks else ws_address

        await self.broker.start()
        self._mqtt_server = await asyncio.start_server(self.broker.serve_stream, sock=mqtt_sock)
        self._web_runner = web.AppRunner(build_app(self.broker, ws_address[1]), access_log=None)
        await self._web_runner.setup()
        for sock in [ws_sock, *http_socks]:
            site = web.SockSite(self._web_runner, sock, shutdown_timeout=SHUTDOWN_GRACE_S)
            await site.start()
        self.endpoints = Endpoints(_address(mqtt_sock), ws_address, http_address)
        log.info("hub listening: %s", self.endpoints.ready_line())
        return self.endpoints

    async def stop(self) -> None:
        if self._mqtt_server is not None:
            self._mqtt_server.close()
        await self.broker.stop()
        if self._web_runner is not None:
            await self._web_runner.cleanup()
        if self._mqtt_server is not None:
            await self._mqtt_server.wait_closed()
        log.info("hub stopped")
