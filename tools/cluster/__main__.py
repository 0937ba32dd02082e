"""`python -m tools.cluster [--nodes 3] [--dir DIR] [--timeout 120] [--auth-url URL]
[--hub --data-dir D]`: start a local RabbitMQ cluster (and a hub in cluster mode against it),
print one ready line, and stop the hub, every node and epmd on SIGINT or SIGTERM (exit 0).
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import time
from pathlib import Path
from types import FrameType

from tools.cluster.hubrun import HubRun, auth_port, auth_url
from tools.cluster.launcher import Cluster
from tools.cluster.nodes import ClusterError


class _Interrupted(Exception):
    """SIGINT or SIGTERM: stop the cluster."""


_signalled = False


def _on_signal(signum: int, frame: FrameType | None) -> None:
    global _signalled
    if not _signalled:  # a second signal must not interrupt the stop itself
        _signalled = True
        raise _Interrupted


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cluster",  # so that argparse's errors read `cluster: error: ...` as ours do
        description="A local RabbitMQ cluster on 127.0.0.1 (MQTT, Web MQTT on /ws, AMQP, "
        "management), stopped with Ctrl-C or SIGTERM.",
    )
    parser.add_argument("--nodes", type=int, default=3, help="how many nodes (default 3)")
    parser.add_argument(
        "--dir",
        type=Path,
        default=None,
        help="a new or empty folder for the nodes' files, kept after stop (default: a "
        "temporary folder, removed)",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=120.0,
        help="seconds to wait for a node to start, and for the cluster to form (default 120)",
    )
    parser.add_argument(
        "--auth-url",
        default=None,
        metavar="URL",
        help="the base URL of an HTTP auth service the nodes ask first (URL/user, /vhost, "
        "/resource, /topic), before their internal users",
    )
    parser.add_argument(
        "--hub",
        action="store_true",
        help="also start a hub in cluster mode against the nodes (its auth listener is the "
        "nodes' auth backend) and add http=HOST:PORT, its console, to the ready line",
    )
    parser.add_argument(
        "--data-dir", type=Path, default=None, help="the hub's data dir (with --hub; required)"
    )
    return parser


def _serve(cluster: Cluster) -> None:
    """Waits for a signal; says so once on stderr when a node ends by itself."""
    reported: set[int] = set()
    while True:
        for i, name in enumerate(cluster.node_names):
            if i not in reported and not cluster.node_running(i):
                reported.add(i)
                print(
                    f"cluster: node {name} exited (see {cluster.nodes[i].log_file})",
                    file=sys.stderr,
                    flush=True,
                )
        time.sleep(1)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.hub and args.data_dir is None:
        parser.error("--hub needs --data-dir D")
    if args.hub and args.auth_url is not None:
        parser.error("--hub answers the nodes' auth backend itself: leave out --auth-url")
    port = auth_port() if args.hub else 0
    logging.basicConfig(level=logging.WARNING, format="cluster: %(message)s")
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, _on_signal)
    try:
        url = auth_url(port) if args.hub else args.auth_url
        with Cluster(
            nodes=args.nodes, base=args.dir, auth_url=url, start_timeout=args.timeout
        ) as cluster:
            hub = HubRun(cluster, args.data_dir, port) if args.hub else None
            try:
                print(cluster.ready_line(http=hub.http if hub else None), flush=True)
                _serve(cluster)
            finally:
                if hub is not None:
                    hub.stop()
    except _Interrupted:
        return 0
    except (ClusterError, OSError) as e:  # OSError: say, a --dir that cannot be made
        first, *rest = str(e).splitlines()
        print(f"cluster: error: {first}", file=sys.stderr)
        for line in rest:
            print(f"  {line}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
