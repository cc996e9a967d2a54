"""Alert identity in the live worker (issue 14), black-box.

Envelopes as the producers write them (text and base64 binary frames, the documented message
types of each family, changing annotations) go to the raw topics of the embedded broker over
TCP; ``streamwarden worker`` runs as a real process; ``alerts.v1`` is read back. Every family's
incident must fire and resolve exactly once per episode under one fingerprint, and the
binary frames must not be dead-lettered.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from pipeline.models import AlertTransition, decode_alert
from pipeline.topics import ALERTS_TOPIC, DEADLETTER_TOPIC, all_topics
from producers.envelope import RawEnvelope, encode_envelope, raw_topic
from tests.integration.conftest import BrokerHandle

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

PARTITIONS = 2
RULES = """\
rules:
  - {name: i-valtronics, type: state, match: {source: valtronics, state: status},
     equals: offline}
  - {name: i-hemis, type: threshold, match: {source: hemis, metric: sensor.TMP},
     condition: {op: ">", value: 28}}
  - {name: i-nobil, type: state, match: {source: nobil, state: error}, equals: error}
  - {name: i-element, type: threshold, match: {source: element, metric: air_temperature},
     condition: {op: ">", value: 30}}
  - {name: i-aliunid, type: threshold, match: {source: aliunid, metric: l1.V},
     condition: {op: ">", value: 250}}
