"""`python -m hub`: the hub's command line."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

from hub import alarmcli, certs, footprint
from hub.accounts import ROLES, AccountError, Accounts
from hub.config import ConfigError, HubConfig
from hub.registry import Registry, RegistryError
from hub.security import MAX_TTL_S, TokenClaims, TokenError, create_token, load_key
from hub.server import Hub, ListenError
from hub.store import StoreError

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
    serve.add_argument("--log-level", default=argparse.SUPPRESS, help="as above")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on")
    serve.add_argument("--mqtt-port", type=_port, default=1883, help="MQTT over TCP (0: free)")
    serve.add_argument("--ws-port", type=_port, default=8080, help="MQTT over WebSocket (0: free)")
    serve.add_argument(
        "--http-port", type=_port, default=None, help="dashboard pages (default: the ws port)"
    )
    serve.add_argument(
        "--mqtts-port",
        type=_port,
        default=8883,
        help="MQTT over TLS, once `hub certs init` has run (0: free)",
    )
    serve.add_argument(
        "--wss-port",
        type=_port,
        default=8443,
        help="MQTT over secure WebSocket (443 in production; 0: free)",
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
    limits.add_argument(
        "--rate-limit",
        type=float,
        default=50.0,
        metavar="PER_S",
        help="publishes a second per client (0: no limit; default 50)",
    )
    serve.add_argument(
        "--store",
        default=None,
        metavar="URL",
        help="telemetry database: SQLite in the data dir (default) or postgresql://...",
    )
    serve.add_argument(
        "--retention-days",
        type=float,
        default=30.0,
        metavar="DAYS",
        help="keep readings this long (0: forever; default 30)",
    )
    durable = serve.add_argument_group("storage durability and HTTP limits (see README)")
    durable.add_argument(
        "--store-queue", type=int, default=100_000, metavar="N",
        help="readings waiting for a commit before new ones go unacknowledged (100000)",
    )  # fmt: skip
    durable.add_argument(
        "--store-sync", choices=("full", "normal"), default="full",
        help="SQLite: full (a reading is on disk when acknowledged; default) or normal (no "
        "fsync per commit: survives a crash of the hub, not a power loss)",
    )  # fmt: skip
    durable.add_argument(
        "--disk-low", default="5%", metavar="5%|100MB",
        help="a disk_low hub event when the data dir's free space is below this (5%%)",
    )  # fmt: skip
    for flag, default, what in (
        ("--http-header-timeout", 10.0, "seconds to send a request's headers (10)"),
        ("--http-body-timeout", 30.0, "seconds to send a request's body (30)"),
        ("--http-idle-timeout", 60.0, "seconds a keep-alive connection may idle (60)"),
    ):
        durable.add_argument(flag, type=float, default=default, metavar="S", help=what)
    durable.add_argument(
        "--http-max-body", type=int, default=1024 * 1024, metavar="BYTES",
        help="largest HTTP request body; a larger one gets 413 (1 MiB)",
    )  # fmt: skip
    durable.add_argument(
        "--http-max-per-address", type=int, default=64, metavar="N",
        help="HTTP/WebSocket connections at once from one address (64)",
    )  # fmt: skip
    durable.add_argument(
        "--http-max-connections", type=int, default=0, metavar="N",
        help="HTTP/WebSocket connections at once (0: a quarter of the open-file limit)",
    )  # fmt: skip
    serve.add_argument(
        "--allow-anonymous",
        action="store_true",
        help="DEVELOPMENT ONLY: admit clients without credentials, full access",
    )
    console = serve.add_argument_group("console (see README)")
    console.add_argument(
        "--public-view",
        action="store_true",
        help="show the read-only console (fleet, telemetry, health) without a login",
    )
    console.add_argument(
        "--session-idle", type=float, default=30 * 60, metavar="SECONDS",
        help="a console session ends after this long unused (default 1800)",
    )  # fmt: skip
    console.add_argument(
        "--session-max", type=float, default=12 * 3600, metavar="SECONDS",
        help="and this long after its login (default 43200)",
    )  # fmt: skip

    device = commands.add_parser("device", help="manage the device registry")
    actions = device.add_subparsers(dest="action", required=True)
    add = actions.add_parser("add", help="register a device; prints its credentials once")
    add.add_argument(
        "--allow-insecure",
        action="store_true",
        help="let it connect without TLS (default: TLS required)",
    )
    for name, text in (
        ("add", ""),
        ("list", "all devices"),
        ("show", "one device"),
        ("disable", "refuse and disconnect it"),
        ("enable", "admit it again"),
        ("rotate", "new secret, printed once"),
        ("cert", "issue a client certificate (mutual TLS) signed by the hub CA"),
        ("remove", "delete it"),
    ):
        one = add if name == "add" else actions.add_parser(name, help=text)
        if name == "cert":
            one.add_argument(
                "--revoke", action="store_true", help="shut its current certificate out"
            )
            one.add_argument(
                "--no-secret", action="store_true",
                help="its secret stops working: only the certificate logs it in (until rotate)",
            )  # fmt: skip
        if name != "list":
            one.add_argument("id")
        one.add_argument("--data-dir", type=Path, default=Path("data"), help="hub state folder")

    certs = commands.add_parser("certs", help="the hub's TLS certificates")
    certs_actions = certs.add_subparsers(dest="action", required=True)
    certs_init = certs_actions.add_parser("init", help="create a hub CA and server certificate")
    certs_init.add_argument(
        "--host",
        action="append",
        default=[],
        metavar="NAME_OR_IP",
        help="a name or address devices use for the hub (repeatable)",
    )
    certs_init.add_argument("--force", action="store_true", help="replace an existing CA")
    certs_init.add_argument("--data-dir", type=Path, default=Path("data"), help="hub state folder")

    _user_parser(commands)
    alarmcli.add_parser(commands)  # hub alarm rule add|list|remove, hub alarm list|ack

    token = commands.add_parser("token", help="browser access tokens")
    token_actions = token.add_subparsers(dest="action", required=True)
    create = token_actions.add_parser("create", help="print a scoped, short-lived token")
    create.add_argument("--subscribe", action="append", default=[], metavar="FILTER")
    create.add_argument("--publish", action="append", default=[], metavar="FILTER")
    create.add_argument("--ttl", type=int, default=3600, metavar="SECONDS")
    create.add_argument("--admin", action="store_true", help="may also read hub events")
    create.add_argument("--data-dir", type=Path, default=Path("data"), help="hub state folder")
    return parser


def _user_parser(commands: Any) -> None:
    user = commands.add_parser("user", help="console accounts for people")
    actions = user.add_subparsers(dest="action", required=True)
    for name, text in (
        ("add", "create an account; prints a one-time password"),
        ("list", "all accounts"),
        ("passwd", "a new password (generated, or --password-stdin)"),
        ("disable", "refuse its logins and end its sessions"),
        ("enable", "allow its logins again"),
        ("remove", "delete it"),
    ):
        one = actions.add_parser(name, help=text)
        if name != "list":
            one.add_argument("name")
        if name == "add":
            one.add_argument("--role", choices=ROLES, required=True)
        if name in ("add", "passwd"):
            one.add_argument(
                "--password-stdin", action="store_true",
                help="read the password from stdin instead of generating one",
            )  # fmt: skip
        one.add_argument("--data-dir", type=Path, default=Path("data"), help="hub state folder")


def _read_password() -> str:
    line = sys.stdin.readline()
    return line[:-1] if line.endswith("\n") else line


def _user(args: argparse.Namespace) -> None:
    accounts = Accounts(args.data_dir, create=args.action == "add")
    try:
        given = _read_password() if getattr(args, "password_stdin", False) else None
        if args.action == "add":
            password = accounts.add(args.name, args.role, given)
            print(f"added {args.role} {args.name!r}")
            if given is None:
                print(f"one-time password: {password}")
        elif args.action == "passwd":
            password = accounts.set_password(args.name, given)
            print(f"new password for {args.name!r}")
            if given is None:
                print(f"one-time password: {password}")
        elif args.action == "list":
            _print_accounts(accounts)
        elif args.action in ("disable", "enable"):
            accounts.set_enabled(args.name, args.action == "enable")
            print(f"{args.action}d {args.name!r}")
        elif args.action == "remove":
            accounts.remove(args.name)
            print(f"removed {args.name!r}")
    finally:
        accounts.close()


def _print_accounts(accounts: Accounts) -> None:
    rows = [("NAME", "ROLE", "ENABLED", "CREATED")]
    for a in accounts.list():
        created = time.strftime("%Y-%m-%d %H:%M", time.gmtime(a.created_at))
        rows.append((a.name, a.role, "yes" if a.enabled else "no", created))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    for row in rows:
        print("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip())
    if len(rows) == 1:
        print("(no accounts: add one with `hub user add NAME --role admin`)")


def _device(args: argparse.Namespace) -> None:
    registry = Registry(args.data_dir, create=args.action == "add")
    try:
        if args.action == "add":
            secret = registry.add(args.id, allow_insecure=args.allow_insecure)
            _print_credentials(args.id, secret)
        elif args.action == "rotate":
            _print_credentials(args.id, registry.rotate(args.id))
        elif args.action == "cert":
            if args.revoke and args.no_secret:
                raise UsageError("--revoke and --no-secret together would lock the device out")
            _device_cert(registry, args.data_dir, args.id, revoke=args.revoke)
            if args.no_secret:
                registry.drop_secret(args.id)
        elif args.action == "list":
            print(json.dumps([d.public() for d in registry.list()], indent=2))
        elif args.action == "show":
            print(json.dumps(registry.require(args.id).public(), indent=2))
        elif args.action in ("disable", "enable"):
            device = registry.set_enabled(args.id, args.action == "enable")
            print(json.dumps(device.public(), indent=2))
        elif args.action == "remove":
            registry.remove(args.id)
    finally:
        registry.close()


def _device_cert(registry: Registry, data_dir: Path, device_id: str, *, revoke: bool) -> None:
    registry.require(device_id)
    if revoke:
        print(json.dumps(registry.set_cert(device_id, None).public(), indent=2))
        return
    issued = certs.issue_device_cert(data_dir, device_id)
    registry.set_cert(device_id, issued.fingerprint)  # the previous certificate stops working
    print(json.dumps({"id": device_id, "cert": str(issued.cert), "key": str(issued.key),
                      "fingerprint": issued.fingerprint}))  # fmt: skip


def _print_credentials(device_id: str, secret: str) -> None:
    # The only time the secret is shown: the registry keeps a hash of it.
    print(json.dumps({"id": device_id, "username": device_id, "password": secret}))


def _token(args: argparse.Namespace) -> None:
    if not args.subscribe and not args.publish and not args.admin:
        raise UsageError("a token needs at least one --subscribe or --publish filter, or --admin")
    if not 1 <= args.ttl <= MAX_TTL_S:
        raise UsageError(f"--ttl must be from 1 to {MAX_TTL_S} seconds")
    claims = TokenClaims(
        subscribe=tuple(args.subscribe),
        publish=tuple(args.publish),
        admin=args.admin,
        expires=time.time() + args.ttl,
    )
    print(create_token(load_key(args.data_dir, create=False), claims))


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
    # Everything the hub writes into its data dir is its owner's only from the first byte:
    # the registry and its -wal/-shm, hub.key, the accounts, CA and device keys.
    os.umask(0o077)
    args = build_parser().parse_args(argv)
    try:
        _configure_logging(args.log_level)
        if args.command == "device":
            _device(args)
        elif args.command == "user":
            _user(args)
        elif args.command == "certs":
            paths = certs.init(args.data_dir, args.host + certs.default_hosts(), force=args.force)
            load_key(args.data_dir)  # `hub token create` works from here on
            print(json.dumps({"ca": str(paths.ca_pem), "ca_der": str(paths.ca_der),
                              "server": str(paths.server_pem)}))  # fmt: skip
        elif args.command == "token":
            _token(args)
        elif args.command == "alarm":
            alarmcli.run(args)
        elif args.command == "serve":
            if args.allow_anonymous:
                log.warning(
                    "DEVELOPMENT MODE: --allow-anonymous admits clients without credentials "
                    "and lets them publish and subscribe anywhere"
                )
            config = HubConfig(
                host=args.host,
                mqtt_port=args.mqtt_port,
                ws_port=args.ws_port,
                http_port=args.http_port,
                data_dir=args.data_dir,
                mqtts_port=args.mqtts_port,
                wss_port=args.wss_port,
                max_payload=args.max_payload,
                max_queued=args.max_queued,
                max_inflight=args.max_inflight,
                rate_limit=args.rate_limit,
                retention_days=args.retention_days,
                store_url=args.store,
                allow_anonymous=args.allow_anonymous,
                public_view=args.public_view,
                session_idle_s=args.session_idle,
                session_max_s=args.session_max,
                store_queue=args.store_queue,
                store_sync=args.store_sync,
                disk_low=args.disk_low,
                http_header_timeout=args.http_header_timeout,
                http_body_timeout=args.http_body_timeout,
                http_idle_timeout=args.http_idle_timeout,
                http_max_body=args.http_max_body,
                http_max_per_address=args.http_max_per_address,
                http_max_connections=args.http_max_connections,
            )
            footprint.apply()
            asyncio.run(_serve(config))
    except (
        UsageError,
        ConfigError,
        ListenError,
        RegistryError,
        TokenError,
        certs.CertError,
        StoreError,
        AccountError,
        alarmcli.AlarmCliError,
    ) as exc:
        print(f"hub: error: {exc}", file=sys.stderr)
        return 2
    return 0
