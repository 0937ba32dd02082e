"""`python -m hub`: the hub's command line."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from pathlib import Path

from hub.config import ConfigError, HubConfig
from hub.server import Hub, ListenError

log = logging.getLogger("hub")


class UsageError(Exception):
    """A mistake the user can fix; printed as `hub: error: ...` with exit code 2."""


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"port must be from 0 to 65535, not {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hub", description="Self-hosted IoT hub for MicroPython."
    )
    parser.add_argument("--log-level", default="WARNING", help="DEBUG, INFO, WARNING (default)")
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the broker, WebSocket network and dashboard")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on")
    serve.add_argument("--mqtt-port", type=_port, default=1883, help="MQTT over TCP (0: free)")
    serve.add_argument("--ws-port", type=_port, default=8080, help="MQTT over WebSocket (0: free)")
    serve.add_argument(
        "--http-port", type=_port, default=None, help="dashboard pages (default: the ws port)"
    )
    serve.add_argument("--data-dir", type=Path, default=Path("data"), help="hub state folder")
    limits = serve.add_argument_group("broker limits (see README)")
    limits.add_argument(
        "--max-payload",
        type=int,
        default=256 * 1024,
        metavar="BYTES",
        help="largest PUBLISH payload; a larger one closes the connection",
    )
    limits.add_argument(
        "--max-queued",
        type=int,
        default=1000,
        metavar="N",
        help="messages queued per session before the overflow policy applies",
    )
    limits.add_argument(
        "--max-inflight",
        type=int,
        default=20,
        metavar="N",
        help="unacknowledged QoS 1/2 messages per session",
    )
    return parser


async def _serve(config: HubConfig) -> None:
    hub = Hub(config)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        endpoints = await hub.start()
        print(endpoints.ready_line(), flush=True)
        await stop.wait()
    finally:
        await hub.stop()


def _configure_logging(level_name: str) -> None:
    level = logging.getLevelName(level_name.upper())
    if not isinstance(level, int):
        raise UsageError(f"unknown log level {level_name!r}")
    logging.basicConfig(
        level=level, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    # amqtt reports every connection at INFO; keep its chatter below the hub's own unless asked.
    logging.getLogger("amqtt").setLevel(max(level, logging.WARNING))
    logging.getLogger("transitions").setLevel(max(level, logging.WARNING))


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        _configure_logging(args.log_level)
        if args.command == "serve":
            config = HubConfig(
                host=args.host,
                mqtt_port=args.mqtt_port,
                ws_port=args.ws_port,
                http_port=args.http_port,
                data_dir=args.data_dir,
                max_payload=args.max_payload,
                max_queued=args.max_queued,
                max_inflight=args.max_inflight,
            )
            asyncio.run(_serve(config))
    except (UsageError, ConfigError, ListenError) as exc:
        print(f"hub: error: {exc}", file=sys.stderr)
        return 2
    return 0
