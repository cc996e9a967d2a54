"""Stage batch durations as Prometheus histogram buckets."""

from __future__ import annotations

import pytest

from pipeline.agents.batch_times import BUCKETS_S, BatchTimes


def test_each_batch_lands_in_the_first_bucket_at_or_above_it() -> None:
    times = BatchTimes()
    for seconds in (0.0005, 0.001, 0.02, 0.02, 30.0):
        times.observe("evaluate", seconds)
    stage = times.stages["evaluate"]
    cumulative = dict(stage.cumulative())
    assert cumulative["0.001"] == 2  # an upper bound includes its own value
    assert cumulative["0.01"] == 2
    assert cumulative["0.025"] == 4
    assert cumulative[str(BUCKETS_S[-1])] == 4
    assert cumulative["+Inf"] == 5 == stage.count
    assert stage.sum_s == pytest.approx(30.0415)


def test_a_block_that_raises_is_timed_too() -> None:
    times = BatchTimes()
    with pytest.raises(RuntimeError), times.timed("notify"):
        raise RuntimeError("boom")
    with times.timed("normalize"):
        pass
    assert times.stages["notify"].count == 1
    assert times.stages["normalize"].count == 1
    assert set(times.stages) == {"notify", "normalize"}
