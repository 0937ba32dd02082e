"""`python -m tools.bench_console` (`make bench-console`): the console in Chromium under load.

For each fleet size: a hub on a fresh copy of the bench's provisioned registry
(tools/bench/provision.py), a load generator process (tools/bench/loadgen.py, scenario
"fleet": N raw MQTT devices publishing ``--rate`` readings/s in all) and a headless Chromium
(Playwright, /usr/bin/chromium) logged in to the console. It prints the time to the first row
of the fleet list, the page's main-thread lag while the load runs (a setTimeout probe every
50 ms: how late each tick ran; and the Long Tasks API's longest task) and the page's JS heap
(CDP Performance.getMetrics). Measurements, not pass/fail; targets: first row under 2 s, p95
lag under 100 ms at 10,000 devices. Past ~19,000 sockets the load generator needs several
processes: not done here.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, cast

from hub.endpoints import Endpoints, ReadyLineError
from tools.bench import provision
from tools.bench.brokers import Broker, fresh_data_dir
from tools.bench.run import drive, raise_fd_limit

CHROMIUM = "/usr/bin/chromium"
ADMIN, PASSWORD = "bench-admin", "bench-console-password-1"
PROBE_MS = 50
# Runs in the page before its scripts: the first row's time and a lag probe.
PROBE_SCRIPT = """
window.__bench = {firstRow: null, lags: [], longTasks: []};
new MutationObserver((_, observer) => {
  if (document.querySelector("#fleet li")) {
    window.__bench.firstRow = performance.now();
    observer.disconnect();
  }
}).observe(document, {childList: true, subtree: true});
(function tick(expected) {
  setTimeout(() => {
    const now = performance.now();
    window.__bench.lags.push(Math.max(0, now - expected));
    tick(now + PROBE_MS);
  }, PROBE_MS);
})(performance.now() + PROBE_MS);
try {
  new PerformanceObserver((list) => {
    for (const entry of list.getEntries()) {
      window.__bench.longTasks.push([entry.startTime, entry.duration]);
    }
  }).observe({entryTypes: ["longtask"]});
} catch (err) { /* no Long Tasks API */ }
""".replace("PROBE_MS", str(PROBE_MS))
# Read once the run is over: the page's start as the browser timed it (Navigation and Resource
# Timing, with the hub's Server-Timing, and the marks the console sets: common.js hub.mark).
TIMING_SCRIPT = """() => {
  const timing = (e) => ({
    name: e.name, type: e.initiatorType || "navigation", start: e.startTime,
    requestStart: e.requestStart, responseStart: e.responseStart, responseEnd: e.responseEnd,
    domInteractive: e.domInteractive, size: e.encodedBodySize, transfer: e.transferSize,
    server: Object.fromEntries((e.serverTiming || []).map((t) => [t.name, t.duration])),
  });
  return {
    navigation: performance.getEntriesByType("navigation").map(timing)[0] || null,
    resources: performance.getEntriesByType("resource").map(timing),
    marks: Object.fromEntries(
      performance.getEntriesByType("mark").map((m) => [m.name, m.startTime])),
  };
}"""
# What the first row's time is made of, each figure in ms from the navigation's start (the
# page's performance.now()); "in hub" is the hub's Server-Timing (guard and handler), "queued"
# the rest of the time from the request's start to its first byte (waiting for the hub's event
# loop, or behind other requests on the browser's six connections).
BREAKDOWN = (
    ("  page HTML: first byte", "html_first_byte_ms", "ms"),
    ("  scripts parsed and run (DOM interactive)", "dom_interactive_ms", "ms"),
    ("  /api/fleet: sent", "fleet_sent_ms", "ms"),
    ("  /api/fleet: queued before the handler", "fleet_queued_ms", "ms"),
    ("  /api/fleet: in the hub", "fleet_server_ms", "ms"),
    ("  /api/fleet:   registry and states", "fleet_registry_ms", "ms"),
    ("  /api/fleet:   filter, sort, page", "fleet_rows_ms", "ms"),
    ("  /api/fleet: answer parsed", "fleet_answer_ms", "ms"),
    ("  rows rendered", "fleet_rendered_ms", "ms"),
    ("  /api/session + /api/hub answered", "session_ms", "ms"),
    ("  MQTT connected", "mqtt_connected_ms", "ms"),
    ("  MQTT subscriptions granted", "mqtt_subscribed_ms", "ms"),
    ("  slowest other request: in hub / queued", "slowest_request", ""),
)


class Hub:
    """The hub on a fresh data dir holding a copy of the provisioned registry."""

    def __init__(self, registry: Path, work: Path) -> None:
        data = fresh_data_dir(registry, work)
        add = subprocess.run(
            [
                sys.executable,
                "-m",
                "hub",
                "user",
                "add",
                ADMIN,
                "--role",
                "admin",
                "--password-stdin",
                "--data-dir",
                str(data),
            ],
            input=PASSWORD + "\n",
            capture_output=True,
            text=True,
            timeout=60,
        )
        if add.returncode != 0:
            raise SystemExit(f"bench-console: could not add the console account: {add.stderr}")
        ports = ["--mqtt-port", "0", "--ws-port", "0", "--mqtts-port", "0", "--wss-port", "0"]
        cmd = [sys.executable, "-m", "hub", "serve", "--host", "127.0.0.1", *ports]
        cmd += ["--data-dir", str(data)]
        with (work / "hub.log").open("a") as log:
            self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=log, text=True)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().strip()
        try:
            ends = Endpoints.parse(line)
        except ReadyLineError:
            self.proc.kill()
            raise SystemExit(
                f"bench-console: the hub did not start ({line!r}); see {work}/hub.log"
            ) from None
        self.host, self.port = ends.mqtt
        self.ws_url = f"ws://{ends.ws[0]}:{ends.ws[1]}/mqtt"
        self.http_url = f"http://{ends.http[0]}:{ends.http[1]}"

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 1)


def _ms(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


def breakdown(timing: dict[str, Any]) -> dict[str, Any]:
    """The first row's time taken apart (BREAKDOWN) from the page's timing entries."""
    nav = timing.get("navigation") or {}
    marks = timing.get("marks") or {}
    resources = timing.get("resources") or []

    def first(fragment: str) -> dict[str, Any]:
        return next((r for r in resources if fragment in r["name"]), {})

    def queued(entry: dict[str, Any]) -> float | None:
        if not entry.get("responseStart"):
            return None
        return max(
            0.0, entry["responseStart"] - entry["requestStart"] - entry["server"].get("app", 0)
        )

    fleet = first("/api/fleet")
    apis = [first("/api/session"), first("/api/hub")]
    early = [r for r in resources if r.get("start", 0) < (marks.get("fleet-rendered") or 0)]
    others = [r for r in early if r is not fleet and r.get("responseStart")]
    slowest = max(others, key=lambda r: r["responseEnd"] - r["start"], default=None)
    return {
        "html_first_byte_ms": _ms(nav.get("responseStart")),
        "dom_interactive_ms": _ms(nav.get("domInteractive")),
        "fleet_sent_ms": _ms(fleet.get("start")),
        "fleet_queued_ms": _ms(queued(fleet)),
        "fleet_server_ms": _ms(fleet.get("server", {}).get("app")),
        "fleet_registry_ms": _ms(fleet.get("server", {}).get("registry")),
        "fleet_rows_ms": _ms(fleet.get("server", {}).get("rows")),
        "fleet_answer_ms": _ms(marks.get("fleet-answer")),
        "fleet_rendered_ms": _ms(marks.get("fleet-rendered")),
        "session_ms": _ms(max((a.get("responseEnd") or 0 for a in apis), default=None) or None),
        "mqtt_connected_ms": _ms(marks.get("mqtt-connected")),
        "mqtt_subscribed_ms": _ms(marks.get("mqtt-subscribed")),
        "slowest_request": None
        if slowest is None
        else (
            f"{slowest['name'].split('/', 3)[-1][:24]} "
            f"{slowest['server'].get('app', 0):.0f}/{queued(slowest) or 0:.0f} ms"
        ),
    }


def top_functions(profile: dict[str, Any], count: int = 15) -> list[tuple[float, str]]:
    """A CDP CPU profile's functions by self time (ms), heaviest first."""
    nodes = {n["id"]: n["callFrame"] for n in profile["nodes"]}
    spent: dict[str, float] = {}
    for node, delta in zip(profile["samples"], profile["timeDeltas"], strict=False):
        frame = nodes[node]
        where = frame["url"].rsplit("/", 1)[-1]
        name = f"{frame['functionName'] or '(anonymous)'} {where}:{frame['lineNumber'] + 1}"
        spent[name] = spent.get(name, 0.0) + delta / 1000
    return sorted(((round(ms, 1), name) for name, ms in spent.items()), reverse=True)[:count]


