"""`hub device`: the device registry's commands, one table of actions (DEVICE_ACTIONS)."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from typing import NamedTuple

from hub import certs, groupcli
from hub.cliutil import UsageError, data_dir_arg, print_table, when
from hub.registry import Device, Registry


def _device_list(registry: Registry, args: argparse.Namespace) -> None:
    devices = registry.list()
    if args.json:
        print(json.dumps([d.public() for d in devices], indent=2))
        return
    rows = [("ID", "ENABLED", "TLS", "CERTIFICATE", "LAST SEEN (UTC)")]
    for d in devices:
        cert = d.cert_fingerprint[:16] if d.cert_fingerprint else "none"
        rows.append((d.id, "yes" if d.enabled else "no", d.tls_policy, cert, when(d.last_seen_at)))
    print_table(rows)
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
    print(
        json.dumps(
            {
                "id": args.id,
                "cert": str(issued.cert),
                "key": str(issued.key),
                "fingerprint": issued.fingerprint,
                "secret": "dropped" if args.no_secret else "kept",
            }
        )
    )


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


def device_arguments(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="action", required=True)
    label = actions.add_parser("label", help="add, remove or list its labels (hub group)")
    groupcli.label_arguments(label)
    data_dir_arg(label)
    for name, action in DEVICE_ACTIONS.items():
        one = actions.add_parser(name, help=action.help)
        if name == "add":
            one.add_argument(
                "--allow-insecure",
                action="store_true",
                help="let it connect without TLS (default: TLS required)",
            )
        if name == "list":
            one.add_argument("--json", action="store_true", help="JSON instead of a table")
        if name == "cert":
            one.add_argument(
                "--revoke", action="store_true", help="shut its current certificate out"
            )
            one.add_argument(
                "--no-secret",
                action="store_true",
                help="its secret stops working: only the certificate logs it in (until rotate)",
            )
        if name != "list":
            one.add_argument("id")
        data_dir_arg(one)


def device(args: argparse.Namespace) -> None:
    if args.action == "label":
        groupcli.label(args)
        return
    registry = Registry(args.data_dir, create=args.action == "add")
    try:
        DEVICE_ACTIONS[args.action].run(registry, args)
    finally:
        registry.close()
