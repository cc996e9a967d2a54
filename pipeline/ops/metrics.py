"""Prometheus metrics of the worker, in a registry of our own (not the process-global one, so
tests and several apps in one process never share series).

The stages keep plain counters; :class:`WorkerCollector` turns them into metric families at
each scrape, so nothing on the hot path calls prometheus_client.

Metric names (all prefixed ``streamwarden_``):

====================================================  =========================================
``worker_events_total{event}``                        stage counters (``normalized``,
                                                      ``deadlettered``, ``evaluated``,
                                                      ``transitions``, ``alerts`` ...)
``stage_batch_seconds{stage}``                        histogram: one batch of normalize,
                                                      evaluate or notify
``notifications_total{channel,outcome}``              sent, failed, retried, suppressed,
                                                      silenced, inhibited, muted
``notification_history_total{result}``                history records written/dropped/failed
``outbox_depth``                                      notifications waiting in this worker
``oldest_undelivered_age_seconds``                    age of the oldest of them
``alerts{rule,severity,state}``                       alerts in progress (cluster-wide)
``alert_transitions_total{rule,state}``               transitions on alerts.v1 (cluster-wide)
``dead_letters_total{stage,reason}``                  records on deadletter.v1 (cluster-wide)
``consumer_lag{stage,topic,partition}``               end offset minus committed offset
``consumer_committed_offset{stage,topic,partition}``  the group's committed offset
``ready``, ``ready_check{check}``                     1 when ready / per check
``cluster_view_age_seconds``                          since the Kafka view was last refreshed
``http_request_seconds{path}``                        ops server request latency (histogram)
====================================================  =========================================
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
)
from prometheus_client.registry import Collector

from pipeline.ops.sources import WorkerSources

if TYPE_CHECKING:
    from prometheus_client.metrics_core import Metric

    from pipeline.ops.cluster import ClusterView, GroupStatus
    from pipeline.ops.history import HistoryWriter

__all__ = ["WorkerCollector", "new_registry"]

PREFIX = "streamwarden"


def new_registry() -> CollectorRegistry:
    """An empty registry (no process or platform collectors: the worker's series only)."""
    return CollectorRegistry(auto_describe=True)


def request_histogram(registry: CollectorRegistry) -> Histogram:
    """Latency of the ops server's own requests."""
    return Histogram(
        f"{PREFIX}_http_request_seconds",
        "Ops server request latency",
        ["path"],
        registry=registry,
    )


class WorkerCollector(Collector):
    """Reads the worker's providers at each scrape (see the module docstring).

    Args:
        sources: the worker's live facts.
        readiness: the evaluated readiness (``ready`` plus checks), refreshed by the server.
        groups: the last consumer group status (empty until the first probe).
        view: the cluster view (alerts in progress), or None.
        history: the notification history writer, or None.
    """

    def __init__(
        self,
        sources: WorkerSources,
        *,
        readiness: Callable[[], tuple[bool, dict[str, bool]]],
        groups: Callable[[], list[GroupStatus]],
        view: ClusterView | None = None,
        history: HistoryWriter | None = None,
    ) -> None:
        self._sources = sources
        self._readiness = readiness
        self._groups = groups
        self._view = view
        self._history = history

    def describe(self) -> Iterable[Metric]:
        return []  # unchecked collector: the families depend on the data

    def collect(self) -> Iterator[Metric]:
        events = CounterMetricFamily(
            f"{PREFIX}_worker_events", "Stage counters of this worker", labels=["event"]
        )
        for name, value in sorted(dict(self._sources.counters).items()):
            events.add_metric([name], float(value))
        yield events

        if self._sources.batch_times is not None:
            batches = HistogramMetricFamily(
                f"{PREFIX}_stage_batch_seconds",
                "Time one batch takes in a stage (decode, stage function, awaited emits)",
                labels=["stage"],
            )
            for stage, times in sorted(self._sources.batch_times.stages.items()):
                batches.add_metric([stage], times.cumulative(), sum_value=times.sum_s)
            yield batches

        sent = CounterMetricFamily(
            f"{PREFIX}_notifications",
            "Notification outcomes per channel",
            labels=["channel", "outcome"],
        )
        counters = self._sources.channel_counters()
        for channel in sorted(set(counters) | set(self._sources.channels)):
            for outcome, value in sorted(counters.get(channel, {}).items()):
                sent.add_metric([channel, outcome], float(value))
        yield sent

        if self._history is not None:
            history = CounterMetricFamily(
                f"{PREFIX}_notification_history",
                "Notification history records by result",
                labels=["result"],
            )
            history.add_metric(["written"], float(self._history.written))
            history.add_metric(["dropped"], float(self._history.dropped))
            history.add_metric(["failed"], float(self._history.failed))
            yield history

        yield GaugeMetricFamily(
            f"{PREFIX}_outbox_depth",
            "Notifications waiting to be sent by this worker",
            value=float(self._sources.outbox_depth()),
        )
        oldest = self._sources.oldest_undelivered_ms()
        age = max(time.time() - oldest / 1000, 0.0) if oldest is not None else 0.0
        yield GaugeMetricFamily(
            f"{PREFIX}_oldest_undelivered_age_seconds",
            "Age of the oldest notification this worker has not delivered (0: none)",
            value=age,
        )

        yield from self._alerts()
        yield from self._lag()

        ready, checks = self._readiness()
        yield GaugeMetricFamily(f"{PREFIX}_ready", "1 when /readyz answers 200", value=ready)
        per_check = GaugeMetricFamily(
            f"{PREFIX}_ready_check", "1 when the readiness check passes", labels=["check"]
        )
        for name, ok in sorted(checks.items()):
            per_check.add_metric([name], float(ok))
        yield per_check

    def _alerts(self) -> Iterator[Metric]:
        view = self._view
        alerts = GaugeMetricFamily(
            f"{PREFIX}_alerts",
            "Alerts in progress across the cluster (from the alert state changelog)",
            labels=["rule", "severity", "state"],
        )
        if view is not None:
            from pipeline.ops.alerts import select_alerts

            counts: Counter[tuple[str, str, str]] = Counter(
                (a.rule, a.severity, a.state)
                for a in select_alerts(view.entries(), view.transitions)
            )
            for (rule, severity, state), count in sorted(counts.items()):
                alerts.add_metric([rule, severity, state], float(count))
            transitions = CounterMetricFamily(
                f"{PREFIX}_alert_transitions",
                "Transitions on alerts.v1 by rule and state (cluster-wide, what the topic holds)",
                labels=["rule", "state"],
            )
            for (rule, state), count in sorted(view.transition_counts.items()):
                transitions.add_metric([rule, state], float(count))
            yield transitions
            dead = CounterMetricFamily(
                f"{PREFIX}_dead_letters",
                "Records on deadletter.v1 by stage and reason (cluster-wide)",
                labels=["stage", "reason"],
            )
            for (stage, reason), count in sorted(view.dead_letter_counts.items()):
                dead.add_metric([stage, reason], float(count))
            yield dead
            if view.refreshed_at is not None:
                yield GaugeMetricFamily(
                    f"{PREFIX}_cluster_view_age_seconds",
                    "Seconds since the Kafka view was last read to its end",
                    value=max(time.time() - view.refreshed_at, 0.0),
                )
        yield alerts

    def _lag(self) -> Iterator[Metric]:
        labels = ["stage", "topic", "partition"]
        lag = GaugeMetricFamily(
            f"{PREFIX}_consumer_lag", "End offset minus committed offset", labels=labels
        )
        committed = GaugeMetricFamily(
            f"{PREFIX}_consumer_committed_offset", "Committed offset of the group", labels=labels
        )
        for group in self._groups():
            for p in group.partitions:
                key = [group.stage, p.topic, str(p.partition)]
                lag.add_metric(key, float(p.lag if p.lag is not None else p.end))
                if p.committed is not None:
                    committed.add_metric(key, float(p.committed))
        yield lag
        yield committed
