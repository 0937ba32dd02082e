"""`python -m tools.cluster [--nodes 3] [--dir DIR] [--timeout 120]`: start a local RabbitMQ
cluster, print one ready line, and stop every node and epmd on SIGINT or SIGTERM (exit 0).

Where `--hub --data-dir D` will go (once the hub has a cluster mode): choose the hub's HTTP
port first, give the cluster `auth_url` on it (the nodes ask it only when someone logs in, so
the hub may start after them), start the hub against `cluster` (its credentials.json, AMQP and
management ports) inside the `with`, and print `cluster.ready_line(http="HOST:PORT")`.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import time
from pathlib import Path
from types import FrameType

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
        "--dir", type=Path, default=None,
        help="a new or empty folder for the nodes' files, kept after stop (default: a "
        "temporary folder, removed)",
    )  # fmt: skip
    parser.add_argument(
        "--timeout", type=float, default=120.0,
        help="seconds to wait for a node to start, and for the cluster to form (default 120)",
    )  # fmt: skip
    return parser


def _serve(cluster: Cluster) -> None:
    """Waits for a signal; says so once on stderr when a node ends by itself."""
    reported: set[int] = set()
    while True:
        for i, name in enumerate(cluster.node_names):
            if i not in reported and not cluster.node_running(i):
                reported.add(i)
                print(f"cluster: node {name} exited (see {cluster.nodes[i].log_file})",
                      file=sys.stderr, flush=True)  # fmt: skip
        time.sleep(1)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="cluster: %(message)s")
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, _on_signal)
    try:
        with Cluster(nodes=args.nodes, base=args.dir, start_timeout=args.timeout) as cluster:
            print(cluster.ready_line(), flush=True)
            _serve(cluster)
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
