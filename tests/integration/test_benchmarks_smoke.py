"""The benchmark command works (figures are not judged here: benchmarks are never timed tests)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


def test_quick_benchmark_prints_every_scenario_as_json() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "run.py"), "--quick"],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    records = [json.loads(line) for line in result.stdout.splitlines() if line.strip()]
    by_name = {r["scenario"]: r for r in records}
    assert by_name["baseline_aiokafka_loop"]["events_per_s"] > 0
    pipeline = by_name["full_pipeline"]
    assert pipeline["events_per_s"] > 0
    assert pipeline["ratio_to_baseline"] == pytest.approx(
        pipeline["events_per_s"] / by_name["baseline_aiokafka_loop"]["events_per_s"], rel=0.01
    )
    assert pipeline["cpu_s_per_1000"] > 0
    assert pipeline["rss_mb"] > 0
    for name in ("alert_latency_half_max", "alert_latency_500_per_s", "alert_latency_1000_per_s"):
        latency = by_name[name]
        assert latency["notifications"] > 0
        assert 0 <= latency["p50_ms"] <= latency["p99_ms"] <= latency["max_ms"]
    for n in (10, 100, 1000):
        engine = by_name[f"rule_engine_{n}_rules"]
        assert engine["rules"] == n
        assert engine["events_per_s"] > 0
    state = by_name["state_size"]
    assert state["state_entries"] == state["entities"] * state["metrics"] > 0
    assert state["timers"] == state["state_entries"]  # every window is open and timed
    assert state["rss_mb"] > state["rss_before_mb"] > 0
    burst = by_name["notification_burst"]
    assert burst["notifications"] == 1000
    assert burst["notifications_per_s"] > 0 and burst["cpu_ms_per_notification"] > 0
    recovery = by_name["takeover_recovery"]
    assert recovery["records_read"] == recovery["keys"] == 10_000
    assert recovery["changelog_read_s"] > 0 and recovery["assigned_to_serving_s"] > 0
