"""`python -m tools.bench` (`make bench`): the hub against Mosquitto, side by side.

The QoS 0 and QoS 1 throughput rows are the median of ``--runs`` runs (3) in one invocation,
each run on a freshly started broker and with its broker CPU per message; the other scenarios
run once.

Both brokers are pinned to CPU 0 and the load generator (tools/bench/loadgen.py, its own
process) to CPU 1; each scenario runs against both with the same load, and the table shows
the ratio hub / Mosquitto with the targets of the performance issue. Results also go to JSON.
No figure here is asserted by a test: they are measurements, not pass/fail.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tools.bench import durable, provision, report, routes, storm
from tools.bench.brokers import BenchError, Broker, start_hub, start_mosquitto

Mark = Callable[[dict[str, Any]], None]
SCENARIOS = (
    "qos0",
    "qos1",
    "fanout",
    "latency",
    "connections",
    "fleet",
    "durable",
    "routes",
    *storm.SCENARIOS,
)


def raise_fd_limit() -> int:
    """Raises this process's soft open-file limit to the hard one; children inherit it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def drive(
    broker: Broker,
    spec: dict[str, Any],
    loadgen_cpus: set[int] | None,
    on_mark: Mark | None = None,
    timeout: float = 600,
) -> dict[str, Any]:
    """Runs one scenario in a load generator process against a broker."""
    settle(broker)
    spec = {**spec, "host": broker.host, "port": broker.port, "ws_url": broker.ws_url}
    env = dict(os.environ)
    if loadgen_cpus:
        env["BENCH_LOADGEN_CPUS"] = ",".join(str(c) for c in sorted(loadgen_cpus))
    proc = subprocess.Popen(
        [sys.executable, "-m", "tools.bench.loadgen"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert proc.stdin is not None and proc.stdout is not None
    deadline = time.monotonic() + timeout
    try:
        proc.stdin.write(json.dumps(spec) + "\n")
        proc.stdin.flush()
        for line in proc.stdout:
            message = json.loads(line)
            if "result" in message:
                return dict(message["result"])
            if on_mark is not None:
                on_mark(message)
            proc.stdin.write("\n")
            proc.stdin.flush()
            if time.monotonic() > deadline:
                break
        raise BenchError(f"load generator ended without a result ({spec['scenario']})")
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()


def settle(broker: Broker, idle_pct: float = 5.0, limit_s: float = 60.0) -> float:
    """Waits until the broker is idle (a backlog of the last scenario is done); seconds."""
    start = time.monotonic()
    last = broker.cpu()
    while time.monotonic() - start < limit_s:
        time.sleep(0.25)
        now = broker.cpu()
        if (now - last) / 0.25 * 100 < idle_pct:
            break
        last = now
    return time.monotonic() - start


class Window:
    """A broker's CPU and RSS between two marks."""

    def __init__(self, broker: Broker) -> None:
        self.broker = broker
        self.cpu0 = self.t0 = 0.0
        self.cpu_pct = 0.0
        self.cpu_s = 0.0
        self.rss = 0

    def mark(self, message: dict[str, Any]) -> None:
        if message.get("mark") in ("connected",):
            self.broker.repin()
            self.cpu0, self.t0 = self.broker.cpu(), time.monotonic()
        self.rss = self.broker.rss()

    def close(self) -> None:
        wall = time.monotonic() - self.t0
        self.cpu_s = self.broker.cpu() - self.cpu0
        self.cpu_pct = round(100 * self.cpu_s / wall, 1) if wall else 0.0
        self.rss = max(self.rss, self.broker.rss())


def _throughput(
    broker: Broker,
    base: dict[str, Any],
    lg: set[int] | None,
    qos: int,
    publishers: int,
    subscribers: int,
    seconds: float,
) -> dict[str, Any]:
    window = Window(broker)
    spec = {
        **base,
        "scenario": "throughput",
        "qos": qos,
        "publishers": publishers,
        "subscribers": subscribers,
        "seconds": seconds,
    }
    result = drive(broker, spec, lg, window.mark)
    window.close()
    delivered = result.get("delivered") or 0
    # Broker CPU per delivered message, connecting included: steadier than msg/s on a busy
    # machine (another process taking the broker's CPU lowers msg/s, not this).
    per_msg = round(window.cpu_s / delivered * 1e6, 1) if delivered else None
    return {
        **result,
        "broker_cpu_pct": window.cpu_pct,
        "broker_rss": window.rss,
        "broker_cpu_us_per_msg": per_msg,
    }


def median_of(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The run with the median msg/s (the lower middle one of an even count), with every
    run's msg/s and CPU per message beside it."""
    ordered = sorted(runs, key=lambda r: r.get("delivered_per_s") or 0.0)
    middle = ordered[(len(ordered) - 1) // 2]
    return {
        **middle,
        "runs": [r.get("delivered_per_s") for r in runs],
        "runs_cpu_us_per_msg": [r.get("broker_cpu_us_per_msg") for r in runs],
    }


def run_scenarios(
    args: argparse.Namespace,
    name: str,
    start: Callable[[str], Broker],
    creds: list[list[str]],
    token: str,
    lg: set[int] | None,
) -> dict[str, Any]:
    """Every scenario against one broker (``start(kind)`` starts it fresh when needed)."""
    out: dict[str, Any] = {}
    base = {"devices": creds, "token": token, "anonymous": name == "mosquitto"}
    wanted = set(args.only or SCENARIOS)
    for qos in (0, 1):
        if f"qos{qos}" in wanted:
            runs = []
            for _ in range(args.runs):
                # A broker of its own for each run: a QoS 0 flood leaves megabytes of PUBLISHes
                # in the broker's receive buffers (the load generator's reset does not take back
                # what the kernel has received), which a broker shared with the next run would
                # still be working through (the hub for over a minute on a busy machine).
                broker = start("throughput")
                out["broker_notes"] = broker.notes
                try:
                    runs.append(_throughput(broker, base, lg, qos, 10, 1, args.seconds))
                finally:
                    broker.stop()
            out[f"qos{qos}"] = median_of(runs)
    fast = [s for s in ("fanout", "latency") if s in wanted]
    if fast:
        broker = start("throughput")
        out["broker_notes"] = broker.notes
        try:
            if "fanout" in wanted:
                out["fanout"] = _throughput(broker, base, lg, 0, 1, args.fanout, args.seconds)
            if "latency" in wanted:
                window = Window(broker)
                spec = {
                    **base,
                    "scenario": "latency",
                    "publishers": 10,
                    "rate": args.rate,
                    "seconds": args.seconds,
                }
                out["latency"] = drive(broker, spec, lg, window.mark)
                window.close()
                out["latency"]["broker_cpu_pct"] = window.cpu_pct
        finally:
            broker.stop()
    if "durable" in wanted:  # its own brokers, restarted on their data (tools/bench/durable.py)
        cpus = {0} if not args.no_pin and (os.cpu_count() or 1) >= 2 else None
        out["durable"] = durable.run(
            name, args.work.parent, cpus, args.seconds, args.stored, args.killed
        )
    if "routes" in wanted and name == "hub":  # tools/bench/routes.py; Mosquitto has none
        out["routes"] = routes.run(
            lambda cfg: start(f"config={cfg}"), args.work / "routes", creds, args.route_messages
        )
    if "connections" in wanted or "fleet" in wanted:
        broker = start("defaults")
        out["fleet_broker_notes"] = broker.notes
        try:
            if "connections" in wanted:
                out["connections"] = _connections(broker, base, lg, args)
            if "fleet" in wanted:
                out["fleet"] = _fleet(broker, base, lg, args)
        finally:
            broker.stop()
    for scenario in storm.SCENARIOS:  # each on a fresh broker, which it stops
        if scenario in wanted:
            out[scenario] = storm.run(scenario, start("defaults"), base, lg, args)
    return out


def _connections(
    broker: Broker, base: dict[str, Any], lg: set[int] | None, args: argparse.Namespace
) -> dict[str, Any]:
    """Idle connections in batches: time and RSS per connection (cold, then warm for the hub)."""
    batches = args.connections
    total = sum(batches)
    spec = {
        **base,
        "scenario": "connections",
        "devices": base["devices"][:total],
        "batches": batches,
    }
    broker.repin()
    rss0 = broker.rss()
    samples: list[int] = []

    def on_mark(message: dict[str, Any]) -> None:
        broker.repin()
        samples.append(broker.rss())

    first = drive(broker, spec, lg, on_mark)
    out: dict[str, Any] = {"rss_idle": rss0, "batches": []}
    for batch, rss in zip(first["batches"], samples, strict=True):
        n = batch["connected"]
        out["batches"].append({**batch, "rss": rss, "bytes_per_conn": round((rss - rss0) / n)})
    if broker.name == "hub":
        # The first CONNECT of each device checked its secret with scrypt; now it is cached.
        out["first_batches"] = out["batches"]
        time.sleep(1.0)
        again = drive(broker, spec, lg)
        out["batches"] = [
            {**b, "rss": f["rss"], "bytes_per_conn": f["bytes_per_conn"]}
            for b, f in zip(again["batches"], out["first_batches"], strict=True)
        ]
    return out


def _fleet(
    broker: Broker, base: dict[str, Any], lg: set[int] | None, args: argparse.Namespace
) -> dict[str, Any]:
    spec = {
        **base,
        "scenario": "fleet",
        "devices": base["devices"][: args.fleet],
        "period": args.period,
        "seconds": args.fleet_seconds,
    }
    window = Window(broker)
    rss: dict[str, int] = {}

    def on_mark(message: dict[str, Any]) -> None:
        window.mark(message)
        rss[message["mark"]] = broker.rss()
        if message["mark"] == "done":
            window.close()

    result = drive(broker, spec, lg, on_mark, timeout=args.fleet_seconds + 600)
    stored = None
    if broker.name == "hub":
        broker.stop()
        import sqlite3

        db = sqlite3.connect(args.work / "hub-data" / "telemetry.sqlite3")
        stored = db.execute("SELECT count(*) FROM readings").fetchone()[0]
        db.close()
    return {
        **result,
        "broker_cpu_pct": window.cpu_pct,
        "rss_connected": rss.get("connected"),
        "rss_done": rss.get("done"),
        "stored": stored,
    }


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="tools.bench", description=__doc__)
    p.add_argument("--seconds", type=float, default=5.0, help="throughput/latency window (5)")
    p.add_argument(
        "--runs", type=int, default=3, help="QoS 0 and QoS 1 rows: the median of N runs (3)"
    )
    p.add_argument("--fanout", type=int, default=50, help="subscribers in fan-out (50)")
    p.add_argument("--rate", type=float, default=500.0, help="latency: messages/s (500)")
    p.add_argument(
        "--connections",
        type=lambda s: [int(x) for x in s.split(",")],
        default=[5000, 5000],
        help="idle connection batches (5000,5000)",
    )
    p.add_argument("--fleet", type=int, default=10_000, help="fleet devices (10000)")
    p.add_argument("--period", type=float, default=10.0, help="fleet: s between readings (10)")
    p.add_argument("--fleet-seconds", type=float, default=90.0, help="fleet duration (90)")
    p.add_argument(
        "--stored",
        type=int,
        default=durable.STORED,
        help="durable: messages stored for the restart (100000)",
    )
    p.add_argument(
        "--killed",
        type=int,
        default=durable.KILLED,
        help="durable: messages queued before SIGKILL (10000)",
    )
    p.add_argument(
        "--route-messages",
        type=int,
        default=20_000,
        help="routes: readings through a webhook route (20000)",
    )
    p.add_argument("--only", nargs="*", choices=SCENARIOS, help="run only these scenarios")
    storm.add_arguments(p)
    p.add_argument(
        "--brokers", nargs="*", default=["hub", "mosquitto"], choices=["hub", "mosquitto"]
    )
    p.add_argument("--no-pin", action="store_true", help="do not pin brokers and load generator")
    p.add_argument("--cache", type=Path, default=provision.CACHE, help="registry cache folder")
    p.add_argument("--json", type=Path, default=Path("build/bench/results.json"))
    p.add_argument(
        "--hub-src",
        type=Path,
        default=None,
        help="import the hub from this folder (before/after figures)",
    )
    p.add_argument("--profile", type=Path, default=None, help="cProfile the hub into this file")
    p.add_argument(
        "--hub-arg",
        action="append",
        default=[],
        metavar="ARG",
        help="one more argument for `hub serve` (repeat it; e.g. --hub-arg=--store-sync=normal)",
    )
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.runs < 1:
        raise SystemExit("bench: error: --runs must be at least 1")
    started = time.monotonic()
    fd_limit = raise_fd_limit()
    cpus = os.cpu_count() or 1
    pinned = not args.no_pin and cpus >= 2
    broker_cpus = {0} if pinned else None
    lg_cpus = {1} if pinned else None
    need = max(10, sum(args.connections), args.fleet, storm.devices_needed(args))
    if need + 100 > fd_limit:
        raise SystemExit(f"bench: error: open-file hard limit {fd_limit} < {need + 100}")
    registry, creds, provision_s = provision.registry_dir(need, args.cache)
    token = provision.token(registry)
    results: dict[str, Any] = {
        "machine": {
            "cpus": cpus,
            "python": platform.python_version(),
            "pinned": pinned,
            "fd_limit": fd_limit,
            "platform": platform.platform(),
        },
        "provision_s": round(provision_s, 1),
        "params": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
    }
    with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
        work = Path(tmp)
        args.work = work / "hub"
        for name in args.brokers:

            def start(kind: str, name: str = name) -> Broker:
                if name == "mosquitto":
                    return start_mosquitto(work / "mosquitto", broker_cpus)
                extra = ["--rate-limit", "0"] if kind == "throughput" else []
                if kind.startswith("config="):  # the routes scenario's config file
                    extra = ["--rate-limit", "0", "--config", kind.removeprefix("config=")]
                extra += args.hub_arg
                profile = args.profile if kind == "throughput" or args.only else None
                return start_hub(
                    registry.resolve(),
                    work / "hub",
                    broker_cpus,
                    *extra,
                    profile=profile,
                    source=args.hub_src,
                )

            print(f"bench: {name} ...", file=sys.stderr, flush=True)
            results[name] = run_scenarios(args, name, start, creds, token, lg_cpus)
    results["total_s"] = round(time.monotonic() - started, 1)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(results, indent=2))
    print(report.table(results))
    print(f"\nJSON: {args.json}; {results['total_s']} s in all", flush=True)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BenchError as exc:
        print(f"bench: error: {exc}", file=sys.stderr)
        sys.exit(2)
