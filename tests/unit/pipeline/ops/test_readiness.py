"""Readiness from checks and from consumer lag."""

from __future__ import annotations

from pipeline.ops.cluster import GroupStatus, PartitionLag
from pipeline.ops.readiness import evaluate, lag_checks


def test_ready_only_when_every_check_passes() -> None:
    assert evaluate({}) == (False, {})
    ready, checks = evaluate({"assigned": True, "recovered": {"ok": True, "detail": "done"}})
    assert ready and checks["recovered"] == {"ok": True, "detail": "done"}
    ready, checks = evaluate({"assigned": True, "channels": {"ok": False, "detail": "none"}})
    assert not ready and checks["channels"]["detail"] == "none"


def test_lag_checks_per_stage_with_a_bound() -> None:
    groups = [
        GroupStatus("normalize", "g-n", [], [PartitionLag("raw", 0, 100, 95, 5)]),
        GroupStatus("evaluate", "g-e", [], [PartitionLag("m", 0, 40, None, None)]),
        GroupStatus("notify", "g", [], [PartitionLag("alerts", 0, 0, None, None)]),
    ]
    checks = lag_checks(groups, max_lag=10)
    assert checks["caught_up:normalize"]["ok"] and checks["caught_up:normalize"]["lag"] == 5
    # No commit yet on a partition with data: all of it is lag.
    assert not checks["caught_up:evaluate"]["ok"]
    assert checks["caught_up:evaluate"]["detail"] == "lag=40 max=10 no commit yet on m:0"
    assert checks["caught_up:notify"]["ok"]  # an empty topic needs no commit
    assert lag_checks(None, 10)["caught_up"]["ok"] is False
