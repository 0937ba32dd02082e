"""`hub app`: app bundles and each device's update, and `hub rollout`: staged rollouts of an
app version (a running hub picks changes up within a second)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from hub.cliutil import UsageError, data_dir_arg, print_table, when
from hub.config import prepare_data_dir
from hub.ota.bundles import BundleError, Bundles
from hub.ota.rollout_core import (
    DEFAULT_ABORT_PCT,
    DEFAULT_CANARY,
    DEFAULT_MAX_PER_MINUTE,
    DEFAULT_TIMEOUT_S,
    FAILURES,
    RolloutError,
)
from hub.ota.rollout_store import RolloutStore, create_rollout, progress
from hub.ota.store import OtaStore
from hub.topics import DEVICE_ID_RE


class AppCliError(Exception):
    """A refused bundle or update, printed as `hub: error: ...`."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="action", required=True)
    add = actions.add_parser("add", help="validate and register a bundle (mpy-hub-tools bundle)")
    add.add_argument("file", type=Path)
    data_dir_arg(add)
    listing = actions.add_parser("list", help="the registered bundles")
    listing.add_argument("--json", action="store_true")
    data_dir_arg(listing)
    assign = actions.add_parser("assign", help="update one device to a registered version")
    assign.add_argument("device")
    assign.add_argument("version")
    data_dir_arg(assign)
    status = actions.add_parser("status", help="each device's update and its state")
    status.add_argument("--json", action="store_true")
    data_dir_arg(status)


def run(args: argparse.Namespace) -> None:
    data_dir: Path = args.data_dir
    prepare_data_dir(data_dir)
    bundles = Bundles(data_dir)
    try:
        if args.action == "add":
            b = bundles.add(args.file)
            print(
                f"added app {b.version} for {b.board} (MicroPython {b.micropython}, .mpy "
                f"{b.mpy}): {len(b.files)} files, {b.size} bytes"
            )
        elif args.action == "list":
            found = bundles.list()
            if args.json:
                print(json.dumps([b.summary() for b in found], indent=2))
                return
            rows = [("VERSION", "BOARD", "MICROPYTHON", "MPY", "FILES", "BYTES")]
            rows += [
                (b.version, b.board, b.micropython, b.mpy, str(len(b.files)), str(b.size))
                for b in found
            ]
            print_table(rows)
        elif args.action == "assign":
            if not DEVICE_ID_RE.match(args.device):
                raise UsageError(f"bad device id {args.device[:40]!r}")
            bundle = bundles.get(args.version)
            store = OtaStore(data_dir)
            try:
                row = store.assign(args.device, bundle.version)
            finally:
                store.close()
            print(f"update of {args.device} to {bundle.version} assigned (tag {row['tag']})")
        else:
            store = OtaStore(data_dir)
            try:
                rows_ = store.all()
            finally:
                store.close()
            if args.json:
                print(json.dumps(rows_, indent=2))
                return
            table = [("DEVICE", "VERSION", "STATE", "PROGRESS", "ERROR", "UPDATED (UTC)")]
            table += [
                (
                    r["device"],
                    r["version"],
                    r["state"],
                    f"{r['n']}/{r['of']}",
                    (r["error"] or "")[:60],
                    when(r["updated_at"]),
                )
                for r in rows_
            ]
            print_table(table)
    except BundleError as exc:
        raise AppCliError(str(exc)) from None


