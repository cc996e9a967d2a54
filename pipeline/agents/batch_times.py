"""How long each stage takes per batch, kept as histogram buckets for ``/metrics``.

The stages time the work of one batch (decode, the pure stage function, the emits it awaits)
and add it here; :class:`~pipeline.ops.metrics.WorkerCollector` exports it as the histogram
``streamwarden_stage_batch_seconds{stage}``. Counting into fixed buckets costs a bisect and
three additions per batch, so it stays on even at thousands of batches a second, and it
needs no metrics library in the stage code (the agents never import :mod:`pipeline.ops`).
"""

from __future__ import annotations

import bisect
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

__all__ = ["BUCKETS_S", "BatchTimes", "StageTimes"]

BUCKETS_S: tuple[float, ...] = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)
"""Upper bounds of the buckets, seconds (``+Inf`` is implied)."""


@dataclass
class StageTimes:
    """One stage's batches: per-bucket counts (not cumulative), their sum and count."""

    buckets: list[int] = field(default_factory=lambda: [0] * (len(BUCKETS_S) + 1))
    sum_s: float = 0.0
    count: int = 0

    def observe(self, seconds: float) -> None:
        self.buckets[bisect.bisect_left(BUCKETS_S, seconds)] += 1
        self.sum_s += seconds
        self.count += 1

    def cumulative(self) -> list[tuple[str, int]]:
        """``(upper bound, batches at or below it)`` as Prometheus histograms carry them."""
        out: list[tuple[str, int]] = []
        running = 0
        for bound, count in zip((*map(str, BUCKETS_S), "+Inf"), self.buckets, strict=True):
            running += count
            out.append((bound, running))
        return out


class BatchTimes:
    """Batch durations of every stage of one worker, by stage name."""

    def __init__(self) -> None:
        self.stages: dict[str, StageTimes] = {}

    def observe(self, stage: str, seconds: float) -> None:
        times = self.stages.get(stage)
        if times is None:
            times = self.stages[stage] = StageTimes()
        times.observe(seconds)

    @contextmanager
    def timed(self, stage: str) -> Iterator[None]:
        """Time the block as one batch of ``stage`` (also when it raises)."""
        started = time.perf_counter()
        try:
            yield
        finally:
            self.observe(stage, time.perf_counter() - started)
