"""Readiness from checks and from consumer lag."""

from __future__ import annotations

from pipeline.ops.cluster import GroupStatus, PartitionLag
from pipeline.ops.readiness import evaluate, lag_checks, worker_checks


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


def _facts(*, assigned: bool, recovered: bool) -> dict[str, object]:
    """The shape of ``WorkerParts.readiness()``."""
    return {
        "ready": assigned and recovered,
        "normalize": {"assigned": assigned, "caught_up": False},
        "evaluate": {"partitions": [0, 1], "recovered": recovered, "caught_up": [0]},
        "notify": {"active": True, "recovered": recovered, "pending": 0},
    }


def test_worker_facts_become_checks_that_name_what_is_missing() -> None:
    checks = worker_checks(_facts(assigned=True, recovered=False), {"console": object()})
    ready, evaluated = evaluate(checks)
    assert not ready
    assert evaluated["recovered"]["ok"] is False
    assert "recovery not finished" in str(evaluated["recovered"]["detail"])
    assert evaluated["assigned"]["ok"] is True
    assert "evaluate partitions=[0, 1]" in str(evaluated["assigned"]["detail"])


def test_worker_facts_ready_when_assigned_recovered_and_channels_loaded() -> None:
    ready, _ = evaluate(worker_checks(_facts(assigned=True, recovered=True), {"c": 1}))
    assert ready
    not_assigned, checks = evaluate(worker_checks(_facts(assigned=False, recovered=True), {"c": 1}))
    assert not not_assigned and checks["assigned"]["ok"] is False
    no_channels, checks = evaluate(worker_checks(_facts(assigned=True, recovered=True), {}))
    assert not no_channels and checks["channels"]["detail"] == "no channel loaded"