# --- hub rollout -----------------------------------------------------------------------------
def rollout_arguments(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="action", required=True)
    start = actions.add_parser("start", help="update a group or devices in stages")
    start.add_argument("--app", required=True, metavar="VERSION", help="a registered version")
    target = start.add_mutually_exclusive_group(required=True)
    target.add_argument("--group", metavar="G", help="a group's registered devices (hub group)")
    target.add_argument("--devices", metavar="ID,...", help="these devices, in this order")
    start.add_argument(
        "--canary", type=int, metavar="N", help=f"devices first (default {DEFAULT_CANARY})"
    )
    start.add_argument("--steps", metavar="P%,...", help="cumulative shares (10%%,50%%,100%%)")
    start.add_argument(
        "--max-per-minute",
        metavar="M",
        help=f"devices assigned (default {DEFAULT_MAX_PER_MINUTE})",
    )
    start.add_argument(
        "--abort-failed-pct", metavar="P", help=f"abort above (default {DEFAULT_ABORT_PCT:g})"
    )
    start.add_argument(
        "--timeout-per-device", metavar="S", help=f"seconds (default {DEFAULT_TIMEOUT_S:g})"
    )
    data_dir_arg(start)
    listing = actions.add_parser("list", help="the rollouts, newest first")
    listing.add_argument("--json", action="store_true")
    data_dir_arg(listing)
    status = actions.add_parser("status", help="a rollout's stages and each device's state")
    status.add_argument("id", type=int)
    status.add_argument("--json", action="store_true")
    data_dir_arg(status)
    for name, text in (
        ("pause", "assign no more devices (those under way go on)"),
        ("resume", "carry on"),
        ("cancel", "end it: no more devices are assigned"),
    ):
        act = actions.add_parser(name, help=text)
        act.add_argument("id", type=int)
        data_dir_arg(act)


def rollout_run(args: argparse.Namespace) -> None:
    data_dir: Path = args.data_dir
    prepare_data_dir(data_dir)
    try:
        if args.action == "start":
            raw = {
                "app": args.app,
                "group": args.group,
                "devices": args.devices,
                "canary": args.canary,
                "steps": args.steps,
                "max_per_minute": args.max_per_minute,
                "abort_failed_pct": args.abort_failed_pct,
                "timeout_per_device": args.timeout_per_device,
            }
            found = create_rollout(
                data_dir, {k: v for k, v in raw.items() if v is not None}, "cli"
            )
            print(
                f"rollout {found['id']} of {found['version']} to {len(found['devices'])} devices "
                "started (a running hub carries it out)"
            )
            return
        store = RolloutStore(data_dir)
        try:
            if args.action == "list":
                _print_rollouts(store.listing(), args.json)
            elif args.action == "status":
                shown = store.get(args.id)
                if shown is None:
                    raise RolloutError(f"no rollout {args.id}")
                _print_rollout(progress(shown), args.json)
            else:
                found = store.act(args.id, args.action, "cli")
                print(f"rollout {args.id} {found['status']}")
        finally:
            store.close()
    except RolloutError as exc:
        raise AppCliError(str(exc)) from None


def _print_rollouts(rows: list[dict[str, Any]], as_json: bool) -> None:
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    table = [("ID", "VERSION", "STATUS", "STEP", "DEVICES", "UPDATED", "FAILED", "STARTED (UTC)")]
    for r in rows:
        c = r["counts"]
        failed = sum(c.get(s, 0) for s in FAILURES)
        table.append(
            (
                str(r["id"]),
                r["version"],
                r["status"],
                str(r["step"]),
                str(r["total"]),
                str(c.get("updated", 0)),
                str(failed),
                when(r["created_at"]),
            )
        )
    print_table(table)


def _print_rollout(found: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print(json.dumps(found, indent=2))
        return
    print(
        f"rollout {found['id']}: {found['version']} to {found['target']}, {found['status']}"
        + (f" ({found['reason']})" if found["reason"] else "")
    )
    for stage in found["stages"]:
        mark = "*" if stage["current"] else " "
        print(
            f"{mark} {stage['name']:>7}: {stage['devices']} in all ({stage['new']} new), "
            f"{stage['done']} done"
        )
    table = [("DEVICE", "STAGE", "STATE", "ERROR", "ASSIGNED (UTC)")]
    table += [
        (d["device"], d["stage"], d["state"], (d["error"] or "")[:60], when(d["assigned_at"]))
        for d in found["devices"]
    ]
    print_table(table)
