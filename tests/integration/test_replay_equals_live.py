"""All five upstream families live through the worker, then the same envelopes replayed.

Simulators -> producers -> embedded Kafka -> ``streamwarden worker``; afterwards the raw topics
are read back (exactly what the worker consumed) and replayed with ``pipeline.replay``. The alert
transitions the worker wrote to ``alerts.v1`` and those of the replay must be the same.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import yaml
from aiokafka import AIOKafkaConsumer

from pipeline.models import decode_alert
from pipeline.replay import replay
from pipeline.rules.engine import RuleEngine
from pipeline.rules.loader import load_rules
from pipeline.topics import ALERTS_TOPIC, all_topics, raw_topics
from producers.config import load_sources
from producers.envelope import decode_envelope
from producers.runner import run_source
from producers.sink import KafkaSink
from streamwarden.families import FAMILIES
from tests.integration.conftest import BrokerHandle
from tests.support.secrets import register_secret

pytestmark = pytest.mark.integration

INTERVAL = 0.2
LIVE_SECONDS = 24.0
SETTLE_MS = 8_000  # transitions this close to the end may still be pending on one side

RULES = """\
rules:
  - {name: t-aliunid-power, type: threshold, match: {source: aliunid, metric: sys.kW},
     condition: {op: ">", value: 40}, for: 1s, clear: {condition: {op: "<", value: 35}}}
  - {name: t-nobil-error, type: state, match: {source: nobil, state: error}, equals: error, for: 2s}
  - {name: t-element-silent, type: absence, match: {source: element, metric: air_temperature}, after: 3s}
  - {name: t-element-hot, type: threshold, match: {source: element, metric: air_temperature},
     condition: {op: ">", value: 30}}
  - {name: t-valtronics-offline, type: state, match: {source: valtronics, state: status}, equals: offline}
  - {name: t-hemis-hot, type: threshold, match: {source: hemis, metric: sensor.TMP},
     condition: {op: ">", value: 28}}
  - {name: t-hemis-fault, type: state, match: {source: hemis, state: sensor.o}, equals: ko}
