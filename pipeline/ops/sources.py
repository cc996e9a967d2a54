"""What the ops server reads from a worker: small providers, so that the stages themselves are
not restructured for it (they keep their own objects; the worker hands in callables)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pipeline.agents.batch_times import BatchTimes
from pipeline.rules.state import EngineState

__all__ = ["WorkerSources"]


def _nothing() -> dict[str, dict[str, int]]:
    return {}


def _zero() -> int:
    return 0


def _no_silences() -> list[dict[str, Any]]:
    return []


@dataclass
class WorkerSources:
    """Providers of one worker's live facts.

    Attributes:
        counters: the worker's stage counters (``normalized``, ``deadlettered``,
            ``evaluated``, ``transitions``, ...), read at each scrape.
        readiness: the worker's own readiness checks, by name: a bool, or a mapping with
            ``ok`` and ``detail`` (see :mod:`pipeline.ops.readiness`).
        channel_counters: per channel notification counters (``sent``, ``failed``, ...).
        channels: the configured channel names.
        outbox_depth: notifications waiting to be sent by this worker.
        oldest_undelivered_ms: creation time of the oldest notification not yet delivered, or
            None.
        silences: the silences file's entries as JSON objects.
        local_entries: ``(fingerprint, rule state)`` of the partitions this worker owns.
        batch_times: per stage batch durations (:mod:`pipeline.agents.batch_times`), or None.
    """

    counters: Mapping[str, int]
    readiness: Callable[[], Mapping[str, object]]
    channel_counters: Callable[[], dict[str, dict[str, int]]] = _nothing
    channels: tuple[str, ...] = ()
    outbox_depth: Callable[[], int] = _zero
    oldest_undelivered_ms: Callable[[], int | None] = lambda: None
    silences: Callable[[], list[dict[str, Any]]] = _no_silences
    local_entries: Callable[[], Iterable[tuple[str, EngineState]]] | None = None
    batch_times: BatchTimes | None = None
    extra: dict[str, Any] = field(default_factory=dict)