"""


def envelope(source: str, frame: Any, at_ms: int, binary: bool = False, **meta: Any) -> bytes:
    text = frame if isinstance(frame, str) else json.dumps(frame)
    if binary:
        meta["encoding"] = "base64"
        text = base64.b64encode(text.encode()).decode()
    return encode_envelope(RawEnvelope(source, f"{source}-live", at_ms, text, meta))


def scenarios(base_ms: int) -> dict[str, list[bytes]]:
    """Per family, four frames: fire, resolve, fire, resolve (see the unit tests)."""
    t = [base_ms + i * 1000 for i in range(4)]

    def vstatus(i: int, kind: str, status: str, reason: str | None = None) -> dict[str, Any]:
        if kind == "device_update":
            return {
                "type": kind,
                "device_id": 3,
                "updates": {"status": status},
                "timestamp": t[i] / 1000,
            }
        if kind == "device_status":
            return {"type": kind, "device_id": 3, "status": status, "timestamp": t[i] / 1000}
        return {
            "type": kind,
            "device_id": 3,
            "new_status": status,
            "reason": reason,
            "timestamp": t[i] / 1000,
        }

    def sensor_state(value: str, ts: int) -> dict[str, Any]:
        return {
            "type": "SENSOR_STATE",
            "timestamp": ts,
            "zoneId": "Z",
            "sensorId": "S-1",
            "factorId": "TMP",
            "value": value,
        }

    def container(kind: str, nature: str, value: float, ts: int) -> dict[str, Any]:
        return {
            "type": kind,
            "timestamp": ts,
            "container": {
                "dataInfo": {
                    "sourceTypeInfo": {
                        "sourceNature": nature,
                        "sourceGroup": "TMP",
                        "measurementUnit": "°C",
                    },
                    "zoneId": "Z",
                    "sourceId": "S-1",
                },
                "data": {
                    "header": {"columns_mapping": {"VALUENB": 0}},
                    "data_points": [{"d": ts, "v": [value]}],
                },
            },
        }

    def connector(error: int, ts: int) -> dict[str, Any]:
        return {"status": 0, "error": error, "timestamp": ts}

    def reading(value: float, ts: int, ident: str) -> dict[str, Any]:
        return {
            "event": "reading_added",
            "body": {
                "id": ident,
                "device_id": "dev-1",
                "measured_at": ts / 1000,
                "data": {"air_temperature": value},
            },
        }

    def meter(volts: float, name: str) -> dict[str, Any]:
        return {
            "type": "data",
            "id": "mp-1",
            "data": {"l1": {"phase": "R", "V": volts, "name": name}},
        }

    return {
        "valtronics": [
            envelope("valtronics", vstatus(0, "device_status_update", "offline", "Lost"), t[0]),
            envelope("valtronics", vstatus(1, "device_update", "online"), t[1], True),
            envelope("valtronics", vstatus(2, "device_status", "offline"), t[2]),
            envelope("valtronics", vstatus(3, "device_status_update", "online", "Back"), t[3]),
        ],
        "hemis": [
            envelope("hemis", sensor_state("30.0", t[0]), t[0]),
            envelope("hemis", container("DATA_PROVIDER", "SEN", 20, t[1]), t[1], True),
            envelope("hemis", container("NEW_DATA", "SENSOR", 31, t[2]), t[2]),
            envelope("hemis", sensor_state("21.0", t[3]), t[3], True),
        ],
        "nobil": [
            envelope(
                "nobil",
                {
                    "type": "snapshot:init",
                    "data": [
                        {
                            "uuid": "NOR_00001",
                            "status": 2,
                            "connectors": [connector(1, t[0] - 86_400_000)],
                        }
                    ],
                },
                t[0],
            ),
            envelope(
                "nobil",
                {
                    "type": "status:raw",
                    "data": {"uuid": "NOR_00001", "connector": 0, **connector(0, t[1])},
                },
                t[1],
                True,
                previous={"status": 0, "error": 1},
            ),
            envelope(
                "nobil",
                {
                    "type": "status:raw",
                    "data": {"uuid": "NOR_00001", "connector": 0, **connector(1, t[2])},
                },
                t[2],
                previous={"status": 0, "error": 0},
            ),
            envelope(
                "nobil",
                {
                    "type": "status:raw",
                    "data": {"uuid": "NOR_00001", "connector": 0, **connector(0, t[3])},
                },
                t[3],
                True,
                previous={"status": 0, "error": 1},
            ),
        ],
        "element": [
            envelope("element", [reading(31, t[0], "r0")], t[0]),
            envelope("element", [reading(25, t[1], "r1")], t[1], True),
            envelope("element", "[]", t[1]),
            envelope("element", [reading(32, t[2], "r2"), reading(20, t[3], "r3")], t[3], True),
        ],
        "aliunid": [
            envelope("aliunid", meter(260, "A"), t[0]),
            envelope("aliunid", meter(230, "B"), t[1], True),
            envelope("aliunid", meter(255, "C"), t[2]),
            envelope("aliunid", meter(231, "D"), t[3], True),
        ],
    }


async def _read(
    bootstrap: str, topic: str, partitions: int, want: int, timeout_s: float
) -> list[bytes]:
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, group_id=f"r-{uuid.uuid4().hex}"
    )
    await consumer.start()
    out: list[bytes] = []
    try:
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        deadline = time.monotonic() + timeout_s
        while len(out) < want and time.monotonic() < deadline:
            for records in (await consumer.getmany(timeout_ms=500)).values():
                out.extend(r.value or b"" for r in records)
    finally:
        await consumer.stop()
    return out


async def test_each_family_fires_and_resolves_once_per_episode_in_the_worker(
    fresh_broker: BrokerHandle, tmp_path: Path, unique_suffix: str
) -> None:
    app_id = f"sw-id-{unique_suffix}"
    counts = {t.name: t.partitions for t in all_topics(app_id, PARTITIONS)}
    fresh_broker.create_topics(counts)
    rules_file = tmp_path / "rules.yaml"
    rules_file.write_text(RULES)
    env = {
        **os.environ,
        "STREAMWARDEN_KAFKA_BOOTSTRAP": fresh_broker.bootstrap,
        "STREAMWARDEN_KAFKA_EMBEDDED": "true" if fresh_broker.is_embedded else "false",
        "STREAMWARDEN_PARTITIONS": str(PARTITIONS),
        "STREAMWARDEN_APP_ID": app_id,
        "STREAMWARDEN_RULES_PATH": str(rules_file),
        "STREAMWARDEN_DATA_DIR": str(tmp_path / "data"),
    }
    env.pop("STREAMWARDEN_CHANNELS_FILE", None)
    log_path = tmp_path / "worker.log"
    with log_path.open("wb") as log:
        worker = subprocess.Popen(  # noqa: ASYNC220 - returns at once; a real process
            [sys.executable, "-m", "streamwarden", "worker"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    producer = AIOKafkaProducer(bootstrap_servers=fresh_broker.bootstrap, acks="all")
    await producer.start()
    try:
        base = int(time.time() * 1000) - 60_000
        for source, frames in scenarios(base).items():
            for frame in frames:  # one key: one partition, in order
                await producer.send_and_wait(raw_topic(source), frame, key=source.encode())
        alerts = [
            decode_alert(v)
            for v in await _read(
                fresh_broker.bootstrap, ALERTS_TOPIC, counts[ALERTS_TOPIC], 20, 150
            )
        ]
        assert worker.poll() is None, log_path.read_text()[-3000:]
    finally:
        await producer.stop()
        worker.send_signal(signal.SIGTERM)
        try:
            worker.wait(30)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait()

    by_rule: dict[str, list[AlertTransition]] = defaultdict(list)
    for alert in alerts:
        by_rule[alert.rule].append(alert)
    summary = {r: [(a.state, a.fingerprint) for a in v] for r, v in by_rule.items()}
    assert set(by_rule) == {f"i-{s}" for s in scenarios(0)}, (summary, log_path.read_text()[-3000:])
    for rule, transitions in by_rule.items():
        ordered = sorted(transitions, key=lambda a: a.ts_ms)
        assert [a.state for a in ordered] == ["firing", "resolved", "firing", "resolved"], (
            rule,
            summary,
        )
        assert len({a.fingerprint for a in ordered}) == 1, (rule, summary)
    dead = await _read(fresh_broker.bootstrap, DEADLETTER_TOPIC, counts[DEADLETTER_TOPIC], 1, 3)
    assert dead == []
