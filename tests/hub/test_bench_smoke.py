"""The side-by-side bench harness (tools/bench) runs end to end with tiny counts."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tools.bench.brokers import MOSQUITTO
from tools.bench.run import median_of

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.skipif(not Path(MOSQUITTO).exists(), reason="Debian's mosquitto is not installed")
@pytest.mark.timeout(480)
def test_bench_runs_every_scenario_against_both_brokers(tmp_path: Path) -> None:
    """Every scenario runs against the hub and Mosquitto and lands in the JSON and the table;
    only the structure is checked, never a figure."""
    out = tmp_path / "bench.json"
    # The shortest windows the harness takes: its fixed pauses (warm-up, drain, settle) are
    # most of the run, and only the structure of what it reports is checked.
    args = ["--seconds", "0.5", "--fanout", "3", "--rate", "50", "--connections", "5,5"]
    args += ["--fleet", "10", "--period", "1", "--fleet-seconds", "1", "--no-pin"]
    args += ["--stored", "200", "--killed", "50"]
    args += ["--route-messages", "100"]
    args += ["--storm-fleet", "6", "--storm-warmup", "1.5", "--storm-period", "0.5"]
    args += ["--big-fleet", "6", "--big-fleet-seconds", "1", "--per-worker", "3"]
    args += ["--cache", str(tmp_path / "cache"), "--json", str(out)]
    run = subprocess.run(
        [sys.executable, "-m", "tools.bench", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=460,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert "hub/mosq" in run.stdout and "QoS 1 throughput" in run.stdout
    results = json.loads(out.read_text())
    assert set(results["machine"]) >= {"cpus", "pinned", "fd_limit"}
    for broker in ("hub", "mosquitto"):
        r = results[broker]
        for scenario in ("qos0", "qos1", "fanout"):
            assert {"delivered_per_s", "published_per_s", "loadgen_cpu_pct"} <= set(r[scenario])
        for scenario in ("qos0", "qos1"):  # the median of three runs, each one's figures kept
            assert len(r[scenario]["runs"]) == 3
            assert r[scenario]["delivered_per_s"] == sorted(r[scenario]["runs"])[1]
            assert "broker_cpu_us_per_msg" in r[scenario]
        for net in ("tcp", "ws"):
            assert {"received", "p50_ms", "p99_ms"} <= set(r["latency"][net])
        batches = r["connections"]["batches"]
        assert [b["connected"] for b in batches] == [5, 10]
        assert all({"seconds", "rss", "bytes_per_conn"} <= set(b) for b in batches)
        assert {"devices", "sent", "received", "p99_ms", "broker_cpu_pct"} <= set(r["fleet"])
        assert r["fleet"]["devices"] == 10
        durable = r["durable"]
        assert {"qos1_clean", "qos1_persistent", "offline", "restart_s"} <= set(durable)
        assert durable["after_restart"]["delivered"] >= 200  # persistence true, a clean stop
        restart = r["restart"]
        assert restart["devices"] == 6 and restart["workers"] == 2
        assert {"down_s", "online_s", "backlog_s", "backlog", "resent"} <= set(restart)
        assert {"online_p50_s", "online_p90_s", "failed_by_cause"} <= set(restart)
        assert sum(restart["failed_by_cause"].values()) >= restart["failed_attempts"]
        big = r["fleet19k"]
        assert big["devices"] == 6 and big["workers"] == 2
        assert {"bytes_per_conn", "p99_ms", "broker_cpu_pct", "received"} <= set(big)
        # The browser's own worker: its loop's lag and its pings through the broker.
        assert {"p50", "p99", "max"} <= set(big["browser_loop_lag_ms"])
        assert {"p50", "p99", "max"} <= set(big["browser_ping_rtt_ms"])
    assert isinstance(results["hub"]["fleet"]["stored"], int)
    # Correctness, not a figure: a hub killed mid-publish loses and duplicates no reading.
    assert results["hub"]["restart"]["lost"] == 0
    assert results["hub"]["restart"]["duplicated"] == 0
    assert results["hub"]["restart"]["stored"] >= results["hub"]["restart"]["backlog"] > 0
    assert "restart: listening -> all online" in run.stdout
    assert "first_batches" in results["hub"]["connections"]
    assert {"delivered_per_s", "lost", "published"} <= set(results["hub"]["routes"])
    assert "routes" not in results["mosquitto"]


def test_the_median_run_is_reported_with_every_run_beside_it() -> None:
    """median_of picks the run with the middle msg/s (the lower middle of an even count) and
    keeps every run's msg/s and CPU per message, in the order they ran."""
    runs = [
        {"delivered_per_s": 300.0, "broker_cpu_us_per_msg": 10.0, "seconds": 1},
        {"delivered_per_s": 100.0, "broker_cpu_us_per_msg": 30.0, "seconds": 2},
        {"delivered_per_s": 200.0, "broker_cpu_us_per_msg": 20.0, "seconds": 3},
    ]
    median = median_of(runs)
    assert median["delivered_per_s"] == 200.0 and median["seconds"] == 3
    assert median["runs"] == [300.0, 100.0, 200.0]
    assert median["runs_cpu_us_per_msg"] == [10.0, 30.0, 20.0]
    assert median_of(runs[:2])["delivered_per_s"] == 100.0
