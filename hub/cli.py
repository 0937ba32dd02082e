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
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

from hub import alarmcli, backup, certs, configfile, desiredcli, footprint, groupcli, hass
from hub.accounts import ROLES, AccountError, Accounts
from hub.cliutil import UsageError, data_dir_arg, print_table, when
from hub.config import ConfigError, HubConfig
from hub.datalock import DataDirBusy
from hub.devicecli import device, device_arguments
from hub.endpoints import ListenError
from hub.ota import cli as appcli
from hub.registry import RegistryError
from hub.reload import Reloader, configure_logging
from hub.routes import cli as routecli
from hub.security import MAX_TTL_S, TokenClaims, TokenError, create_token, load_key
from hub.serveflags import add_config_flags, overrides
from hub.store import StoreError

log = logging.getLogger("hub")


class Command(NamedTuple):
    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], None]


# --- serve and config ------------------------------------------------------------------------
def check_config(config: HubConfig) -> None:
    """Builds what the hub derives from its config, so `hub config check` refuses what
    `hub serve` would (ConfigError naming the setting)."""
    # The broker and the web application load only for `serve` and `config`: the other
    # commands start in a fraction of the time.
    from hub.devicepolicy import DevicePolicy
    from hub.server import broker_settings

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
    from hub.server import Hub

    hub = Hub(reloader.config)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    loop.add_signal_handler(signal.SIGHUP, reloader.on_signal)
    try:
        endpoints = await hub.start()  # MQTT first: devices are back before the console
        assert hub.routes is not None
        reloader.apply_routes = hub.routes.apply  # SIGHUP's new [[routes]]
        print(endpoints.ready_line(), flush=True)
        await hub.start_web()
        await stop.wait()
    finally:
        await hub.stop()


def _config_arguments(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="action", required=True)
    check = actions.add_parser("check", help="validate a config file without starting the hub")
    check.add_argument("file", type=Path, help="the TOML file")
    show = actions.add_parser("show", help="print the effective config as TOML")
    show.add_argument(
        "--config",
        type=Path,
        default=None,
        metavar="FILE",
        help="the TOML file (default: none, the built-in defaults)",
    )


def _config(args: argparse.Namespace) -> None:
    if args.action == "check":
        configfile.load(args.file, None, check_config)
        print("ok")
    else:
        print(configfile.render(configfile.load(args.config, None, check_config)), end="")


# --- certs and token -------------------------------------------------------------------------
def _certs_arguments(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="action", required=True)
    init = actions.add_parser("init", help="create a hub CA and server certificate")
    init.add_argument(
        "--host",
        action="append",
        default=[],
        metavar="NAME_OR_IP",
        help="a name or address devices use for the hub (repeatable)",
    )
    init.add_argument("--force", action="store_true", help="replace an existing CA")
    data_dir_arg(init)


def _certs(args: argparse.Namespace) -> None:
    paths = certs.init(args.data_dir, args.host + certs.default_hosts(), force=args.force)
    load_key(args.data_dir)  # `hub token create` works from here on
    print(
        json.dumps(
            {"ca": str(paths.ca_pem), "ca_der": str(paths.ca_der), "server": str(paths.server_pem)}
        )
    )


def _token_arguments(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="action", required=True)
    create = actions.add_parser("create", help="print a scoped, short-lived token")
    create.add_argument("--subscribe", action="append", default=[], metavar="FILTER")
    create.add_argument("--publish", action="append", default=[], metavar="FILTER")
    create.add_argument("--ttl", type=int, default=3600, metavar="SECONDS")
    create.add_argument("--admin", action="store_true", help="may also read hub events")
    data_dir_arg(create)


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
                "--password-stdin",
                action="store_true",
                help="read the password from stdin instead of generating one",
            )
        data_dir_arg(one)


# --- backup and restore ----------------------------------------------------------------------
def _backup_arguments(one: argparse.ArgumentParser) -> None:
    one.add_argument("file", type=Path, help="the backup to write (a tar.gz, owner-only)")
    data_dir_arg(one)
    one.add_argument(
        "--store",
        default=None,
        metavar="URL",
        help="the hub's --store, if readings are in PostgreSQL (noted; use pg_dump for them)",
    )


def _restore_arguments(two: argparse.ArgumentParser) -> None:
    two.add_argument("file", type=Path, help="a backup from `hub backup`")
    data_dir_arg(two)
    two.add_argument(
        "--force",
        action="store_true",
        help="replace a data dir with files (moved aside to DATA_DIR.old-TIME, not deleted)",
    )


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
        rows.append((a.name, a.role, "yes" if a.enabled else "no", when(a.created_at)))
    print_table(rows)
    if len(rows) == 1:
        print("(no accounts: add one with `hub user add NAME --role admin`)")


COMMANDS: dict[str, Command] = {
    "serve": Command("run the broker, WebSocket network and dashboard", _serve_arguments, _serve),
    "config": Command("check or show the hub's config file", _config_arguments, _config),
    "device": Command("manage the device registry", device_arguments, device),
    "certs": Command("the hub's TLS certificates", _certs_arguments, _certs),
    "user": Command("console accounts for people", _user_arguments, _user),
    "backup": Command(
        "snapshot the data dir (the hub may be running)", _backup_arguments, _backup_or_restore
    ),
    "restore": Command("restore a backup into a data dir", _restore_arguments, _backup_or_restore),
    "token": Command("browser access tokens", _token_arguments, _token),
    "alarm": Command("alarm rules and alarms", alarmcli.add_arguments, alarmcli.run),
    "route": Command("routes: counters and dead letters", routecli.add_arguments, routecli.run),
    "hass": Command("Home Assistant: its login token", hass.add_arguments, hass.run),
    "app": Command("app bundles and over-the-air updates", appcli.add_arguments, appcli.run),
    "rollout": Command(
        "staged rollouts of an app version", appcli.rollout_arguments, appcli.rollout_run
    ),
    "desired": Command(
        "desired state of devices and groups", desiredcli.add_arguments, desiredcli.run
    ),
    "group": Command(
        "groups of devices (by label, board or ids)", groupcli.add_arguments, groupcli.run
    ),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hub", description="Self-hosted IoT hub for MicroPython."
    )
    parser.add_argument(
        "--log-level",
        dest="log_level",
        default=None,
        metavar="LEVEL",
        help="DEBUG, INFO, WARNING (default), ERROR",
    )
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
    alarmcli.AlarmCliError,
    appcli.AppCliError,
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
