"""`python -m tools.bench.cluster` (`make bench-cluster`): cluster mode's figures (issue #16).

A local 3-node RabbitMQ cluster (tools/cluster), PostgreSQL, and hubs in cluster mode
(`hub serve --broker rabbitmq`) on copies of the bench's registry. The devices are the
multi-process load generator's (tools/bench/fleetgen.py: QoS 1 readings queued until
acknowledged, reconnects with backoff and jitter), each worker process on one node; here a
device that loses its node moves to the next one, as the firmware does with its list of hubs.

- ``ingest_1node``: devices on node 1, one hub: readings stored in PostgreSQL per second.
- ``ingest_3nodes``: the same devices spread over the 3 nodes, two hubs consuming the readings
  queue together: readings stored per second.
- ``connect``: 10,000 devices spread over the nodes (one worker each): seconds until every one
  is connected and subscribed; each node's memory before and after.
- ``browser``: with that fleet publishing (one reading per device per 10 s), a browser on node
  3's Web MQTT subscribed to ``d/+/t/+``: device -> browser p50/p99.
- ``node_kill``: node 1 SIGKILLed: seconds until all its devices are connected elsewhere, and
  until what they queued meanwhile is acknowledged; readings lost (acknowledged to a device and
  never stored) over the whole run, counted against PostgreSQL.

Every figure depends on the machine's load: the load average is printed beside them. Nothing
here is asserted by a test.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import selectors
import shutil
import subprocess
import sys
import tempfile
import time
import zlib
from pathlib import Path
from typing import Any

import psycopg

from hub.broker import SUBSCRIPTION_POLICY, SUBSCRIPTION_POLICY_BODY
from tools.bench import fleetgen, provision
from tools.bench.brokers import BenchError
from tools.bench.clusterconnect import auth_answer_ms, connect_parts
from tools.bench.run import raise_fd_limit
from tools.bench.storm import Workers, _percentiles
from tools.cluster import Cluster
from tools.cluster.hubrun import HubRun, auth_port, auth_url
from tools.cluster.mgmt import get as mgmt_get
from tools.cluster.mgmt import send as mgmt_send
from tools.pgserver import PgServerError, postgres_server

SCENARIOS = ("cluster",)
HOST = "127.0.0.1"


# --- the load generator's worker, with failover ---------------------------------------------
class FailoverDevice(fleetgen.Device):
    """A fleetgen device that knows every node (``ports`` in the spec, its own node first)
    and moves to the next after a failed connect or a lost link, as firmware/node/session.py
    does with the settings' ``hubs``."""

    def __init__(self, ident: str, secret: str | None, fleet: fleetgen.Fleet) -> None:
        super().__init__(ident, secret, fleet)
        ports: list[int] = list(fleet.spec.get("ports") or [fleet.port])
        # Half the devices of a node list the other nodes the other way round, so a node's
        # loss sends half its devices to each of two nodes instead of all to the next one
        # (the README's advice for a fleet's `hubs` lists).
        if zlib.crc32(ident.encode()) & 1:
            ports[1:] = ports[:0:-1]
        self.ports = ports
        self.at = 0

    async def connect(self, timeout: float) -> None:
        self.fleet.port = self.ports[self.at]  # read by connect() before its first await
        try:
            await super().connect(timeout)
        except (OSError, ConnectionError, TimeoutError):
            self.at = (self.at + 1) % len(self.ports)
            raise

    def connection_lost(self, exc: Exception | None) -> None:
        if self.online:
            self.at = (self.at + 1) % len(self.ports)
        super().connection_lost(exc)


def worker() -> None:
    """``python -m tools.bench.cluster --worker``: fleetgen's worker with FailoverDevice."""
    fleetgen.Device = FailoverDevice  # type: ignore[misc]  # Fleet builds its devices by name
    fleetgen.main()


