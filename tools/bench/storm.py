"""The bench's connection-storm and biggest-fleet scenarios (issue #18), both brokers alike.

- ``restart``: a fleet (10,000 devices, one QoS 1 reading each per 10 s, each subscribed to
  its command topic) is connected and publishing; the broker is killed (SIGKILL) and started
  again at once on the same port and data. Measured: seconds from the kill until the broker
  listens again, from then until every device is online again (CONNACK and SUBACK), and until
  the backlog of readings they queued meanwhile is acknowledged (for the hub, acknowledged
  means stored); readings lost and duplicated in storage (the hub's SQLite, counted per
  device and boot after the run). The devices reconnect as the firmware does
  (firmware/node/session.py: backoff from 1 s to 60 s with jitter) and never give up.
- ``fleet19k``: the most connections one hub process holds here, 19,000 devices (same load)
  and a WebSocket browser subscribed to ``d/+/t/+``: RSS per connection, device -> browser
  latency, broker CPU.

A process may open at most 20,000 files, so the devices are spread over several load
generator processes (tools/bench/fleetgen.py), each with its own source address in
127.0.0.0/8, all pinned to the load generator's CPU.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import selectors
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from hub.endpoints import Endpoints, ReadyLineError
from tools.bench.brokers import BenchError, Broker

SCENARIOS = ("restart", "fleet19k")
Row = tuple[str, float | None, float | None, str, str, str]


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--storm-fleet", type=int, default=10_000, help="restart: devices (10000)")
    p.add_argument("--storm-warmup", type=float, default=15.0, help="restart: s before kill")
    p.add_argument("--big-fleet", type=int, default=19_000, help="fleet19k: devices (19000)")
    p.add_argument("--big-fleet-seconds", type=float, default=60.0, help="fleet19k: s (60)")
    p.add_argument("--per-worker", type=int, default=5_000, help="devices per load generator")
    p.add_argument("--storm-limit", type=float, default=300.0, help="restart: s to wait (300)")
    p.add_argument("--storm-period", type=float, default=10.0, help="s between readings (10)")


def devices_needed(args: argparse.Namespace) -> int:
    wanted = set(args.only or SCENARIOS)
    need = 0
    if "restart" in wanted:
        need = args.storm_fleet
    if "fleet19k" in wanted:
        need = max(need, args.big_fleet)
    return need


class Workers:
    """Load generator processes (tools/bench/fleetgen.py), one JSON line each way."""

    def __init__(
        self,
        broker: Broker,
        base: dict[str, Any],
        devices: list[list[str]],
        lg: set[int] | None,
        per_worker: int,
        browser: bool = False,
        **spec: Any,
    ) -> None:
        count = max(1, math.ceil(len(devices) / per_worker))
        # The browser in a worker of its own (the last), so its readings are timed on a loop
        # that is not also running thousands of devices.
        total = count + 1 if browser else count
        env = dict(os.environ)
        if lg:
            env["BENCH_LOADGEN_CPUS"] = ",".join(str(c) for c in sorted(lg))
        self.procs: list[subprocess.Popen[bytes]] = []
        self._selector = selectors.DefaultSelector()
        self._buffers: dict[int, bytes] = {}
        for k in range(total):
            proc = subprocess.Popen(
                [sys.executable, "-m", "tools.bench.fleetgen"],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                env=env,
            )
            assert proc.stdin is not None and proc.stdout is not None
            part = devices[k::count] if k < count else []
            worker_spec = {
                **spec,
                "host": broker.host,
                "port": broker.port,
                "ws_url": broker.ws_url,
                "token": base.get("token"),
                "anonymous": base.get("anonymous", False),
                "devices": part,
                "source": f"127.0.1.{k + 1}",  # each worker its own source address
                "browser": k == count,
            }
            proc.stdin.write(json.dumps(worker_spec).encode() + b"\n")
            proc.stdin.flush()
            self._selector.register(proc.stdout, selectors.EVENT_READ, k)
            self.procs.append(proc)

    def command(self, **command: Any) -> None:
        for proc in self.procs:
            assert proc.stdin is not None
            proc.stdin.write(json.dumps(command).encode() + b"\n")
            proc.stdin.flush()

    def collect_after(self, command: str, key: str, timeout: float) -> list[dict[str, Any]]:
        self.command(cmd=command)
        return self.collect(key, timeout)

    def collect(self, key: str, timeout: float) -> list[dict[str, Any]]:
        """One answer with ``key`` from every worker, in worker order."""
        got: dict[int, dict[str, Any]] = {}
        deadline = time.monotonic() + timeout
        while len(got) < len(self.procs):
            left = deadline - time.monotonic()
            if left <= 0:
                raise BenchError(f"load generators: no {key!r} within {timeout:.0f} s")
            for selected, _ in self._selector.select(min(left, 1.0)):
                k = selected.data
                chunk = os.read(selected.fd, 1 << 20)
                if not chunk:
                    self._selector.unregister(selected.fileobj)
                    if k not in got:
                        code = self.procs[k].wait()
                        raise BenchError(f"load generator {k} exited ({code}) without {key!r}")
                    continue
                self._buffers[k] = self._buffers.get(k, b"") + chunk
                while b"\n" in self._buffers[k]:
                    line, self._buffers[k] = self._buffers[k].split(b"\n", 1)
                    message = json.loads(line)
                    if key in message or message.get("mark") == key:
                        got[k] = message
        return [got[k] for k in range(len(self.procs))]

    def close(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
        self._selector.close()


def _percentiles(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"p50_ms": None, "p99_ms": None, "max_ms": None}
    ordered = sorted(values)

    def at(q: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000, 3)

    return {"p50_ms": at(0.5), "p99_ms": at(0.99), "max_ms": round(ordered[-1] * 1000, 3)}


def _at(ordered: list[float], q: float) -> float | None:
    """The q-quantile of sorted values (None for none), rounded to ms."""
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 3) if ordered else None


def _option(args: list[str], flag: str) -> str | None:
    return args[args.index(flag) + 1] if flag in args else None


def _listening(host: str, port: int, proc: subprocess.Popen[str], limit: float = 10.0) -> None:
    """Returns once something accepts on host:port (polled every 5 ms)."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise BenchError(f"the broker exited with {proc.returncode} at restart")
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.005)
    proc.kill()
    raise BenchError(f"the broker did not listen again on {host}:{port}")


