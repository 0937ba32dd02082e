"""`hub app`: app bundles and each device's update (a running hub picks changes up within a
second)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from hub.cliutil import UsageError, data_dir_arg, print_table, when
from hub.config import prepare_data_dir
from hub.ota.bundles import BundleError, Bundles
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
            if b.kind == "image":
                print(
                    f"added firmware image {b.version} for {b.board} (MicroPython "
                    f"{b.micropython}): {b.size} bytes, sha256 {b.files[0][2][:16]}..."
                )
            else:
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
