"""Notification burst and takeover recovery: the real worker process against Kafka.

``notification_burst``: the worker is started on empty topics and waits ready; then
``count`` alert transitions (each its own alert, so each its own notification: one group per
alert, no waits) are written to ``alerts.v1`` at once, and we time until every one is
delivered to a ``null://`` apprise channel (counted in the worker's ``--alerts-out`` file).
That is the notify stage alone: dispatcher, outbox, attempt and delivered marks on the
``notify_log`` changelog, apprise. CPU is the worker process's (user + system) over the burst.

``takeover_recovery``: ``keys`` rule-state entries are written to the ``alert_state``
changelog (as a worker would have left them), then a worker is started; we read from its log
how long its store took to read the changelog and how long from its first assignment to its
rule partitions being owned (recovered, streams about to resume). That is what a worker taking
over a dead one's partitions spends before it serves them.
"""

from __future__ import annotations

import re
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from benchmarks.common import fill, process_usage, start_worker, wait_until
from benchmarks.pipeline import _delivered, _wait_ready, _worker_env
from pipeline.models import AlertTransition, encode_record
from pipeline.topics import ALERT_STATE_TABLE, ALERTS_TOPIC, changelog_topic
from producers.envelope import now_ms

__all__ = ["run_notification_burst", "run_takeover_recovery"]


def _transitions(count: int) -> Iterator[tuple[str, bytes, bytes]]:
    base = now_ms()
    for i in range(count):
        transition = AlertTransition(
            fingerprint=f"burst-{i:06d}",
            rule="bench-power-high",
            state="firing",
            entity=f"meter-{i:06d}",
            source="aliunid",
            stream="bench-aliunid",
            metric="sys.kW",
            value=50.0,
            severity="warning",
            ts_ms=base + i,
            summary=f"meter-{i:06d} 50.0",
            channels=("sink",),
        )
        yield ALERTS_TOPIC, transition.fingerprint.encode(), encode_record(transition)


def run_notification_burst(
    bootstrap: str, embedded: bool, create: Any, count: int, partitions: int
) -> dict[str, float]:
    """Time the delivery of ``count`` transitions written at once; rate and CPU per notification."""
    app_id = f"bench-{uuid.uuid4().hex[:8]}"
    create(app_id)
    with tempfile.TemporaryDirectory(prefix="sw-bench-") as tmp:
        workdir = Path(tmp)
        log = workdir / "worker.log"
        alerts_out = workdir / "delivered.jsonl"
        env = _worker_env(bootstrap, embedded, app_id, partitions, workdir)
        env["STREAMWARDEN_ALERTS_OUT"] = str(alerts_out)
        proc = start_worker(env, log)
        try:
            _wait_ready(log, proc, 120)
            cpu_before = process_usage(proc.pid).cpu_s
            started = time.perf_counter()
            fill(bootstrap, _transitions(count), linger_ms=5)
            done = wait_until(lambda: _delivered(alerts_out) >= count, 900, interval=0.05)
            elapsed = time.perf_counter() - started
            usage = process_usage(proc.pid)
            if not done:
                raise RuntimeError(
                    f"{_delivered(alerts_out)} of {count} delivered: {log.read_text()[-2000:]}"
                )
        finally:
            proc.terminate()
            proc.wait(30)
    return {
        "notifications": float(count),
        "elapsed_s": elapsed,
        "notifications_per_s": count / elapsed,
        "cpu_ms_per_notification": (usage.cpu_s - cpu_before) / count * 1000,
        "rss_mb": usage.peak_rss_mb,
    }


_RECOVERED = re.compile(
    r"table recovered table=alert_state partitions=\S+ records=(\d+) keys=(\d+) in ([0-9.]+)s"
)
_STAMP = re.compile(r"^\[?(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3})")


def _stamp_s(line: str) -> float | None:
    match = _STAMP.match(line)
    if match is None:
        return None
    return time.mktime(time.strptime(match.group(1)[:19], "%Y-%m-%d %H:%M:%S")) + (
        int(match.group(1)[20:]) / 1000
    )


def _first(lines: list[str], needle: str) -> float | None:
    for line in lines:
        if needle in line:
            return _stamp_s(line)
    return None


def run_takeover_recovery(
    bootstrap: str, embedded: bool, create: Any, keys: int, partitions: int
) -> dict[str, float]:
    """A worker starting over ``keys`` rule-state entries: changelog read time and the time
    from its assignment to owning (serving) its partitions."""
    app_id = f"bench-{uuid.uuid4().hex[:8]}"
    create(app_id)
    topic = changelog_topic(app_id, ALERT_STATE_TABLE)
    value = b"\x00" * 120  # about the size of an encoded window state

    def entries() -> Iterator[tuple[str, bytes, bytes]]:
        for i in range(keys):
            partition = i % partitions
            yield topic, f"p{partition}|r{i % 10}|meter-{i:07d}".encode(), value

    fill_partitions(bootstrap, entries(), partitions)
    with tempfile.TemporaryDirectory(prefix="sw-bench-") as tmp:
        workdir = Path(tmp)
        log = workdir / "worker.log"
        env = _worker_env(bootstrap, embedded, app_id, partitions, workdir)
        proc = start_worker(env, log)
        try:
            owned = wait_until(
                lambda: "rule partitions owned partitions=0" in log.read_text(errors="replace"),
                120,
                interval=0.05,
            )
            text = log.read_text(errors="replace")
            if not owned:
                raise RuntimeError(f"worker never owned its partitions: {text[-2000:]}")
        finally:
            proc.terminate()
            proc.wait(30)
    lines = text.splitlines()
    recovered = _RECOVERED.search(text)
    assigned = _first(lines, "Executing _on_partitions_assigned")
    serving = _first(lines, "rule partitions owned partitions=0")
    return {
        "keys": float(keys),
        "records_read": float(recovered.group(1)) if recovered else float("nan"),
        "changelog_read_s": float(recovered.group(3)) if recovered else float("nan"),
        "assigned_to_serving_s": (
            serving - assigned if serving is not None and assigned is not None else float("nan")
        ),
    }


def fill_partitions(
    bootstrap: str, messages: Iterator[tuple[str, bytes, bytes]], partitions: int
) -> None:
    """Write keyed records to the partition named in their key (``p<n>|...``)."""
    from confluent_kafka import Producer

    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 20, "acks": "all"})
    for n, (topic, key, value) in enumerate(messages):
        partition = int(key.split(b"|", 1)[0][1:]) % partitions
        while True:
            try:
                producer.produce(topic, value, key, partition=partition)
                break
            except BufferError:
                producer.poll(0.1)
        if n % 10_000 == 0:
            producer.poll(0)
    if producer.flush(60):
        raise RuntimeError("benchmark changelog records were not all delivered")