class HubProbe:
    """How long the hub takes to answer a request that needs nothing but its event loop (a
    404 from /vendor/), four times a second: a slow answer means a busy loop, whatever the
    page does."""

    PATH = "/vendor/bench-probe"

    def __init__(self, base_url: str) -> None:
        self.url = base_url + self.PATH
        self.samples: list[tuple[float, float]] = []  # (monotonic start, ms)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        import urllib.error
        import urllib.request

        while not self._stop.wait(0.25):
            started = time.monotonic()
            try:
                urllib.request.urlopen(self.url, timeout=60).read()
            except urllib.error.HTTPError:
                pass  # the expected 404
            except OSError:
                continue
            self.samples.append((started, (time.monotonic() - started) * 1000))

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(70)

    def summary(self, since: float, until: float) -> str | None:
        """p50 / max of the answers started in [since, until) (monotonic)."""
        ms = [v for t, v in self.samples if since <= t < until]
        return None if not ms else f"{percentile(ms, 0.5)} / {max(ms):.0f}"


def open_console(context: Any, hub: Hub, cdp_profile: Path | None = None) -> tuple[Any, Any]:
    """A page of the console, navigated (not waiting for its load event: under load that can
    take longer than the first row) until its first fleet row is there."""
    context.add_init_script(PROBE_SCRIPT)
    page = context.new_page()
    cdp = context.new_cdp_session(page)
    cdp.send("Performance.enable")
    if cdp_profile is not None:
        cdp.send("Profiler.enable")
        cdp.send("Profiler.setSamplingInterval", {"interval": 500})
        cdp.send("Profiler.start")
    page.goto(hub.http_url + "/", wait_until="commit", timeout=120000)
    page.wait_for_selector("#fleet li", timeout=120000)
    return page, cdp


