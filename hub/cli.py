"""`python -m hub`: the hub's command line, one table of commands (COMMANDS)."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

from hub import backup, certs, configfile, footprint
from hub.accounts import ROLES, AccountError, Accounts
from hub.config import ConfigError, HubConfig
from hub.datalock import DataDirBusy
from hub.devicepolicy import DevicePolicy
from hub.registry import Device, Registry, RegistryError
from hub.reload import Reloader, configure_logging
from hub.security import MAX_TTL_S, TokenClaims, TokenError, create_token, load_key
from hub.serveflags import add_config_flags, overrides
from hub.server import Hub, ListenError, broker_settings
from hub.store import StoreError

log = logging.getLogger("hub")


class UsageError(Exception):
    """A mistake the user can fix; printed as `hub: error: ...` with exit code 2."""


class Command(NamedTuple):
    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], None]


def _data_dir(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data-dir", type=Path, default=Path("data"), help="hub state folder")


# --- serve and config ------------------------------------------------------------------------
def check_config(config: HubConfig) -> None:
    """Builds what the hub derives from its config, so `hub config check` refuses what
    `hub serve` would (ConfigError naming the setting)."""
    broker_settings(config)
    DevicePolicy(config.max_sensors, config.max_sensor_name)


def _serve_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_flags(parser)


def _serve(args: argparse.Namespace) -> None:
    given = overrides(args)
    config = configfile.load(args.config, given, check_config)
    configure_logging(config.log_level)
    if config.allow_anonymous:
        log.warning(
            "DEVELOPMENT MODE: allow_anonymous admits clients without credentials "
            "and lets them publish and subscribe anywhere"
        )
    footprint.apply()
    asyncio.run(_run_hub(Reloader(config, args.config, given, check_config)))


async def _run_hub(reloader: Reloader) -> None:
    hub = Hub(reloader.config)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    loop.add_signal_handler(signal.SIGHUP, reloader.on_signal)
    try:
        endpoints = await hub.start()
        print(endpoints.ready_line(), flush=True)
        await stop.wait()
    finally:
        await hub.stop()


def _config_arguments(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="action", required=True)
    check = actions.add_parser("check", help="validate a config file without starting the hub")
    check.add_argument("file", type=Path, help="the TOML file")
    show = actions.add_parser("show", help="print the effective config as TOML")
    show.add_argument("--config", type=Path, default=None, metavar="FILE",
                      help="the TOML file (default: none, the built-in defaults)")  # fmt: skip


def _config(args: argparse.Namespace) -> None:
    if args.action == "check":
        configfile.load(args.file, None, check_config)
        print("ok")
    else:
        print(configfile.render(configfile.load(args.config, None, check_config)), end="")


# --- device ----------------------------------------------------------------------------------
def _when(epoch: float | None) -> str:
    return "never" if epoch is None else time.strftime("%Y-%m-%d %H:%M", time.gmtime(epoch))


def _print_table(rows: Sequence[tuple[str, ...]]) -> None:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip())


def _device_list(registry: Registry, args: argparse.Namespace) -> None:
    devices = registry.list()
    if args.json:
        print(json.dumps([d.public() for d in devices], indent=2))
        return
    rows = [("ID", "ENABLED", "TLS", "CERTIFICATE", "LAST SEEN (UTC)")]
    for d in devices:
        cert = d.cert_fingerprint[:16] if d.cert_fingerprint else "none"
        rows.append((d.id, "yes" if d.enabled else "no", d.tls_policy, cert,
                     _when(d.last_seen_at)))  # fmt: skip
    _print_table(rows)
    if len(rows) == 1:
        print("(no devices: add one with `hub device add ID`)")


def _device_add(registry: Registry, args: argparse.Namespace) -> None:
    _print_credentials(args.id, registry.add(args.id, allow_insecure=args.allow_insecure))


def _device_show(registry: Registry, args: argparse.Namespace) -> None:
    print(json.dumps(registry.require(args.id).public(), indent=2))


def _device_enabled(registry: Registry, args: argparse.Namespace) -> None:
    device: Device = registry.set_enabled(args.id, args.action == "enable")
    said = "enabled" if device.enabled else "disabled (and disconnected)"
    print(f"{said} {args.id!r}")


def _device_rotate(registry: Registry, args: argparse.Namespace) -> None:
    _print_credentials(args.id, registry.rotate(args.id))


def _device_cert(registry: Registry, args: argparse.Namespace) -> None:
    if args.revoke and args.no_secret:
        raise UsageError("--revoke and --no-secret together would lock the device out")
    registry.require(args.id)
    if args.revoke:
        registry.set_cert(args.id, None)
        print(f"revoked the certificate of {args.id!r}")
        return
    issued = certs.issue_device_cert(args.data_dir, args.id)
    registry.set_cert(args.id, issued.fingerprint)  # the previous certificate stops working
    if args.no_secret:
        registry.drop_secret(args.id)
    print(json.dumps({"id": args.id, "cert": str(issued.cert), "key": str(issued.key),
                      "fingerprint": issued.fingerprint,
                      "secret": "dropped" if args.no_secret else "kept"}))  # fmt: skip


def _device_remove(registry: Registry, args: argparse.Namespace) -> None:
    registry.remove(args.id)
    print(f"removed {args.id!r}")


def _print_credentials(device_id: str, secret: str) -> None:
    # The only time the secret is shown: the registry keeps a hash of it.
    print(json.dumps({"id": device_id, "username": device_id, "password": secret}))


class DeviceAction(NamedTuple):
    help: str
    run: Callable[[Registry, argparse.Namespace], None]


DEVICE_ACTIONS: dict[str, DeviceAction] = {
    "add": DeviceAction("register a device; prints its credentials once (JSON)", _device_add),
    "list": DeviceAction("all devices, a table (--json: JSON)", _device_list),
    "show": DeviceAction("one device (JSON)", _device_show),
    "disable": DeviceAction("refuse and disconnect it", _device_enabled),
    "enable": DeviceAction("admit it again", _device_enabled),
    "rotate": DeviceAction("new secret, printed once (JSON)", _device_rotate),
    "cert": DeviceAction(
        "issue a client certificate (mutual TLS) signed by the hub CA (JSON)", _device_cert
    ),
    "remove": DeviceAction("delete it", _device_remove),
}


def _device_arguments(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="action", required=True)
    for name, action in DEVICE_ACTIONS.items():
        one = actions.add_parser(name, help=action.help)
        if name == "add":
            one.add_argument(
                "--allow-insecure", action="store_true",
                help="let it connect without TLS (default: TLS required)",
            )  # fmt: skip
        if name == "list":
            one.add_argument("--json", action="store_true", help="JSON instead of a table")
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
        _data_dir(one)


def _device(args: argparse.Namespace) -> None:
    registry = Registry(args.data_dir, create=args.action == "add")
    try:
        DEVICE_ACTIONS[args.action].run(registry, args)
    finally:
        registry.close()


# --- certs and token -------------------------------------------------------------------------
def _certs_arguments(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="action", required=True)
    init = actions.add_parser("init", help="create a hub CA and server certificate")
    init.add_argument(
        "--host", action="append", default=[], metavar="NAME_OR_IP",
        help="a name or address devices use for the hub (repeatable)",
    )  # fmt: skip
    init.add_argument("--force", action="store_true", help="replace an existing CA")
    _data_dir(init)


def _certs(args: argparse.Namespace) -> None:
    paths = certs.init(args.data_dir, args.host + certs.default_hosts(), force=args.force)
    load_key(args.data_dir)  # `hub token create` works from here on
    print(json.dumps({"ca": str(paths.ca_pem), "ca_der": str(paths.ca_der),
                      "server": str(paths.server_pem)}))  # fmt: skip


def _token_arguments(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="action", required=True)
    create = actions.add_parser("create", help="print a scoped, short-lived token")
    create.add_argument("--subscribe", action="append", default=[], metavar="FILTER")
    create.add_argument("--publish", action="append", default=[], metavar="FILTER")
    create.add_argument("--ttl", type=int, default=3600, metavar="SECONDS")
    create.add_argument("--admin", action="store_true", help="may also read hub events")
    _data_dir(create)


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


# --- user ------------------------------------------------------------------------------------
def _user_add(accounts: Accounts, args: argparse.Namespace, given: str | None) -> None:
    password = accounts.add(args.name, args.role, given)
    print(f"added {args.role} {args.name!r}")
    if given is None:
        print(f"one-time password: {password}")


def _user_passwd(accounts: Accounts, args: argparse.Namespace, given: str | None) -> None:
    password = accounts.set_password(args.name, given)
    print(f"new password for {args.name!r}")
    if given is None:
        print(f"one-time password: {password}")


def _user_list(accounts: Accounts, args: argparse.Namespace, given: str | None) -> None:
    _print_accounts(accounts)


def _user_enabled(accounts: Accounts, args: argparse.Namespace, given: str | None) -> None:
    accounts.set_enabled(args.name, args.action == "enable")
    print(f"{args.action}d {args.name!r}")


def _user_remove(accounts: Accounts, args: argparse.Namespace, given: str | None) -> None:
    accounts.remove(args.name)
    print(f"removed {args.name!r}")


class UserAction(NamedTuple):
    help: str
    run: Callable[[Accounts, argparse.Namespace, str | None], None]


USER_ACTIONS: dict[str, UserAction] = {
    "add": UserAction("create an account; prints a one-time password", _user_add),
    "list": UserAction("all accounts", _user_list),
    "passwd": UserAction("a new password (generated, or --password-stdin)", _user_passwd),
    "disable": UserAction("refuse its logins and end its sessions", _user_enabled),
    "enable": UserAction("allow its logins again", _user_enabled),
    "remove": UserAction("delete it", _user_remove),
}


def _user_arguments(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="action", required=True)
    for name, action in USER_ACTIONS.items():
        one = actions.add_parser(name, help=action.help)
        if name != "list":
            one.add_argument("name")
        if name == "add":
            one.add_argument("--role", choices=ROLES, required=True)
        if name in ("add", "passwd"):
            one.add_argument(
                "--password-stdin", action="store_true",
                help="read the password from stdin instead of generating one",
            )  # fmt: skip
        _data_dir(one)


# --- backup and restore ----------------------------------------------------------------------
def _backup_arguments(one: argparse.ArgumentParser) -> None:
    one.add_argument("file", type=Path, help="the backup to write (a tar.gz, owner-only)")
    _data_dir(one)
    one.add_argument(
        "--store", default=None, metavar="URL",
        help="the hub's --store, if readings are in PostgreSQL (noted; use pg_dump for them)",
    )  # fmt: skip


def _restore_arguments(two: argparse.ArgumentParser) -> None:
    two.add_argument("file", type=Path, help="a backup from `hub backup`")
    _data_dir(two)
    two.add_argument(
        "--force", action="store_true",
        help="replace a data dir with files (moved aside to DATA_DIR.old-TIME, not deleted)",
    )  # fmt: skip


def _backup_or_restore(args: argparse.Namespace) -> None:
    try:
        if args.command == "backup":
            result: Any = backup.backup(args.data_dir, args.file, store_url=args.store)
        else:
            result = backup.restore(args.file, args.data_dir, force=args.force)
    except backup.BackupError as exc:
        raise UsageError(str(exc)) from None
    for line in backup.describe(result):
        print(line)


def _read_password() -> str:
    line = sys.stdin.readline()
    return line[:-1] if line.endswith("\n") else line


def _user(args: argparse.Namespace) -> None:
    accounts = Accounts(args.data_dir, create=args.action == "add")
    try:
        given = _read_password() if getattr(args, "password_stdin", False) else None
        USER_ACTIONS[args.action].run(accounts, args, given)
    finally:
        accounts.close()


def _print_accounts(accounts: Accounts) -> None:
    rows = [("NAME", "ROLE", "ENABLED", "CREATED")]
    for a in accounts.list():
        rows.append((a.name, a.role, "yes" if a.enabled else "no", _when(a.created_at)))
    _print_table(rows)
    if len(rows) == 1:
        print("(no accounts: add one with `hub user add NAME --role admin`)")


COMMANDS: dict[str, Command] = {
    "serve": Command("run the broker, WebSocket network and dashboard", _serve_arguments, _serve),
    "config": Command("check or show the hub's config file", _config_arguments, _config),
    "device": Command("manage the device registry", _device_arguments, _device),
    "certs": Command("the hub's TLS certificates", _certs_arguments, _certs),
    "user": Command("console accounts for people", _user_arguments, _user),
    "backup": Command(
        "snapshot the data dir (the hub may be running)", _backup_arguments, _backup_or_restore
    ),
    "restore": Command("restore a backup into a data dir", _restore_arguments, _backup_or_restore),
    "token": Command("browser access tokens", _token_arguments, _token),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hub", description="Self-hosted IoT hub for MicroPython."
    )
    parser.add_argument(
        "--log-level", dest="log_level", default=None, metavar="LEVEL",
        help="DEBUG, INFO, WARNING (default), ERROR",
    )  # fmt: skip
    commands = parser.add_subparsers(dest="command", required=True)
    for name, command in COMMANDS.items():
        command.add_arguments(commands.add_parser(name, help=command.help))
    return parser


ERRORS = (
    UsageError,
    ConfigError,
    ListenError,
    RegistryError,
    TokenError,
    certs.CertError,
    StoreError,
    AccountError,
    DataDirBusy,
)


def main(argv: list[str] | None = None) -> int:
    # Everything the hub writes into its data dir is its owner's only from the first byte:
    # the registry and its -wal/-shm, hub.key, the accounts, CA and device keys.
    os.umask(0o077)
    args = build_parser().parse_args(argv)
    try:
        if args.command != "serve":  # serve's level is a setting (flag, file or default)
            configure_logging(args.log_level or HubConfig.log_level)
        COMMANDS[args.command].run(args)
    except configfile.ConfigFileError as exc:
        for problem in exc.problems:
            print(f"hub: error: {problem}", file=sys.stderr)
        return 2
    except ERRORS as exc:
        print(f"hub: error: {exc}", file=sys.stderr)
        return 2
    return 0