def relaunch(broker: Broker, cwd: str | None = None) -> None:
    """Starts a killed broker again with its own command line, port, data and working
    directory (``--hub-src``); returns once it listens (the hub: its ready line)."""
    args = [str(a) for a in broker.proc.args]  # type: ignore[union-attr]
    cpus = broker.cpus
    pin = (lambda: os.sched_setaffinity(0, cpus)) if cpus else None
    if broker.name == "hub":
        args[args.index("--mqtt-port") + 1] = str(broker.port)
        data = Path(_option(args, "--data-dir") or "data")
        with (data.parent / "hub.log").open("a") as log:
            proc = subprocess.Popen(
                args, stdout=subprocess.PIPE, stderr=log, text=True, preexec_fn=pin, cwd=cwd
            )
        assert proc.stdout is not None
        line = proc.stdout.readline().strip()
        try:
            ends = Endpoints.parse(line)
        except ReadyLineError:
            ends = None
        if ends is None or ends.mqtt[1] != broker.port:
            proc.kill()
            raise BenchError(f"the hub did not start again ({line!r})")
        broker.ws_url = f"ws://{ends.ws[0]}:{ends.ws[1]}/mqtt"
    else:
        proc = subprocess.Popen(
            args,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            text=True,
            preexec_fn=pin,
        )
        _listening(broker.host, broker.port, proc)
    broker.proc = proc


def stored_readings(
    broker: Broker, generated: dict[tuple[str, str], tuple[int, list[int]]]
) -> dict[str, int]:
    """The stopped hub's SQLite against what the devices took: readings lost (taken, neither
    stored nor still queued on the device for a PUBACK), duplicated (stored more than once),
    stored, and still queued on the devices when the run ended."""
    args = [str(a) for a in broker.proc.args]  # type: ignore[union-attr]
    data = Path(_option(args, "--data-dir") or "data")
    db = sqlite3.connect(data / "telemetry.sqlite3")
    try:
        rows = db.execute("SELECT device, boot, seq FROM readings").fetchall()
    finally:
        db.close()
    seen: dict[tuple[str, str], set[int]] = {}
    for device, boot, seq in rows:
        seen.setdefault((device, boot), set()).add(seq)
    distinct = sum(len(seqs) for seqs in seen.values())
    lost = unknown = queued = 0
    for key, (taken, pending) in generated.items():
        seqs = seen.pop(key, set())
        waiting = set(pending) - seqs
        queued += len(waiting)
        lost += sum(1 for seq in range(taken) if seq not in seqs and seq not in waiting)
        unknown += sum(1 for seq in seqs if seq >= taken)
    unknown += sum(len(seqs) for seqs in seen.values())  # a device or boot nobody ran
    return {
        "stored": len(rows),
        "lost": lost,
        "duplicated": len(rows) - distinct,
        "queued_on_devices": queued,
        "unknown": unknown,
    }