class NodeWorkers(Workers):
    """Load generator processes, each with its devices on one node (and the others to fail
    over to), answering fleetgen's commands."""

    def __init__(
        self,
        cluster: Cluster,
        nodes: list[int],
        devices: list[list[str]],
        token: str,
        source: int,
        browser_node: int | None = None,
        **spec: Any,
    ) -> None:
        self.procs = []
        self._selector = selectors.DefaultSelector()
        self._buffers = {}
        ports = cluster.mqtt_ports
        for k, node in enumerate(nodes):
            proc = subprocess.Popen(
                [sys.executable, "-m", "tools.bench.cluster", "--worker"],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
            )
            assert proc.stdin is not None and proc.stdout is not None
            browser = browser_node is not None and k == 0
            ws = cluster.ws_ports[browser_node if browser_node is not None else node]
            worker_spec = {
                **spec,
                "host": HOST,
                "port": ports[node],
                "ports": ports[node:] + ports[:node],
                "ws_url": f"ws://{HOST}:{ws}{cluster.ws_path}",
                "token": token,
                "devices": devices[k :: len(nodes)],
                "source": f"127.0.2.{source + k}",  # each worker its own source address
                "browser": browser,
            }
            proc.stdin.write(json.dumps(worker_spec).encode() + b"\n")
            proc.stdin.flush()
            self._selector.register(proc.stdout, selectors.EVENT_READ, k)
            self.procs.append(proc)


# --- PostgreSQL -------------------------------------------------------------------------------
def _stored(store: str) -> int:
    with psycopg.connect(store) as db:
        row = db.execute("SELECT count(*) FROM readings").fetchone()
    return int(row[0]) if row else 0


def _stored_by_boot(store: str) -> dict[tuple[str, str], int]:
    with psycopg.connect(store) as db:
        rows = db.execute("SELECT device, boot, count(*) FROM readings GROUP BY 1, 2").fetchall()
    return {(d, b): int(n) for d, b, n in rows}


# --- measures ---------------------------------------------------------------------------------
def _load() -> float:
    return round(os.getloadavg()[0], 1)


def _queue(cluster: Cluster) -> int:
    for port in cluster.mgmt_ports[1:] + cluster.mgmt_ports[:1]:
        try:
            queue = mgmt_get(port, "/api/queues/%2F/hub.readings", cluster.credentials)
        except OSError:
            continue
        if isinstance(queue, dict):
            return int(queue.get("messages") or 0)
    return -1


def _node_memory(cluster: Cluster) -> dict[str, int]:
    nodes = mgmt_get(cluster.mgmt_ports[-1], "/api/nodes", cluster.credentials)
    assert isinstance(nodes, list)
    return {str(n["name"]): int(n.get("mem_used") or 0) for n in nodes if n.get("running")}


def _wait_drained(cluster: Cluster, limit: float) -> float:
    """Seconds until the readings queue is empty (the hubs stored everything taken)."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < limit:
        if _queue(cluster) == 0:
            return time.monotonic() - t0
        time.sleep(0.5)
    raise BenchError(f"the readings queue did not drain in {limit:.0f} s")


def _ingest(
    cluster: Cluster,
    store: str,
    nodes: list[int],
    devices: list[list[str]],
    token: str,
    args: argparse.Namespace,
    source: int,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Readings stored per second while ``devices`` publish flat out through ``nodes``."""
    workers = NodeWorkers(
        cluster,
        nodes,
        devices,
        token,
        source,
        period=args.ingest_period,
        concurrency=args.connect_concurrency,
        io_timeout=args.io_timeout,
    )
    try:
        workers.collect_after("connect", "connected", 600)
        s0, t0, load0 = _stored(store), time.monotonic(), _load()
        workers.command(cmd="publish")
        time.sleep(args.ingest_warmup)
        n0, w0 = _stored(store), time.monotonic()
        time.sleep(args.ingest_seconds)
        n1, w1 = _stored(store), time.monotonic()
        backlog = _queue(cluster)
        workers.command(cmd="stop", drain_s=120.0)
        results = [r["result"] for r in workers.collect("result", 300)]
        drain = _wait_drained(cluster, 600)
        s1, t1 = _stored(store), time.monotonic()
    finally:
        workers.close()
    return {
        "devices": len(devices),
        "offered_per_s": round(len(devices) / args.ingest_period),
        # From the first publish until every reading taken is stored (what the pipeline
        # sustains), and within the window after the warm-up alone.
        "stored_per_s": round((s1 - s0) / (t1 - t0)),
        "window_stored_per_s": round((n1 - n0) / (w1 - w0)),
        "stored": s1 - s0,
        "seconds": round(t1 - t0, 1),
        "queue_at_window_end": backlog,
        "acked": sum(r["acked"] for r in results),
        "drain_s": round(drain, 1),
        "load": [load0, _load()],
    }, results


