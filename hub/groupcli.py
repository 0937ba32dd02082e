"""`hub group` and `hub device label`: groups of devices and the labels they select by."""

from __future__ import annotations

import argparse
import json

from hub.cliutil import UsageError, data_dir_arg, print_table, when
from hub.groups import KINDS, GroupError, Groups, registered_ids, resolve_group


def add_arguments(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="action", required=True)
    add = actions.add_parser("add", help="a group of devices by label, board or list of ids")
    add.add_argument("name")
    how = add.add_mutually_exclusive_group(required=True)
    how.add_argument("--label", help="the devices carrying this label (hub device label)")
    how.add_argument("--board", help="the devices reporting this board in their health")
    how.add_argument("--devices", metavar="ID,...", help="these devices")
    add.add_argument(
        "--priority",
        type=int,
        default=0,
        help="when groups disagree on a desired setting the highest priority wins (default 0;"
        " equal priorities: the first name in sort order)",
    )
    data_dir_arg(add)
    listing = actions.add_parser("list", help="every group and its selector")
    listing.add_argument("--json", action="store_true")
    data_dir_arg(listing)
    for name, text in (("show", "one group and its devices (JSON)"), ("remove", "delete it")):
        one = actions.add_parser(name, help=text)
        one.add_argument("name")
        data_dir_arg(one)


def run(args: argparse.Namespace) -> None:
    groups = Groups(args.data_dir)
    try:
        if args.action == "add":
            kind = next(k for k in KINDS if getattr(args, k) is not None)
            group = groups.add(args.name, kind, getattr(args, kind), args.priority)
            print(f"added group {group.name!r} ({group.selector()}, priority {group.priority})")
        elif args.action == "list":
            found = groups.all()
            if args.json:
                print(json.dumps([g.public() for g in found], indent=2))
                return
            rows = [("NAME", "SELECTOR", "PRIORITY", "CREATED (UTC)")]
            rows += [
                (g.name, g.selector()[:60], str(g.priority), when(g.created_at)) for g in found
            ]
            print_table(rows)
            if len(rows) == 1:
                print("(no groups: add one with `hub group add NAME --label L`)")
        elif args.action == "show":
            group = groups.require(args.name)
            print(
                json.dumps({**group.public(), "members": resolve_group(args.data_dir, args.name)})
            )
        else:
            groups.remove(args.name)
            print(f"removed group {args.name!r}")
    except GroupError as exc:
        raise UsageError(str(exc)) from None
    finally:
        groups.close()


def label_arguments(one: argparse.ArgumentParser) -> None:
    """`hub device label ID add|remove|list [LABEL]`."""
    one.add_argument("id")
    one.add_argument("change", choices=("add", "remove", "list"))
    one.add_argument("label", nargs="?")


def label(args: argparse.Namespace) -> None:
    if args.change != "list" and args.label is None:
        raise UsageError(f"`hub device label ID {args.change}` needs a LABEL")
    if args.change == "add" and args.id not in registered_ids(args.data_dir):
        raise UsageError(f"no device {args.id[:40]!r} in the registry")
    groups = Groups(args.data_dir)
    try:
        if args.change == "add":
            done = groups.add_label(args.id, args.label)
            print(f"{args.id!r} {'now has' if done else 'has'} label {args.label!r}")
        elif args.change == "remove":
            if not groups.remove_label(args.id, args.label):
                raise UsageError(f"{args.id!r} has no label {args.label[:40]!r}")
            print(f"removed label {args.label!r} from {args.id!r}")
        else:
            print(json.dumps(groups.labels(args.id)))
    except GroupError as exc:
        raise UsageError(str(exc)) from None
    finally:
        groups.close()
