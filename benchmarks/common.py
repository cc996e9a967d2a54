"""Shared plumbing of the benchmark scenarios: broker, data, process measurements.

Every scenario measures from the outside what a user would see: messages a consumer group has
committed, CPU seconds and peak RSS of the worker process read from /proc. Nothing here is a
unit test; ``benchmarks/run.py`` prints the figures as JSON lines.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from confluent_kafka import Consumer, Producer, TopicPartition

from producers.envelope import RawEnvelope, encode_envelope, now_ms
from streamwarden.process import DIE_WITH_PARENT_ENV

ROOT = Path(__file__).resolve().parent.parent
GOLDEN = ROOT / "tests" / "data" / "upstream"


@dataclass(frozen=True)
class ProcessUsage:
    """CPU seconds (user + system) and peak resident memory of one process."""

    cpu_s: float
    peak_rss_mb: float


def process_usage(pid: int) -> ProcessUsage:
    """Read /proc: utime+stime in seconds and VmHWM (peak RSS) in MB."""
    ticks = os.sysconf("SC_CLK_TCK")
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    cpu_s = (int(fields[11]) + int(fields[12])) / ticks
    peak_kb = 0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            peak_kb = int(line.split()[1])
    return ProcessUsage(cpu_s=cpu_s, peak_rss_mb=peak_kb / 1024)


def percentile(values: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile (no interpolation), the usual definition for latency."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(pct / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


def golden_frames() -> dict[str, list[str]]:
    """Recorded upstream frames per family (tests/data/upstream/<kind>/*.json)."""
    frames: dict[str, list[str]] = {}
    for family_dir in sorted(p for p in GOLDEN.iterdir() if p.is_dir()):
        texts = [p.read_text().strip() for p in sorted(family_dir.glob("*.json"))]
        if texts:
            frames[family_dir.name] = texts
    return frames


def aliunid_frame(rng: random.Random, entity: str, *, high: bool) -> str:
    """A data frame like the simulator's, with kW above 40 when ``high``."""
    kw = rng.uniform(41, 60) if high else rng.uniform(0, 35)
    return json.dumps(
        {"type": "data", "id": entity, "data": {"sys": {"kW": round(kw, 3), "kWh+": 1000.0}}},
        separators=(",", ":"),
    )


def mixed_envelopes(
    count: int, *, entities: int, seed: int = 1
) -> Iterator[tuple[str, bytes, bytes]]:
    """``(topic, key, value)`` of a realistic multi-family mix of raw envelopes.

    aliunid frames (most of the traffic, ``entities`` distinct meters, about one in 50 above
    40 kW so alerts fire and resolve) interleaved with every other family's recorded frames.
    """
    rng = random.Random(seed)
    ids = [str(uuid.UUID(int=rng.getrandbits(128))) for _ in range(entities)]
    others = [
        (kind, text)
        for kind, texts in golden_frames().items()
        if kind != "aliunid"
        for text in texts
    ]
    base_ms = now_ms()
    for i in range(count):
        if others and i % 10 == 9:
            kind, text = others[i % len(others)]
            key = b""
        else:
            kind, entity = "aliunid", ids[i % entities]
            text = aliunid_frame(rng, entity, high=rng.random() < 0.02)
            key = entity.encode()
        envelope = RawEnvelope(
            source=kind, stream=f"bench-{kind}", received_at_ms=base_ms + i, payload=text
        )
        yield f"raw.{kind}.v1", key, encode_envelope(envelope)


def fill(
    bootstrap: str, messages: Iterator[tuple[str, bytes, bytes]], *, linger_ms: int = 20
) -> int:
    """Write messages with confluent-kafka (fast enough not to be what we measure)."""
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": linger_ms, "acks": "all"})
    sent = 0
    for topic, key, value in messages:
        while True:
            try:
                producer.produce(topic, value, key or None)
                break
            except BufferError:
                producer.poll(0.1)
        sent += 1
        if sent % 10_000 == 0:
            producer.poll(0)
    remaining = producer.flush(60)
    if remaining:
        raise RuntimeError(f"{remaining} benchmark messages were not delivered to Kafka")
    return sent


def end_offsets(bootstrap: str, topics: Mapping[str, int]) -> dict[tuple[str, int], int]:
    """High watermark of every partition of ``topics`` (name -> partition count)."""
    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": f"bench-probe-{uuid.uuid4().hex}"}
    )
    try:
        ends = {}
        for topic, partitions in topics.items():
            for p in range(partitions):
                _low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
                ends[(topic, p)] = high
        return ends
    finally:
        consumer.close()


def committed_total(bootstrap: str, group: str, tps: Sequence[tuple[str, int]]) -> int:
    """Sum of the group's committed offsets over ``tps`` (0 where nothing is committed)."""
    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False}
    )
    try:
        committed = consumer.committed([TopicPartition(t, p) for t, p in tps], timeout=10)
        return sum(max(tp.offset, 0) for tp in committed)
    finally:
        consumer.close()


def start_worker(env: Mapping[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "streamwarden", "worker"],
            env={
                **os.environ,
                **env,
                "PYTHONUNBUFFERED": "1",
                DIE_WITH_PARENT_ENV: str(os.getpid()),
            },
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )


def wait_until(predicate: object, timeout: float, interval: float = 0.2) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return True
        time.sleep(interval)
    return False
