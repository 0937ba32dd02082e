"""The side-by-side table of a bench run (the JSON's figures, one row per measure)."""

from __future__ import annotations

from typing import Any

from tools.bench import storm
from tools.bench.durable import rows as durable_rows

Row = tuple[str, float | None, float | None, str, str, str]  # name, hub, mosq, unit, target, lg


def _get(results: dict[str, Any], broker: str, *path: str | int) -> Any:
    node: Any = results.get(broker)
    for key in path:
        if node is None:
            return None
        if isinstance(key, int):
            node = node[key] if isinstance(node, list) and len(node) > key else None
        else:
            node = node.get(key) if isinstance(node, dict) else None
    return node


def _lg(results: dict[str, Any], *path: str | int) -> str:
    h = _get(results, "hub", *path)
    m = _get(results, "mosquitto", *path)
    if h is None and m is None:
        return ""
    return f"{_fmt(h, 0)}/{_fmt(m, 0)}"


def _fmt(value: float | None, digits: int = 1) -> str:
    if value is None:
        return "-"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:.{digits}f}"


def rows(r: dict[str, Any]) -> list[Row]:
    out: list[Row] = []

    def add(
        name: str,
        path: tuple[str | int, ...],
        unit: str,
        target: str = "",
        scale: float = 1.0,
        lg: tuple[str | int, ...] | None = None,
    ) -> None:
        h, m = _get(r, "hub", *path), _get(r, "mosquitto", *path)
        out.append(
            (
                name,
                None if h is None else h * scale,
                None if m is None else m * scale,
                unit,
                target,
                _lg(r, *lg) if lg else "",
            )
        )

    for qos in (0, 1):
        runs = _get(r, "hub", f"qos{qos}", "runs") or _get(r, "mosquitto", f"qos{qos}", "runs")
        how = f" (median of {len(runs)})" if runs and len(runs) > 1 else ""
        add(
            f"QoS {qos} throughput, 10 -> 1{how}",
            (f"qos{qos}", "delivered_per_s"),
            "msg/s",
            ">= 0.5x",
            lg=(f"qos{qos}", "loadgen_cpu_pct"),
        )
        add(f"  QoS {qos} broker CPU per message", (f"qos{qos}", "broker_cpu_us_per_msg"), "us")
    add(
        "fan-out 1 -> 50",
        ("fanout", "delivered_per_s"),
        "deliv/s",
        ">= 0.5x",
        lg=("fanout", "loadgen_cpu_pct"),
    )
    rate = _get(r, "hub", "latency", "rate") or _get(r, "mosquitto", "latency", "rate")
    label = f"@ {rate:.0f}/s" if rate else ""
    for net in ("tcp", "ws"):
        for p in ("p50_ms", "p99_ms"):
            add(
                f"latency {p[:3]} QoS1 -> {net} sub {label}",
                ("latency", net, p),
                "ms",
                lg=("latency", "loadgen_cpu_pct"),
            )
    for i in range(2):
        n = _get(r, "hub", "connections", "batches", i, "connected") or _get(
            r, "mosquitto", "connections", "batches", i, "connected"
        )
        if n is None:
            continue
        add(
            f"connect {n:,} idle (s)",
            ("connections", "batches", i, "seconds"),
            "s",
            lg=("connections", "batches", i, "loadgen_cpu_pct"),
        )
        add(
            "  first connect, scrypt check (s)",
            ("connections", "first_batches", i, "seconds"),
            "s",
        )
        add(
            f"RSS per idle conn at {n:,}",
            ("connections", "batches", i, "bytes_per_conn"),
            "KB",
            "<= 5 KB",
            scale=1 / 1024,
        )
    if _get(r, "hub", "routes") is not None:  # hub only (tools/bench/routes.py)
        add("route throughput, webhook", ("routes", "delivered_per_s"), "msg/s", "0 lost")
        add("  route messages lost", ("routes", "lost"), "msgs", "0")
    n = _get(r, "hub", "fleet", "devices") or _get(r, "mosquitto", "fleet", "devices")
    if n:
        add(
            f"fleet {n:,} devices: p50 dev -> browser",
            ("fleet", "p50_ms"),
            "ms",
            lg=("fleet", "loadgen_cpu_pct"),
        )
        add("fleet: p99 dev -> browser", ("fleet", "p99_ms"), "ms", "< 50 ms")
        add("fleet: readings sent", ("fleet", "sent"), "")
        add("fleet: delivered to browser", ("fleet", "received"), "")
        add("fleet: PUBACKs", ("fleet", "acked"), "")
        add("fleet: stored (SQLite)", ("fleet", "stored"), "")
        add("fleet: connect+subscribe all (s)", ("fleet", "connect_and_subscribe_s"), "s")
        add("fleet: broker CPU", ("fleet", "broker_cpu_pct"), "%")
        add("fleet: broker RSS", ("fleet", "rss_done"), "MB", scale=1 / 2**20)
    for name, path, unit in durable_rows():  # tools/bench/durable.py
        add(name, path, unit)
    out += storm.rows(r)  # connection storms and the biggest fleet (tools/bench/storm.py)
    return out


def table(results: dict[str, Any]) -> str:
    header = ("measure", "hub", "mosquitto", "hub/mosq", "unit", "target", "loadgen CPU% h/m")
    lines = [header]
    for name, h, m, unit, target, lg in rows(results):
        ratio = f"{h / m:.3f}x" if h is not None and m else "-"
        lines.append((name, _fmt(h), _fmt(m), ratio, unit, target, lg))
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    text = []
    for k, line in enumerate(lines):
        cells = [line[0].ljust(widths[0])] + [
            c.rjust(w) for c, w in zip(line[1:], widths[1:], strict=False)
        ]
        text.append("  ".join(cells).rstrip())
        if k == 0:
            text.append("-" * len(text[0]))
    m = results.get("machine", {})
    notes = [
        f"{m.get('cpus')} CPUs, Python {m.get('python')}; brokers pinned to CPU 0 and the load "
        f"generator to CPU 1: {m.get('pinned')}",
        "hub (throughput, fan-out, latency): "
        + " ".join(_get(results, "hub", "broker_notes") or ["-"]),
        "hub (connections, fleet): default limits (rate limit 50/s), auth, ACL, storage on",
        "mosquitto: " + "; ".join(_get(results, "mosquitto", "broker_notes") or ["-"]),
    ]
    return "\n".join([*text, "", *notes])
