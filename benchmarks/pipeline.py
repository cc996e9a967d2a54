"""Full pipeline and alert latency: the real worker process, fed raw envelopes through Kafka.

Throughput: the worker is started on empty topics and waits ready; then a multi-family mix of
raw envelopes is written and we time until the worker's consumer groups have committed every
raw, canonical and alert record *and* every alert transition has been delivered as a
notification (counted in the worker's ``--alerts-out`` file), so the figure covers normalize
-> rules -> notification calls, at-least-once. Notifications go to a ``null://`` apprise
channel (the whole delivery path, no network peer), so the figure is the pipeline's, not a
webhook's. (Until 2026-11-22 the clock stopped at the commits, so delivery work still queued
then was left out of the figure.)

Latency: envelopes are written at a fixed rate (half the measured maximum) whose
``received_at_ms`` is the moment of writing, as a producer stamps it, and batched as our
producers batch them (``PRODUCER_LINGER_MS``); notifications go to a local HTTP server through
apprise ``json://``; latency = arrival at the server - receipt. The batching matters on the
embedded broker: it returns one record batch per partition per fetch, so envelopes written
with a 1 ms linger (a batch of about one frame per partition at 6,600 frames/s) capped even a
bare aiokafka consumer at ~7,700 frames/s, against ~34,000 with 5 ms.
"""

from __future__ import annotations

import random
import re
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import orjson

from benchmarks.common import (
    aliunid_frame,
    committed_total,
    end_offsets,
    fill,
    mixed_envelopes,
    percentile,
    process_usage,
    start_worker,
    wait_until,
)
from pipeline.agents.normalize import normalize_group
from pipeline.topics import (
    ALERTS_PARTITIONS,
    ALERTS_TOPIC,
    MEASUREMENTS_TOPIC,
    STATES_TOPIC,
    all_topics,
    raw_topics,
)
from producers.envelope import RawEnvelope, encode_envelope, now_ms
from producers.sink import PRODUCER_LINGER_MS

RULES = """\
rules:
  - name: bench-power-high
    type: threshold
    match: {source: aliunid, metric: sys.kW}
    condition: {op: ">", value: 40}
    severity: warning
    summary: "{{ entity }} {{ value }}"
    channels: [sink]
  - name: bench-power-peak
    type: aggregate
    match: {source: aliunid, metric: sys.kW}
    window: {kind: tumbling, size: 10s}
    aggregate: max
    condition: {op: ">", value: 58}
    grace: 1s
    severity: critical
    summary: "{{ entity }} peaked at {{ value }}"
    channels: [sink]
"""
"""A threshold rule and a windowed one over every meter: the threshold flaps with the 2% of
frames above 40 kW (most of the notifications); the window rule keeps an open 10 s window
per meter in the rule state (a changelog write per meter and batch) and fires for the few
windows that peak above 58 kW."""


def _worker_env(
    bootstrap: str, embedded: bool, app_id: str, partitions: int, workdir: Path
) -> dict[str, str]:
    rules = workdir / "rules.yaml"
    rules.write_text(RULES)
    channels = workdir / "channels.yaml"
    channels.write_text(
        "channels:\n"
        "  sink:\n"
        "    url_env: BENCH_SINK_URL\n"
        # The latency probe reads each threshold alert's event time (the frame's receipt) from
        # the body. A window alert's event time is its window's end: not a receipt.
        "    templates: {body: \"{% for a in alerts %}{% if a.rule == 'bench-power-high' %}"
        'ts_ms={{ a.ts_ms }} {% endif %}{% endfor %}"}\n'
        # One group per alert, sent at once: grouping delays by design (group_interval), and
        # this measures the pipeline, not a configured wait.
        "defaults: {group_by: [fingerprint], group_wait: 0s, group_interval: 0s}\n"
    )
    return {
        "STREAMWARDEN_KAFKA_BOOTSTRAP": bootstrap,
        "STREAMWARDEN_KAFKA_EMBEDDED": "true" if embedded else "false",
        "STREAMWARDEN_APP_ID": app_id,
        "STREAMWARDEN_PARTITIONS": str(partitions),
        "STREAMWARDEN_RULES_PATH": str(rules),
        "STREAMWARDEN_CHANNELS_FILE": str(channels),
        "STREAMWARDEN_DATA_DIR": str(workdir / "data"),
        "STREAMWARDEN_LOG_LEVEL": "INFO",
        "BENCH_SINK_URL": "null://",
    }


def _wait_ready(log: Path, proc: Any, timeout: float) -> None:
    def ready() -> bool:
        if proc.poll() is not None:
            raise RuntimeError(f"worker exited: {log.read_text()[-2000:]}")
        # faust prints its ready banner at WARNING level and above too
        return "Ready" in log.read_text(errors="replace")

    if not wait_until(ready, timeout):
        raise RuntimeError(f"worker not ready after {timeout:.0f}s: {log.read_text()[-2000:]}")


def _all_committed(bootstrap: str, app_id: str, partitions: int) -> bool:
    """The normalize stage's group committed every raw record and the worker's faust group
    every canonical and alert record."""
    counts = {t.name: t.partitions for t in all_topics(app_id, partitions)}
    for group, topics in (
        (normalize_group(app_id), list(raw_topics())),
        (app_id, [MEASUREMENTS_TOPIC, STATES_TOPIC, ALERTS_TOPIC]),
    ):
        ends = end_offsets(bootstrap, {t: counts[t] for t in topics})
        if committed_total(bootstrap, group, list(ends)) < sum(ends.values()):
            return False
    return True