def run(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    registry, creds, _ = provision.registry_dir(args.cluster_devices, args.cache)
    token = provision.token(registry)
    hub_a, hub_b = work / "hub-a", work / "hub-b"
    shutil.copytree(registry, hub_a)
    shutil.copytree(registry, hub_b)
    out: dict[str, Any] = {"load_start": _load()}
    finished: list[dict[str, Any]] = []
    port = auth_port()
    with (
        Cluster(nodes=3, base=work / "rabbit", auth_url=auth_url(port)) as cluster,
        # fsync on: stored means on disk. A port from tools/cluster's range (auth_port).
        postgres_server(port=auth_port(), fsync=True, prefix="bench-cluster-pg-") as server,
    ):
        with psycopg.connect(server, autocommit=True) as db:
            db.execute("CREATE DATABASE bench")
        store = server.rsplit("/", 1)[0] + "/bench"
        extra = ("--store", store, "--log-level", "WARNING")
        hubs = [HubRun(cluster, hub_a, port, *extra)]
        try:
            few = creds[: args.ingest_devices]
            if not args.skip_ingest:
                out["ingest_1node"], done = _ingest(cluster, store, [0], few, token, args, 1)
                _progress("ingest_1node", out)
                finished += done
            hubs.append(HubRun(cluster, hub_b, 0, *extra))
            if not args.skip_ingest:
                out["ingest_3nodes"], done = _ingest(
                    cluster, store, [0, 1, 2], few, token, args, 4
                )
                _progress("ingest_3nodes", out)
                finished += done
            out["connect_parts"] = _connect_parts(cluster, hubs, creds, port)
            _progress("connect_parts", out)
            out.update(_fleet(cluster, creds, token, args, finished))
            _progress("fleet", out)
            out["drain_s"] = round(_wait_drained(cluster, 600), 1)
            out["lost"], out["checked_readings"] = _lost(store, finished)
        finally:
            for hub in hubs:
                hub.stop()
    out["load_end"] = _load()
    return out


def _progress(step: str, out: dict[str, Any]) -> None:
    """Each step's figures as soon as it has them (a long run cut short keeps them)."""
    print(f"{step}: {json.dumps(out)}", flush=True)


PARTS_DEVICES = 20  # connected one at a time, for each form of the subscription queue


def _connect_parts(
    cluster: Cluster, hubs: list[HubRun], creds: list[list[str]], auth: int
) -> dict[str, Any]:
    """One CONNECT+SUBSCRIBE taken apart (tools/bench/clusterconnect.py), on node 1, with the
    devices' subscription queues mirrored (the hub's policy) and without (the policy removed
    for the step, then put back): what the mirror costs."""
    n = PARTS_DEVICES
    sample = creds[-3 * n :]
    node_pids = [pid for i in range(len(cluster.mqtt_ports)) for pid in cluster.node_pids(i)]
    hub_pids = [hub.proc.pid for hub in hubs]
    mgmt = cluster.mgmt_ports[0]
    policy = f"/api/policies/%2F/{SUBSCRIPTION_POLICY}"
    load0 = _load()
    out: dict[str, Any] = {"auth_user_ms": auth_answer_ms(auth, sample[2 * n :])}
    out["mirrored"] = connect_parts(cluster.mqtt_ports[0], sample[:n], node_pids, hub_pids)
    mgmt_send(mgmt, "DELETE", policy, cluster.credentials)
    try:
        time.sleep(1)
        out["local"] = connect_parts(cluster.mqtt_ports[0], sample[n : 2 * n], node_pids, hub_pids)
    finally:
        mgmt_send(mgmt, "PUT", policy, cluster.credentials, SUBSCRIPTION_POLICY_BODY)
    out["load"] = [load0, _load()]
    return out


def _fleet(
    cluster: Cluster,
    creds: list[list[str]],
    token: str,
    args: argparse.Namespace,
    finished: list[dict[str, Any]],
) -> dict[str, Any]:
    """The big fleet: connect time, a browser's latency while it publishes, node 1 killed."""
    out: dict[str, Any] = {}
    memory0 = _node_memory(cluster)
    per_node = [
        NodeWorkers(
            cluster,
            [node],
            creds[node::3],
            token,
            10 + node,
            period=args.fleet_period,
            concurrency=args.connect_concurrency,
            io_timeout=args.io_timeout,
        )
        for node in range(3)
    ]
    browser: NodeWorkers | None = None
    try:
        load0 = _load()
        for workers in per_node:
            workers.command(cmd="connect")
        seconds = [w.collect("connected", 3600)[0]["seconds"] for w in per_node]
        memory1 = _node_memory(cluster)
        out["connect"] = {
            "devices": len(creds),
            "seconds": max(seconds),
            "per_node_s": seconds,
            "node_mem_mb": {n: round(m / 1e6) for n, m in memory1.items()},
            "bytes_per_device": round(
                (sum(memory1.values()) - sum(memory0.values())) / len(creds)
            ),
            "load": [load0, _load()],
        }
        # A browser of its own (a worker with no devices) on node 3's Web MQTT, stopped before
        # the kill: its latencies are the fleet's steady state.
        browser = NodeWorkers(cluster, [2], [], token, 20, browser_node=2)
        for workers in per_node:
            workers.command(cmd="publish")
        load0 = _load()
        time.sleep(args.fleet_warmup)
        try:
            browser.command(cmd="stop", drain_s=0.0)
            (seen,) = browser.collect("result", 120)
        except (BenchError, OSError) as exc:  # its SUBSCRIBE can time out on a busy node
            out["browser"] = {"error": str(exc), "load": [load0, _load()]}
        else:
            latencies = seen["result"]["latencies"]
            out["browser"] = {
                "received": len(latencies),
                **_percentiles(latencies),
                "load": [load0, _load()],
            }
        load0 = _load()
        killed_at = time.monotonic()
        cluster.kill(0)
        per_node[0].command(cmd="watch", since=killed_at, limit=args.kill_limit)
        (watched,) = per_node[0].collect("recovered", args.kill_limit + 60)
        out["node_kill"] = {
            "devices": len(creds[0::3]),
            "reconnected_s": None
            if watched["online_at"] is None
            else round(watched["online_at"] - killed_at, 2),
            "backlog_acked_s": None
            if watched["backlog_at"] is None
            else round(watched["backlog_at"] - killed_at, 2),
            "back": watched["back"],
            "load": [load0, _load()],
        }
        for workers in per_node:
            workers.command(cmd="stop", drain_s=120.0)
        finished += [w.collect("result", 300)[0]["result"] for w in per_node]
    finally:
        for workers in [*per_node, *([browser] if browser else [])]:
            workers.close()
    return out


def _lost(store: str, results: list[dict[str, Any]]) -> tuple[int, int]:
    """Readings a device had taken and no longer queued (acknowledged) but not stored."""
    stored = _stored_by_boot(store)
    lost = checked = 0
    for result in results:
        for ident, boot, seq, pending in result["devices"]:
            expected = seq - len(pending)
            checked += expected
            lost += max(0, expected - stored.get((ident, boot), 0))
    return lost, checked


# --- report -----------------------------------------------------------------------------------
def rows(r: dict[str, Any]) -> list[tuple[str, str, str]]:
    def get(*path: str) -> Any:
        node: Any = r
        for key in path:
            node = node.get(key) if isinstance(node, dict) else None
        return node

    def load(*path: str) -> str:
        pair = get(*path, "load")
        return f"{pair[0]} -> {pair[1]}" if pair else "-"

    return [
        (
            "devices -> PostgreSQL, 1 node, 1 hub",
            f"{get('ingest_1node', 'stored_per_s')}",
            f"readings/s (offered {get('ingest_1node', 'offered_per_s')}/s; load "
            f"{load('ingest_1node')})",
        ),
        (
            "devices -> PostgreSQL, 3 nodes, 2 hubs",
            f"{get('ingest_3nodes', 'stored_per_s')}",
            f"readings/s (offered {get('ingest_3nodes', 'offered_per_s')}/s; load "
            f"{load('ingest_3nodes')})",
        ),
        (
            "one CONNECT+SUBSCRIBE, mirrored queue",
            f"{get('connect_parts', 'mirrored', 'connack_ms')} + "
            f"{get('connect_parts', 'mirrored', 'suback_ms')}",
            f"ms to CONNACK + SUBACK (node CPU {get('connect_parts', 'mirrored', 'node_cpu_ms')}"
            f" ms, hubs {get('connect_parts', 'mirrored', 'hub_cpu_ms')} ms per device; auth "
            f"/user {get('connect_parts', 'auth_user_ms')} ms)",
        ),
        (
            "one CONNECT+SUBSCRIBE, queue not mirrored",
            f"{get('connect_parts', 'local', 'connack_ms')} + "
            f"{get('connect_parts', 'local', 'suback_ms')}",
            f"ms (node CPU {get('connect_parts', 'local', 'node_cpu_ms')} ms, hubs "
            f"{get('connect_parts', 'local', 'hub_cpu_ms')} ms per device; load "
            f"{load('connect_parts')})",
        ),
        (
            f"connect {get('connect', 'devices')} devices over 3 nodes",
            f"{get('connect', 'seconds')}",
            f"s ({get('connect', 'bytes_per_device')} node bytes per device; load "
            f"{load('connect')})",
        ),
        (
            "device -> browser (Web MQTT) p99",
            f"{get('browser', 'p99_ms')}",
            f"ms (p50 {get('browser', 'p50_ms')} ms, {get('browser', 'received')} readings; "
            f"load {load('browser')})",
        ),
        (
            "node SIGKILL -> its devices reconnected",
            f"{get('node_kill', 'reconnected_s')}",
            f"s ({get('node_kill', 'devices')} devices; backlog acknowledged at "
            f"{get('node_kill', 'backlog_acked_s')} s; load {load('node_kill')})",
        ),
        (
            "readings lost (acknowledged, not stored)",
            f"{get('lost')}",
            f"of {get('checked_readings')} checked",
        ),
    ]


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--cluster-devices", type=int, default=10_000, help="fleet (10000)")
    p.add_argument("--ingest-devices", type=int, default=1_000, help="ingest rows (1000)")
    p.add_argument("--ingest-period", type=float, default=0.5, help="ingest: s per reading")
    p.add_argument("--ingest-warmup", type=float, default=5.0, help="ingest: s before window")
    p.add_argument("--ingest-seconds", type=float, default=20.0, help="ingest: window (20)")
    p.add_argument("--fleet-period", type=float, default=10.0, help="fleet: s per reading")
    p.add_argument("--fleet-warmup", type=float, default=20.0, help="fleet: s before kill")
    p.add_argument("--kill-limit", type=float, default=300.0, help="s to wait for failover")
    p.add_argument("--skip-ingest", action="store_true", help="only the fleet's rows")
    # A node takes ~70 ms of CPU per CONNECT+SUBSCRIBE (BENCHMARKS.md): with more in flight than
    # it finishes within the load generator's timeouts, devices give up, retry on the
    # firmware's 5 s I/O timeout, and the nodes' work for them is lost (a collapse).
    p.add_argument(
        "--connect-concurrency", type=int, default=20, help="first connects in flight per node"
    )
    p.add_argument(
        "--io-timeout", type=float, default=5.0, help="devices' io_timeout_s (firmware's: 5)"
    )


def main(argv: list[str] | None = None) -> int:
    if argv is None and sys.argv[1:2] == ["--worker"]:
        worker()
        return 0
    p = argparse.ArgumentParser(prog="tools.bench.cluster", description=__doc__)
    add_arguments(p)
    p.add_argument("--cache", type=Path, default=provision.CACHE, help="registry cache folder")
    p.add_argument("--json", type=Path, default=Path("build/bench/cluster.json"))
    p.add_argument("--dir", type=Path, help="work in this new folder and keep it (the logs)")
    args = p.parse_args(argv)
    raise_fd_limit()  # the nodes and the load generators inherit it
    with contextlib.ExitStack() as stack:
        if args.dir is None:
            work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-cluster-")))
        else:
            args.dir.mkdir(parents=True)
            work = args.dir
        try:
            result = run(args, work)
        except (BenchError, PgServerError) as exc:
            print(f"bench: error: {exc}", file=sys.stderr)
            return 2
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=1))
    width = max(len(name) for name, _, _ in rows(result))
    print(f"cluster mode (load average {result['load_start']} at start)")
    for name, value, unit in rows(result):
        print(f"{name:<{width}}  {value:>8}  {unit}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