def restart(
    broker: Broker,
    base: dict[str, Any],
    lg: set[int] | None,
    args: argparse.Namespace,
) -> dict[str, Any]:
    devices = base["devices"][: args.storm_fleet]
    workers = Workers(
        broker, base, devices, lg, args.per_worker, period=args.storm_period, keepalive=60
    )
    try:
        connected = workers.collect_after("connect", "connected", 600)
        workers.command(cmd="publish")
        time.sleep(args.storm_warmup)  # on purpose: the fleet publishes a while first
        cwd = os.readlink(f"/proc/{broker.proc.pid}/cwd")  # --hub-src: the same code again
        killed = time.monotonic()
        broker.proc.kill()
        broker.proc.wait()
        relaunch(broker, cwd)
        ready = time.monotonic()
        workers.command(cmd="watch", since=killed, limit=args.storm_limit)
        recovered = workers.collect("recovered", args.storm_limit + 180)
        workers.command(cmd="stop", drain_s=120)
        results = [m["result"] for m in workers.collect("result", 200)]
    finally:
        workers.close()
    online = [m["online_at"] for m in recovered]
    drained = [m["backlog_at"] for m in recovered]
    # When each device was back, from the moment the broker listened (its ready line).
    back = sorted(x - (ready - killed) for m in recovered for x in m["back_after"])
    causes: dict[str, int] = {}
    for r in results:
        for cause, n in r["causes"].items():
            causes[cause] = causes.get(cause, 0) + n
    cpu_back = [m["cpu_until_back_s"] for m in recovered]
    out: dict[str, Any] = {
        "devices": len(devices),
        "connect_s": max(m["seconds"] for m in connected),
        "down_s": round(ready - killed, 3),
        "online_s": round(max(online) - ready, 3) if None not in online else None,
        "kill_to_online_s": round(max(online) - killed, 3) if None not in online else None,
        "backlog_s": round(max(drained) - ready, 3) if None not in drained else None,
        "backlog": sum(m["backlog"] for m in recovered),
        "back_by_limit": sum(m["back"] for m in recovered),  # online again within the limit
        "drained_by_limit": sum(m["drained"] for m in recovered),
        "sent": sum(r["sent"] for r in results),
        "acked": sum(r["acked"] for r in results),
        "pending": sum(r["pending"] for r in results),
        "resent": sum(r["resent"] for r in results),
        "failed_attempts": sum(r["failed_attempts"] for r in results),
        "failed_by_cause": dict(sorted(causes.items(), key=lambda kv: -kv[1])),
        "online_p50_s": _at(back, 0.5),
        "online_p90_s": _at(back, 0.9),
        "loadgen_cpu_until_back_s": None if None in cpu_back else round(sum(cpu_back), 2),
        "max_failed_attempts": max(r["max_failed_attempts"] for r in results),
        "loadgen_cpu_s": sum(r["cpu_s"] for r in results),
        "workers": len(results),
    }
    broker.stop()
    if broker.name == "hub":
        generated = {(d, b): (n, q) for r in results for d, b, n, q in r["devices"]}
        out.update(stored_readings(broker, generated))
    return out


def fleet19k(
    broker: Broker,
    base: dict[str, Any],
    lg: set[int] | None,
    args: argparse.Namespace,
) -> dict[str, Any]:
    devices = base["devices"][: args.big_fleet]
    broker.repin()
    rss_idle = broker.rss()
    workers = Workers(
        broker,
        base,
        devices,
        lg,
        args.per_worker,
        browser=True,
        period=args.storm_period,
        keepalive=60,
    )
    try:
        connected = workers.collect_after("connect", "connected", 900)
        time.sleep(1.0)  # on purpose: let the broker settle before it is measured
        broker.repin()
        rss_connected = broker.rss()
        cpu0, t0 = broker.cpu(), time.monotonic()
        workers.command(cmd="publish")
        time.sleep(args.big_fleet_seconds)  # on purpose: the measured window
        cpu_pct = 100 * (broker.cpu() - cpu0) / (time.monotonic() - t0)
        rss_done = broker.rss()
        workers.command(cmd="stop", drain_s=30)
        results = [m["result"] for m in workers.collect("result", 120)]
    finally:
        workers.close()
    latencies = [x for r in results for x in r["latencies"]]
    out = {
        "devices": len(devices),
        "workers": len(results) - 1,  # device workers; the browser has one more
        "connect_s": max(m["seconds"] for m in connected),
        "rss_idle": rss_idle,
        "rss_connected": rss_connected,
        "rss_done": rss_done,
        "bytes_per_conn": round((rss_connected - rss_idle) / len(devices)),
        "broker_cpu_pct": round(cpu_pct, 1),
        "sent": sum(r["sent"] for r in results),
        "acked": sum(r["acked"] for r in results),
        "received": sum(r["browser_received"] for r in results),
        "browser_loop_lag_ms": results[-1]["loop_lag_ms"],  # the browser's worker
        "browser_ping_rtt_ms": results[-1]["ping_rtt_ms"],  # through the broker's loop
        "device_loop_lag_ms": [r["loop_lag_ms"] for r in results[:-1]],
        "loadgen_cpu_s": sum(r["cpu_s"] for r in results),
        **_percentiles(latencies),
    }
    broker.stop()
    return out