def logged_in_context(browser: Any, hub: Hub) -> Any:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    login = context.request.post(
        f"{hub.http_url}/api/login", data={"name": ADMIN, "password": PASSWORD}
    )
    if not login.ok:
        raise SystemExit(f"bench-console: login refused ({login.status})")
    return context


def cpu_times(pid: int) -> tuple[float, float]:
    """A process's seconds on a CPU and runnable but waiting for one (all its threads; Linux
    /proc/PID/task/*/schedstat). On a shared machine the second tells starvation from work."""
    on, waiting = 0.0, 0.0
    for task in Path(f"/proc/{pid}/task").glob("*/schedstat"):
        try:
            fields = task.read_text().split()
        except OSError:
            continue  # a thread that ended
        on, waiting = on + int(fields[0]) / 1e9, waiting + int(fields[1]) / 1e9
    return on, waiting


def hub_cpu(hub: Hub, since: tuple[float, float]) -> str:
    on, waiting = cpu_times(hub.proc.pid)
    return f"{on - since[0]:.1f} / {waiting - since[1]:.1f}"


def opening(context: Any, hub: Hub, profile: Path | None = None) -> tuple[Any, Any, dict]:
    """Opens the console; the first row's time, taken apart, and the hub's CPU meanwhile."""
    before = cpu_times(hub.proc.pid)
    page, cdp = open_console(context, hub, profile)
    first_row = page.evaluate("window.__bench.firstRow")
    return (
        page,
        cdp,
        {
            "first_row_ms": _ms(first_row),
            "hub_cpu_first_row": hub_cpu(hub, before),
            **breakdown(page.evaluate(TIMING_SCRIPT)),
        },
    )


