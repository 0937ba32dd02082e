"""`hub desired`: show and change a device's or a group's desired state (a running hub sends
the delta within a second)."""

from __future__ import annotations

import argparse
import json
from typing import Any

from hub.cliutil import UsageError, data_dir_arg
from hub.desired.document import DocumentError, delta, parse_assignment
from hub.desired.store import DesiredError, DesiredStore
from hub.groups import GroupError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="action", required=True)
    show = actions.add_parser("show", help="desired, reported and the delta (JSON)")
    show.add_argument("id", nargs="?", help="a device (or give --group)")
    show.add_argument("--group", metavar="G", help="a group's document instead")
    data_dir_arg(show)
    for name, what, metavar in (
        ("set", "change settings (key=value; values as JSON, else text)", "key=value"),
        ("unset", "stop managing settings (the device keeps its values)", "key"),
    ):
        one = actions.add_parser(name, help=what)
        one.add_argument(
            "items", nargs="+", metavar=f"[ID] {metavar}", help="a device id, unless --group"
        )
        one.add_argument("--group", metavar="G")
        one.add_argument(
            "--if-version",
            type=int,
            default=None,
            metavar="N",
            help="refuse unless the document is still at version N",
        )
        data_dir_arg(one)


def _target(args: argparse.Namespace, items: list[str]) -> tuple[str, str, list[str]]:
    if args.group is not None:
        return "group", args.group, items
    if not items:
        raise UsageError("name a device, or a group with --group G")
    return "device", items[0], items[1:]


def run(args: argparse.Namespace) -> None:
    try:
        store = DesiredStore(args.data_dir)
    except DesiredError as exc:
        raise UsageError(str(exc)) from None
    try:
        if args.action == "show":
            print(json.dumps(_show(store, args), indent=2))
            return
        scope, name, items = _target(args, args.items)
        if not items:
            raise UsageError(f"give at least one {'key=value' if args.action == 'set' else 'key'}")
        if args.action == "set":
            changes = dict(parse_assignment(item) for item in items)
            doc = store.write(scope, name, "cli", base=args.if_version, changes=changes)
        else:
            doc = store.write(scope, name, "cli", base=args.if_version, unset=items)
        print(f"desired state of {scope} {name!r} is at version {doc.version}")
    except (DesiredError, DocumentError, GroupError) as exc:
        raise UsageError(str(exc)) from None
    finally:
        store.close()


def _show(store: DesiredStore, args: argparse.Namespace) -> dict[str, Any]:
    if args.group is not None:
        store.groups.require(args.group)
        return store.get("group", args.group).public()
    if args.id is None:
        raise UsageError("name a device, or a group with --group G")
    snap = store.snapshot()
    own = store.get("device", args.id)
    desired, sources = snap.effective(args.id)
    reported = store.reported(args.id)
    return {
        **own.public(),
        "effective": desired,
        "sources": sources,
        "groups": [g.name for g in snap.groups_of(args.id)],
        "reported": {k: reported[k] for k in ("fw", "board", "settings", "updated_at")},
        "outcome": reported["outcome"],
        "delta": delta(desired, reported["settings"], reported["fw"]),
    }
