"""`hub alarm`: alarm rules and alarms from the command line.

`hub alarm rule add|list|remove` and `hub alarm list|ack` work on the store (the data dir's
SQLite file, or --store postgresql://...), so they work whether or not the hub runs; a running
hub picks up rules and acknowledgements within a few seconds and reports each
acknowledgement as an ``alarm_acknowledged`` event.
"""

from __future__ import annotations

import argparse
import getpass
import json
import time
from pathlib import Path
from typing import Any

from hub.alarms import KINDS, RuleError, parse_rule
from hub.store import open_store


def add_arguments(alarm: argparse.ArgumentParser) -> None:
    """`hub alarm rule add|list|remove` and `hub alarm list|ack`."""
    actions = alarm.add_subparsers(dest="action", required=True)
    rule = actions.add_parser("rule", help="alarm rules: add, list, remove")
    rule_actions = rule.add_subparsers(dest="rule_action", required=True)
    add = rule_actions.add_parser("add", help="add a rule; prints it with its id")
    add.add_argument("--name", required=True)
    add.add_argument("--kind", choices=KINDS, required=True)
    scope = add.add_mutually_exclusive_group()
    scope.add_argument("--device", help="one device")
    scope.add_argument("--board", help="every device of a board")
    add.add_argument("--sensor", help="the sensor (above and below rules)")
    add.add_argument(
        "--threshold",
        type=float,
        required=True,
        help="minutes for offline, reconnects an hour for reconnects_above",
    )
    add.add_argument(
        "--for",
        dest="for_s",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="how long the condition must hold before the alarm",
    )
    add.add_argument("--hysteresis", type=float, default=0.0, help="clear_hysteresis")
    add.add_argument("--disabled", action="store_true")
    listing = rule_actions.add_parser("list", help="every rule, one JSON object a line")
    remove = rule_actions.add_parser("remove", help="delete a rule (its alarms clear)")
    remove.add_argument("id", type=int)
    alarms = actions.add_parser("list", help="active alarms (--all: cleared ones too)")
    alarms.add_argument("--all", action="store_true")
    ack = actions.add_parser("ack", help="acknowledge an alarm")
    ack.add_argument("id", type=int)
    ack.add_argument("--by", default=None, help="who (default: the login name)")
    for one in (add, listing, remove, alarms, ack):
        one.add_argument("--data-dir", type=Path, default=Path("data"), help="hub state folder")
        one.add_argument("--store", default=None, help="postgresql://... if the hub uses it")


class AlarmCliError(Exception):
    """Printed as `hub: error: ...` (exit 2)."""


def run(args: argparse.Namespace) -> None:
    store = open_store(args.store, args.data_dir)
    try:
        if args.action == "rule" and args.rule_action == "add":
            scope: dict[str, Any] = {"fleet": True}
            if args.device:
                scope = {"device": args.device}
            elif args.board:
                scope = {"board": args.board}
            try:
                rule = parse_rule(
                    {
                        "name": args.name,
                        "kind": args.kind,
                        "scope": scope,
                        "sensor": args.sensor,
                        "threshold": args.threshold,
                        "for_s": args.for_s,
                        "clear_hysteresis": args.hysteresis,
                        "enabled": not args.disabled,
                    }
                )
            except RuleError as exc:
                raise AlarmCliError(str(exc)) from None
            print(json.dumps(store.save_alarm_rule(rule)))
        elif args.action == "rule" and args.rule_action == "list":
            for rule in store.alarm_rules():
                print(json.dumps(rule))
        elif args.action == "rule":
            if not store.remove_alarm_rule(args.id):
                raise AlarmCliError(f"no alarm rule {args.id}")
        elif args.action == "list":
            for alarm in reversed(store.alarms()):
                if args.all or alarm.get("state") == "active":
                    print(json.dumps(alarm))
        else:
            by = args.by or getpass.getuser()
            if not store.acknowledge_alarm(args.id, by[:64], time.time()):
                known = any(a["id"] == args.id for a in store.alarms())
                raise AlarmCliError(
                    f"alarm {args.id} is already acknowledged" if known else f"no alarm {args.id}"
                )
    finally:
        store.close()