def run(
    scenario: str,
    broker: Broker,
    base: dict[str, Any],
    lg: set[int] | None,
    args: argparse.Namespace,
) -> dict[str, Any]:
    """One of SCENARIOS against a freshly started broker, which it stops."""
    try:
        return (restart if scenario == "restart" else fleet19k)(broker, base, lg, args)
    except (BenchError, OSError) as exc:  # the other broker's run and the rest still count
        print(f"bench: {scenario} on {broker.name} failed: {exc}", file=sys.stderr, flush=True)
        return {"error": str(exc)}
    finally:
        broker.stop()


# --- the table's rows ------------------------------------------------------------------------
def _get(results: dict[str, Any], broker: str, *path: str | int) -> Any:
    node: Any = results.get(broker)
    for key in path:
        if isinstance(key, int):
            node = node[key] if isinstance(node, list) and len(node) > key else None
        else:
            node = node.get(key) if isinstance(node, dict) else None
        if node is None:
            return None
    return node


def rows(r: dict[str, Any]) -> list[Row]:
    out: list[Row] = []

    def add(
        name: str, path: tuple[str | int, ...], unit: str, target: str = "", scale: float = 1.0
    ) -> None:
        h, m = _get(r, "hub", *path), _get(r, "mosquitto", *path)
        out.append(
            (
                name,
                None if h is None else h * scale,
                None if m is None else m * scale,
                unit,
                target,
                "",
            )
        )

    for kind, label in (("first_batches", "first"), ("batches", "second")):
        n = _get(r, "hub", "connections", kind, 1, "connected")
        if n:
            # Mosquitto keeps no per-device state: its one connect run is both.
            h = _get(r, "hub", "connections", kind, 1, "seconds")
            m = _get(r, "mosquitto", "connections", "batches", 1, "seconds")
            out.append((f"{label} CONNECT of {n:,} devices (s)", h, m, "s", "<= 2x", ""))
    n = _get(r, "hub", "restart", "devices") or _get(r, "mosquitto", "restart", "devices")
    if n:
        add(f"restart, {n:,} devices: kill -> listening", ("restart", "down_s"), "s")
        add("restart: listening -> 50 % online", ("restart", "online_p50_s"), "s")
        add("restart: listening -> 90 % online", ("restart", "online_p90_s"), "s")
        add("restart: listening -> all online", ("restart", "online_s"), "s", "<= 5 s")
        add("restart: listening -> backlog stored/acked", ("restart", "backlog_s"), "s")
        add("restart: backlog (readings queued)", ("restart", "backlog"), "")
        add("restart: online again within the limit", ("restart", "back_by_limit"), "")
        add("restart: readings lost", ("restart", "lost"), "", "0")
        add("restart: readings duplicated in storage", ("restart", "duplicated"), "", "0")
        add("restart: readings still queued on devices", ("restart", "queued_on_devices"), "")
        add("restart: readings resent (DUP)", ("restart", "resent"), "")
        add("restart: failed connect attempts", ("restart", "failed_attempts"), "")
        add(
            "restart: load generator CPU until all back",
            ("restart", "loadgen_cpu_until_back_s"),
            "s",
        )
    n = _get(r, "hub", "fleet19k", "devices") or _get(r, "mosquitto", "fleet19k", "devices")
    if n:
        add(
            f"fleet {n:,} devices: RSS per conn",
            ("fleet19k", "bytes_per_conn"),
            "KB",
            scale=1 / 1024,
        )
        add(f"fleet {n:,}: p50 dev -> browser", ("fleet19k", "p50_ms"), "ms")
        add(f"fleet {n:,}: p99 dev -> browser", ("fleet19k", "p99_ms"), "ms", "< 50 ms")
        add(f"fleet {n:,}: broker CPU", ("fleet19k", "broker_cpu_pct"), "%")
        add(f"fleet {n:,}: readings sent", ("fleet19k", "sent"), "")
        add(f"fleet {n:,}: delivered to browser", ("fleet19k", "received"), "")
        add(f"fleet {n:,}: connect+subscribe all (s)", ("fleet19k", "connect_s"), "s")
    return out