def _transitions(bootstrap: str) -> int:
    """Alert transitions the worker has written (each becomes one notification here: one
    group per alert, no waits)."""
    return sum(end_offsets(bootstrap, {ALERTS_TOPIC: ALERTS_PARTITIONS}).values())


def _delivered(alerts_out: Path) -> int:
    """Notifications the worker delivered (one JSON line each in its ``--alerts-out`` file)."""
    try:
        with alerts_out.open("rb") as lines:
            return sum(1 for _ in lines)
    except FileNotFoundError:
        return 0


def run_pipeline_throughput(
    bootstrap: str, embedded: bool, create: Any, events: int, partitions: int, entities: int
) -> dict[str, float]:
    """Time the worker over ``events`` raw envelopes; returns rate, CPU and peak RSS."""
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
            fill(bootstrap, mixed_envelopes(events, entities=entities))
            done = wait_until(
                lambda: (
                    _all_committed(bootstrap, app_id, partitions)
                    and _delivered(alerts_out) >= _transitions(bootstrap)
                ),
                600,
                interval=0.1,
            )
            elapsed = time.perf_counter() - started
            notifications = _delivered(alerts_out)
            usage = process_usage(proc.pid)
            if not done:
                raise RuntimeError(f"worker did not finish: {log.read_text()[-2000:]}")
        finally:
            proc.terminate()
            proc.wait(30)
    return {
        "events": float(events),
        "elapsed_s": elapsed,
        "events_per_s": events / elapsed,
        "notifications": float(notifications),
        "cpu_s_per_1000": (usage.cpu_s - cpu_before) / events * 1000,
        "rss_mb": usage.peak_rss_mb,
    }


class _Arrivals:
    def __init__(self) -> None:
        self.samples: list[tuple[int, float]] = []
        """(receipt stamp in ms, latency in ms) per alert that arrived."""
        self.lock = threading.Lock()

    def latencies_from(self, start_ms: int) -> list[float]:
        """Latencies of alerts whose frame was received at or after ``start_ms``."""
        with self.lock:
            return [latency for stamp, latency in self.samples if stamp >= start_ms]


def _serve_webhook(arrivals: _Arrivals) -> ThreadingHTTPServer:
    ts_pattern = re.compile(rb"ts_ms=(\d+)")

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            arrived = now_ms()
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            match = ts_pattern.search(orjson.loads(body).get("message", "").encode())
            if match:
                stamp = int(match.group(1))
                with arrivals.lock:
                    arrivals.samples.append((stamp, arrived - stamp))
            self.send_response(200)
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def _paced(rate: float, duration_s: float, entities: int) -> Iterator[tuple[str, bytes, bytes]]:
    """Envelopes stamped at the moment they are handed to Kafka, ``rate`` per second."""
    rng = random.Random(7)
    ids = [str(uuid.UUID(int=rng.getrandbits(128))) for _ in range(entities)]
    start = time.perf_counter()
    total = int(rate * duration_s)
    for i in range(total):
        due = start + i / rate
        delay = due - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        entity = ids[i % entities]
        text = aliunid_frame(rng, entity, high=rng.random() < 0.01)
        envelope = RawEnvelope(
            source="aliunid", stream="bench-latency", received_at_ms=now_ms(), payload=text
        )
        yield "raw.aliunid.v1", entity.encode(), encode_envelope(envelope)


WARMUP_S = 3.0
"""The stream runs this long before what is measured: the worker's first seconds (partition
assignment, first fetches, warming caches) are start-up, not steady-state latency."""


def run_latency(
    bootstrap: str, embedded: bool, create: Any, rate: float, duration_s: float, partitions: int
) -> dict[str, float]:
    """Alert latency (receipt -> notification at an HTTP peer) at a fixed event rate, after a
    :data:`WARMUP_S` warm-up at the same rate."""
    app_id = f"bench-lat-{uuid.uuid4().hex[:8]}"
    create(app_id)
    arrivals = _Arrivals()
    server = _serve_webhook(arrivals)
    try:
        with tempfile.TemporaryDirectory(prefix="sw-bench-") as tmp:
            workdir = Path(tmp)
            env = _worker_env(bootstrap, embedded, app_id, partitions, workdir)
            env["BENCH_SINK_URL"] = f"json://127.0.0.1:{server.server_address[1]}/hook"
            log = workdir / "worker.log"
            proc = start_worker(env, log)
            try:
                _wait_ready(log, proc, 120)
                measured_from_ms = now_ms() + int(WARMUP_S * 1000)
                fill(
                    bootstrap,
                    _paced(rate, WARMUP_S + duration_s, entities=1000),
                    linger_ms=PRODUCER_LINGER_MS,
                )
                wait_until(lambda: _all_committed(bootstrap, app_id, partitions), 120, interval=0.2)
            finally:
                proc.terminate()
                proc.wait(30)
    finally:
        server.shutdown()
        server.server_close()
    latencies = arrivals.latencies_from(measured_from_ms)
    return {
        "rate_events_per_s": rate,
        "warmup_s": WARMUP_S,
        "notifications": float(len(latencies)),
        "p50_ms": percentile(latencies, 50),
        "p99_ms": percentile(latencies, 99),
        "max_ms": max(latencies) if latencies else float("nan"),
    }
