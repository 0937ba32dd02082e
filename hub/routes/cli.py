"""`hub route list` and `hub route dead-letters NAME [--replay]`.

They read the routes' state in the data dir (``routes.sqlite3``), so they work whether or not
the hub runs; a running hub delivers replayed dead letters within a second. With ``--config``
the list also shows each configured route's target and filter (never a secret)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from hub.cliutil import UsageError, data_dir_arg, print_table
from hub.routes.queue import RouteDb


def add_arguments(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="action", required=True)
    listing = actions.add_parser("list", help="every route with its counters")
    listing.add_argument(
        "--config",
        type=Path,
        default=None,
        metavar="FILE",
        help="the hub's config file: show the routes' targets and filters",
    )
    listing.add_argument("--json", action="store_true", help="one JSON object a line")
    dead = actions.add_parser("dead-letters", help="a route's dead letters (JSON, one a line)")
    dead.add_argument("name")
    dead.add_argument(
        "--replay", action="store_true", help="put them back into the route's queue for delivery"
    )
    dead.add_argument("--limit", type=int, default=1000)
    for one in (listing, dead):
        data_dir_arg(one)


def run(args: argparse.Namespace) -> None:
    configured = {}
    if getattr(args, "config", None) is not None:
        from hub import configfile  # the file's routes, checked as `hub serve` would

        config = configfile.load(args.config)
        configured = {r.name: r.describe() for r in config.routes}
    try:
        db = RouteDb(args.data_dir, create=False)
    except FileNotFoundError as exc:
        if args.action == "list" and configured:
            db = None
        else:
            raise UsageError(str(exc)) from None
    try:
        if args.action == "list":
            counters = db.counters() if db is not None else {}
            _print_list(configured, counters, as_json=args.json)
        elif args.replay:
            assert db is not None
            print(f"replayed {db.replay(args.name)} dead letters of route {args.name!r}")
        else:
            assert db is not None
            for letter in db.dead_letters(args.name, args.limit):
                print(json.dumps(letter))
    finally:
        if db is not None:
            db.close()


def _print_list(
    configured: dict[str, dict[str, object]], counters: dict[str, dict[str, int]], *, as_json: bool
) -> None:
    names = list(configured) + sorted(n for n in counters if n not in configured)
    rows: list[tuple[str, ...]] = [
        ("NAME", "TARGET", "FILTER", "QUEUED", "DELIVERED", "RETRIES", "DEAD", "LOOPS")
    ]
    keys = ("queued", "delivered", "retries", "dead", "loops")
    for name in names:
        shown = configured.get(name, {"name": name, "configured": False})
        counts = {k: counters.get(name, {}).get(k, 0) for k in keys}
        if as_json:
            print(json.dumps({**shown, **counts}))
            continue
        target, topic_filter = str(shown.get("target", "-")), str(shown.get("filter", "-"))
        rows.append((name, target, topic_filter, *(str(counts[k]) for k in keys)))
    if not as_json:
        print_table(rows)