def measure_page(
    hub: Hub, loaded: threading.Event, seconds: float, profile: Path | None = None
) -> dict[str, Any]:
    """Opens the console once the load runs (right after the devices connected): first row,
    lag while the load runs, heap at the end; then opens it again in a fresh browser context
    (nothing cached) for the first row once the load has run ``seconds`` (under "again")."""
    from playwright.sync_api import sync_playwright  # a test dependency: imported when used

    with sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"]
        )
        try:
            context = logged_in_context(browser, hub)
            if not loaded.wait(900):
                raise SystemExit("bench-console: the load generator did not start")
            probe_hub = HubProbe(hub.http_url)
            opened = time.monotonic()
            page, cdp, first = opening(context, hub, profile)
            steady_cpu = cpu_times(hub.proc.pid)
            page.wait_for_timeout(seconds * 1000)
            first["hub_cpu_steady"] = hub_cpu(hub, steady_cpu)
            later = breakdown(page.evaluate(TIMING_SCRIPT))  # MQTT may come after the rows
            for key in ("mqtt_connected_ms", "mqtt_subscribed_ms"):
                first[key] = later[key]
            probe = page.evaluate("window.__bench")
            if profile is not None:
                taken = cdp.send("Profiler.stop")["profile"]
                profile.write_text(json.dumps(taken))
                print(f"  CPU profile of the page: {profile}", file=sys.stderr)
                for ms, name in top_functions(taken):
                    print(f"  {ms:9.1f} ms  {name}", file=sys.stderr)
            metrics = {
                m["name"]: m["value"] for m in cdp.send("Performance.getMetrics")["metrics"]
            }
            rows = page.locator("#fleet li").count()
            live = page.locator("#link").text_content()
            page.close()
            context.close()
            again_at = time.monotonic()
            _, _, again = opening(logged_in_context(browser, hub), hub)
            probe_hub.stop()
        finally:
            browser.close()
    lags = probe["lags"][int(2000 / PROBE_MS) :]  # after the first 2 s (page start-up)
    tasks = probe["longTasks"]
    steady = [d for start, d in tasks if start > (first["first_row_ms"] or 0) + 2000]
    again["hub_probe"] = probe_hub.summary(again_at, time.monotonic())
    return {
        **first,
        "lag_p50_ms": percentile(lags, 0.50),
        "lag_p95_ms": percentile(lags, 0.95),
        "lag_max_ms": round(max(lags), 1) if lags else None,
        "long_task_max_ms": round(max(d for _, d in tasks), 1) if tasks else 0.0,
        "long_tasks_steady": f"{len(steady)}, max {max(steady, default=0):.0f}",
        "heap_mb": round(metrics.get("JSHeapUsedSize", 0) / 2**20, 1),
        "rows": rows,
        "link": live,
        "hub_probe": probe_hub.summary(opened, opened + 10),
        "hub_probe_steady": probe_hub.summary(opened + 10, again_at),
        "hub_probe_samples": [(round(t - opened, 2), round(ms, 1)) for t, ms in probe_hub.samples],
        "again": again,
    }


def run(
    devices: int, rate: float, seconds: float, work: Path, cache: Path, profile: Path | None
) -> dict[str, Any]:
    registry, creds, _ = provision.registry_dir(devices, cache)
    hub = Hub(registry, work)
    loaded = threading.Event()
    load: dict[str, Any] = {}

    def on_mark(message: dict[str, Any]) -> None:
        if message.get("mark") == "connected":
            loaded.set()

    def generate() -> None:
        spec = {
            "scenario": "fleet",
            "devices": creds,
            "period": devices / rate,
            "seconds": seconds + 60,  # the page is opened a second time after `seconds`
            "token": provision.token(registry),
        }
        try:
            target = cast(Broker, _Target(hub))  # drive() uses only these members
            load.update(drive(target, spec, None, on_mark, timeout=seconds + 900))
        except Exception as exc:  # reported in the table, the page's figures still count
            load["error"] = str(exc)
        loaded.set()

    thread = threading.Thread(target=generate, daemon=True)
    thread.start()
    load_start = round(os.getloadavg()[0], 1)
    try:
        page = measure_page(hub, loaded, seconds, profile)
        thread.join(seconds + 120)
    finally:
        hub.stop()
    return {
        "devices": devices,
        "rate": rate,
        "load_start": load_start,
        "load_end": round(os.getloadavg()[0], 1),
        **page,
        "sent": load.get("sent"),
        "loadgen_cpu_pct": load.get("loadgen_cpu_pct"),
        "load_error": load.get("error"),
    }


class _Target:
    """What tools.bench.run.drive needs of a broker: its address and an idle check."""

    def __init__(self, hub: Hub) -> None:
        self.host, self.port = hub.host, hub.port
        self.ws_url = hub.ws_url
        self._proc = hub.proc

    def cpu(self) -> float:
        import psutil

        times = psutil.Process(self._proc.pid).cpu_times()
        return float(times.user + times.system)


def _cell(value: object) -> str:
    if value is None:
        return "-"
    return f"{value:,}" if isinstance(value, int | float) else str(value)