"""


async def _read_topics(bootstrap: str, topics: dict[str, int]) -> list[tuple[str, bytes]]:
    """Every record of ``topics`` from the beginning (manual assignment, nothing committed).

    A throwaway group id, not ``group_id=None``: aiokafka 0.14 raises CancelledError from
    ``stop()`` of a group-less consumer with a manual assignment.
    """
    from aiokafka import TopicPartition

    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, group_id=f"reader-{uuid.uuid4().hex}"
    )
    await consumer.start()
    out: list[tuple[str, bytes]] = []
    try:
        tps = [TopicPartition(t, p) for t, count in topics.items() for p in range(count)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        remaining = {tp for tp, end in ends.items() if end > 0}
        while remaining:
            for tp, records in (await consumer.getmany(*remaining, timeout_ms=500)).items():
                out.extend((tp.topic, r.value or b"") for r in records)
            remaining = {tp for tp in remaining if await consumer.position(tp) < ends[tp]}
    finally:
        await consumer.stop()
    return out


async def test_replay_of_the_live_stream_gives_the_live_transitions(
    private_broker: BrokerHandle, tmp_path: Path, unique_suffix: str
) -> None:
    """Always on a broker of its own, also when one is shared: a new worker group reads the
    fixed raw topics from their start, and on a shared broker that backlog makes the normalize
    stage lag; the evaluate stage advances caught-up partitions to the wall clock, so it fires
    absence alerts for readings still in flight, which replay (event time only) never sees.
    """
    fresh_broker = private_broker
    app_id = f"sw-rl-{unique_suffix}"
    fresh_broker.create_topics({t.name: t.partitions for t in all_topics(app_id, 4)})
    rules_file = tmp_path / "rules.yaml"
    rules_file.write_text(RULES)
    secrets = {
        family.secret_env: register_secret(f"secret-{kind}-{unique_suffix}")
        for kind, family in FAMILIES.items()
    }

    simulators = []
    entries = []
    for seed, (kind, family) in enumerate(FAMILIES.items(), start=11):
        simulator = family.make(secrets[family.secret_env], INTERVAL, seed)
        await simulator.start("127.0.0.1", 0)
        simulators.append(simulator)
        entries.append(family.entry(f"{kind}-live", simulator.url))
    sources_file = tmp_path / "sources.yaml"
    sources_file.write_text(yaml.safe_dump({"sources": entries}))
    sources = load_sources(sources_file, env=secrets)

    worker_log = tmp_path / "worker.log"
    env = {
        **os.environ,
        "STREAMWARDEN_KAFKA_BOOTSTRAP": fresh_broker.bootstrap,
        "STREAMWARDEN_KAFKA_EMBEDDED": "true" if fresh_broker.is_embedded else "false",
        "STREAMWARDEN_PARTITIONS": "4",
        "STREAMWARDEN_APP_ID": app_id,
        "STREAMWARDEN_RULES_PATH": str(rules_file),
        "STREAMWARDEN_DATA_DIR": str(tmp_path / "data"),
    }
    env.pop("STREAMWARDEN_CHANNELS_FILE", None)
    with worker_log.open("wb") as log:
        worker = subprocess.Popen(  # noqa: ASYNC220 - returns at once; the worker is a real process
            [sys.executable, "-m", "streamwarden", "worker"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    stop = asyncio.Event()
    sink = KafkaSink(fresh_broker.bootstrap, buffer_max_messages=10_000, client_id="replay-live")
    await sink.start()
    producers = [asyncio.create_task(run_source(source, sink, stop)) for source in sources]
    try:
        await asyncio.sleep(LIVE_SECONDS)
        assert worker.poll() is None, worker_log.read_text()[-3000:]
        stop.set()
        await asyncio.wait_for(asyncio.gather(*producers), 30)
        await sink.close()
        await asyncio.sleep(6)  # let the worker drain what the producers flushed last
    finally:
        stop.set()
        for task in producers:
            task.cancel()
        with contextlib.suppress(Exception):
            await asyncio.gather(*producers, return_exceptions=True)
        for simulator in simulators:
            await simulator.stop()
        worker.send_signal(signal.SIGTERM)
        try:
            worker.wait(30)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait()

    counts = {t.name: t.partitions for t in all_topics(app_id, 4)}
    raw = await _read_topics(fresh_broker.bootstrap, {t: counts[t] for t in raw_topics()})
    envelopes = [decode_envelope(value) for _topic, value in raw]
    per_family = {kind: sum(1 for e in envelopes if e.source == kind) for kind in FAMILIES}
    assert all(count > 10 for count in per_family.values()), per_family

    live = [
        decode_alert(value)
        for _topic, value in await _read_topics(
            fresh_broker.bootstrap, {ALERTS_TOPIC: counts[ALERTS_TOPIC]}
        )
    ]
    replayed = replay(envelopes, RuleEngine(load_rules([rules_file]))).transitions

    last_ms = max(e.received_at_ms for e in envelopes)

    def key(t: object) -> tuple[str, str, str, int]:
        return (t.rule, t.state, t.entity, t.ts_ms)  # type: ignore[attr-defined]

    live_set = {key(t) for t in live if t.ts_ms <= last_ms - SETTLE_MS}
    replay_set = {key(t) for t in replayed if t.ts_ms <= last_ms - SETTLE_MS}
    fired_rules = {k[0] for k in live_set if k[1] == "firing"}
    every_rule = {rule["name"] for rule in yaml.safe_load(RULES)["rules"]}
    assert fired_rules == every_rule, (fired_rules, worker_log.read_text()[-3000:])
    assert live_set == replay_set, {
        "only_live": sorted(live_set - replay_set),
        "only_replay": sorted(replay_set - live_set),
        "families": per_family,
    }
    # No transition repeated on the live side (the worker's at-least-once did not duplicate).
    assert len(live) == len({key(t) for t in live})
