"""State size: peak RSS of a process holding window state for N entities x 10 metrics.

The rule state is held exactly as the worker holds it: one
:class:`~pipeline.rules.runtime.RuleRuntime` per partition over a
:class:`~pipeline.runtime.tables.PartitionView` of the worker's
:class:`~pipeline.runtime.tables.BatchedTable` (its store holds encoded bytes per partition),
plus the runtimes' timer heaps. Ten tumbling
window rules, one per metric, each entity reporting every metric, all windows still open
(10-minute windows, records within one minute), so every entity x metric holds live window
state. Changelog writes are counted and dropped: they leave the process, they are not state.

It runs in a child process (``python -m benchmarks.state_size N``) that first imports the
worker's modules, so its peak RSS (VmHWM) includes what a worker carries before any state;
the figure printed beside it (``rss_before_mb``) is that starting point.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import tempfile
import time
import zlib
from pathlib import Path
from typing import Any

METRICS = 10
PARTITIONS = 16
START_MS = 1_700_000_040_000


def _rules_yaml() -> str:
    rules = "".join(
        f"""
  - name: avg-m{i}
    type: aggregate
    match: {{source: aliunid, metric: m{i}}}
    window: {{kind: tumbling, size: 10m}}
    aggregate: avg
    condition: {{op: ">", value: 1000}}
    severity: warning
    channels: [console]
"""
        for i in range(METRICS)
    )
    return "rules:" + rules


def _rss_mb(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def measure(entities: int) -> dict[str, float]:
    """In this process: fill the state, return RSS figures (call in a fresh process)."""
    return asyncio.run(_measure(entities))


async def _dropped(topic: str, partition: int, records: Any) -> list[Any]:
    """The changelog sender: records leave the process, they are not state."""
    return []


async def _measure(entities: int) -> dict[str, float]:
    import pipeline.worker  # noqa: F401  (what a worker process has loaded)
    from pipeline.models import Measurement
    from pipeline.rules.engine import RuleEngine, decode_state, encode_state
    from pipeline.rules.loader import load_rules
    from pipeline.rules.runtime import RuleRuntime
    from pipeline.rules.state import StateFormatError
    from pipeline.runtime.app import StreamWardenApp
    from pipeline.runtime.tables import BatchedTable

    rss_before = _rss_mb("VmRSS")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "rules.yaml"
        path.write_text(_rules_yaml())
        engine = RuleEngine(load_rules([path], known_channels={"console"}))
    app = StreamWardenApp("state-size", broker="kafka://localhost:1", autodiscover=False)
    table = BatchedTable(
        app=app, name="alert_state", default=None, partitions=PARTITIONS, key_type=bytes
    )
    table.sender = _dropped
    states: list[Any] = [
        table.view(p, encode_state, decode_state, (StateFormatError,)) for p in range(PARTITIONS)
    ]
    runtimes = [RuleRuntime(engine, state) for state in states]
    started = time.perf_counter()
    records = 0
    for n in range(entities):
        entity = f"meter-{n:06d}"
        partition = zlib.crc32(entity.encode()) % PARTITIONS
        runtime = runtimes[partition]
        for m in range(METRICS):
            runtime.process(
                Measurement(
                    source="aliunid",
                    stream="bench",
                    entity=entity,
                    metric=f"m{m}",
                    value=float(n % 100),
                    unit="kW",
                    ts_ms=START_MS + (n * METRICS + m) % 60_000,
                )
            )
            records += 1
        if n % 100 == 99:  # ~1,000 records: the worker flushes per batch of that size
            for state in states:
                state.flush()
            await table.flush()
    for state in states:
        state.flush()
    await table.flush()
    elapsed = time.perf_counter() - started
    data = list(table.store.partitions.values())
    return {
        "entities": float(entities),
        "metrics": float(METRICS),
        "state_entries": float(sum(len(d) for d in data)),
        "timers": float(sum(r.timers for r in runtimes)),
        "state_bytes_mb": sum(len(k) + len(v) for d in data for k, v in d.items()) / 2**20,
        "rss_before_mb": rss_before,
        "rss_mb": _rss_mb("VmHWM"),
        "fill_events_per_s": records / elapsed,
    }


def run_state_size(entities: int) -> dict[str, float]:
    """Run :func:`measure` in a fresh interpreter; returns its figures."""
    root = Path(__file__).resolve().parent.parent
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.state_size", str(entities)],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=1800,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"state-size child failed: {proc.stderr[-2000:]}")
    result: dict[str, float] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


if __name__ == "__main__":
    print(json.dumps(measure(int(sys.argv[1]))))
