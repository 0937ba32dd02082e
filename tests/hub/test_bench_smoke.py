"""The side-by-side bench harness (tools/bench) runs end to end with tiny counts."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tools.bench.brokers import MOSQUITTO

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.skipif(not Path(MOSQUITTO).exists(), reason="Debian's mosquitto is not installed")
@pytest.mark.timeout(300)
def test_bench_runs_every_scenario_against_both_brokers(tmp_path: Path) -> None:
    """Every scenario runs against the hub and Mosquitto and lands in the JSON and the table;
    only the structure is checked, never a figure."""
    out = tmp_path / "bench.json"
    # The shortest windows the harness takes: its fixed pauses (warm-up, drain, settle) are
    # most of the run, and only the structure of what it reports is checked.
    args = ["--seconds", "0.5", "--fanout", "3", "--rate", "50", "--connections", "5,5"]
    args += ["--fleet", "10", "--period", "1", "--fleet-seconds", "1", "--no-pin"]
    args += ["--cache", str(tmp_path / "cache"), "--json", str(out)]
    run = subprocess.run(
        [sys.executable, "-m", "tools.bench", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=280,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert "hub/mosq" in run.stdout and "QoS 1 throughput" in run.stdout
    results = json.loads(out.read_text())
    assert set(results["machine"]) >= {"cpus", "pinned", "fd_limit"}
    for broker in ("hub", "mosquitto"):
        r = results[broker]
        for scenario in ("qos0", "qos1", "fanout"):
            assert {"delivered_per_s", "published_per_s", "loadgen_cpu_pct"} <= set(r[scenario])
        for net in ("tcp", "ws"):
            assert {"received", "p50_ms", "p99_ms"} <= set(r["latency"][net])
        batches = r["connections"]["batches"]
        assert [b["connected"] for b in batches] == [5, 10]
        assert all({"seconds", "rss", "bytes_per_conn"} <= set(b) for b in batches)
        assert {"devices", "sent", "received", "p99_ms", "broker_cpu_pct"} <= set(r["fleet"])
        assert r["fleet"]["devices"] == 10
    assert isinstance(results["hub"]["fleet"]["stored"], int)
    assert "first_batches" in results["hub"]["connections"]