def table(results: list[dict[str, Any]]) -> str:
    """The figures side by side (like tools/bench/report.py): per fleet size, the console
    opened as the load starts (right after the devices connected) and opened again once it
    has run (a fresh browser context)."""
    measures = [
        ("time to first row", "first_row_ms", "ms", "< 2000 ms"),
        ("main-thread lag p50", "lag_p50_ms", "ms", ""),
        ("main-thread lag p95", "lag_p95_ms", "ms", "< 100 ms at 10,000"),
        ("main-thread lag max", "lag_max_ms", "ms", ""),
        ("longest task", "long_task_max_ms", "ms", ""),
        ("long tasks from 2 s after the first row", "long_tasks_steady", "", ""),
        ("JS heap used", "heap_mb", "MB", ""),
        ("rows rendered", "rows", "", ""),
        ("readings sent", "sent", "", ""),
        ("load generator CPU", "loadgen_cpu_pct", "%", ""),
        ("load average (1 min) at the start", "load_start", "", ""),
        ("load average (1 min) at the end", "load_end", "", ""),
        ("hub: a 404's answer, first 10 s (p50 / max)", "hub_probe", "ms", ""),
        ("hub: a 404's answer, after (p50 / max)", "hub_probe_steady", "ms", ""),
        ("hub CPU till the first row: on / waiting", "hub_cpu_first_row", "s", ""),
        ("hub CPU while measured: on / waiting", "hub_cpu_steady", "s", ""),
        ("where the first row's time goes (ms from navigation start):", "", "", ""),
        *((name, key, unit, "") for name, key, unit in BREAKDOWN),
    ]
    columns: list[tuple[str, dict[str, Any]]] = []
    for r in results:
        columns.append((f"{r['devices']:,} dev", r))
        columns.append((f"{r['devices']:,} again", r.get("again") or {}))
    header = ["measure", *[label for label, _ in columns], "unit", "target"]
    lines = [header]
    for name, key, unit, target in measures:
        values = [_cell(c.get(key)) if key else "" for _, c in columns]
        lines.append([name, *values, unit, target])
    widths = [max(len(str(line[i])) for line in lines) for i in range(len(header))]
    out = ["  ".join(str(c).ljust(w) for c, w in zip(line, widths, strict=True)) for line in lines]
    out.insert(1, "  ".join("-" * w for w in widths))
    out.append(
        '"again": the console opened a second time, in a fresh browser context, once the load '
        "had run (its MQTT figures as they were at its first row: - is not yet); hub CPU: "
        "seconds on a CPU / runnable but waiting for one, all its threads (/proc schedstat)."
    )
    errors = [f"{r['devices']}: {r['load_error']}" for r in results if r.get("load_error")]
    return "\n".join(out + [f"load generator error: {e}" for e in errors])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench-console", description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--rate", type=float, default=1000.0, help="readings/s in all")
    parser.add_argument("--seconds", type=float, default=30.0, help="measured load per size")
    parser.add_argument("--work", type=Path, default=Path("build/bench-console"))
    parser.add_argument(
        "--cache",
        type=Path,
        default=provision.CACHE,
        help="the provisioned registry, shared with make bench",
    )
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument(
        "--cpu-profile",
        type=Path,
        metavar="DIR",
        help="record the page's CPU profile (CDP Profiler) into DIR/console-N.cpuprofile "
        "and print its heaviest functions",
    )
    args = parser.parse_args(argv)
    if not Path(CHROMIUM).exists():
        parser.error(f"{CHROMIUM} is missing: run tools/bootstrap.sh")
    raise_fd_limit()
    args.work.mkdir(parents=True, exist_ok=True)
    results = []
    for n in args.devices:
        print(
            f"bench-console: {n:,} devices, {args.rate:.0f} readings/s, {args.seconds:.0f} s…",
            file=sys.stderr,
            flush=True,
        )
        started = time.monotonic()
        profile = None
        if args.cpu_profile is not None:
            args.cpu_profile.mkdir(parents=True, exist_ok=True)
            profile = args.cpu_profile / f"console-{n}.cpuprofile"
        results.append(run(n, args.rate, args.seconds, args.work, args.cache, profile))
        print(f"  done in {time.monotonic() - started:.0f} s", file=sys.stderr, flush=True)
    print(table(results))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
