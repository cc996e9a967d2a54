"""The worker's ops port against a live worker process and the embedded broker over TCP:
readiness follows the backlog, metrics move with real traffic, the API shows the alert and
the notification the worker delivered to a real HTTP peer."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from aiokafka import AIOKafkaProducer
from prometheus_client.parser import text_string_to_metric_families

from pipeline.topics import all_topics
from tests.integration.conftest import BrokerHandle
from tests.integration.ops.support import (
    get,
    get_json,
    new_entity,
    produce_frames,
    wait_until,
    worker_process,
)
from tests.support.webhook import webhook_server

pytestmark = pytest.mark.integration

BACKLOG = 3000


def _samples(base: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    status, body = get(f"{base}/metrics")
    assert status == 200
    out = {}
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def _value(samples: dict, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


async def _produce_raw(bootstrap: str, value: bytes) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        await producer.send_and_wait("raw.aliunid.v1", value, key=b"bad")
    finally:
        await producer.stop()


@pytest.fixture
def ops_env(fresh_broker: BrokerHandle, tmp_path: Path, unique_suffix: str) -> dict[str, str]:
    app_id = f"sw-ops-{unique_suffix}"
    fresh_broker.create_topics({t.name: t.partitions for t in all_topics(app_id, 2)})
    return {
        "STREAMWARDEN_KAFKA_BOOTSTRAP": fresh_broker.bootstrap,
        "STREAMWARDEN_KAFKA_EMBEDDED": "true" if fresh_broker.is_embedded else "false",
        "STREAMWARDEN_PARTITIONS": "2",
        "STREAMWARDEN_APP_ID": app_id,
        "STREAMWARDEN_OPS_READY_MAX_LAG": "0",
        "STREAMWARDEN_LOG_FORMAT": "json",
    }


async def test_ready_after_backlog_metrics_move_and_api_shows_alert(
    ops_env: dict[str, str], fresh_broker: BrokerHandle, tmp_path: Path
) -> None:
    quiet = new_entity()
    # A backlog the worker must work through before it is ready (all below the threshold).
    await produce_frames(fresh_broker.bootstrap, quiet, [10.0] * BACKLOG)

    with (
        webhook_server() as hook,
        worker_process(ops_env, tmp_path, hook.url("/alerts")) as (proc, base, log),
    ):
        wait_until("healthz", lambda: get(f"{base}/healthz")[0] == 200, 60, proc, log)
        answers: list[tuple[int, dict]] = []

        def ready() -> dict | None:
            status, body = get(f"{base}/readyz")
            answers.append((status, json.loads(body)))
            return answers[-1][1] if status == 200 else None

        answer = wait_until("readyz 200", ready, 120, proc, log)
        assert answer["ready"] is True
        for status, body in answers[:-1]:  # any earlier answer said why not (timing-dependent)
            assert status == 503 and body["not_ready"], body
            assert all(not body["checks"][name]["ok"] for name in body["not_ready"])
        assert answer["checks"]["caught_up:normalize"]["lag"] == 0
        # Ready means the backlog was consumed: the normalize group committed all of it.
        stages = {s["stage"]: s for s in get_json(f"{base}/api/status")["stages"]}
        committed = sum(p["committed"] or 0 for p in stages["normalize"]["partitions"])
        assert committed >= BACKLOG

        before = _samples(base)
        assert _value(before, "streamwarden_ready") == 1.0
        normalized_before = sum(
            v for (n, _l), v in before.items() if n == "streamwarden_worker_events_total"
        )
        assert normalized_before >= BACKLOG

        hot = new_entity()
        await produce_frames(fresh_broker.bootstrap, hot, [55.0, 56.0])
        await _produce_raw(fresh_broker.bootstrap, b"this is not an envelope")
        received = hook.wait_for(1, 60)
        assert received, log.read_text()[-3000:]

        def sent_counted() -> dict | None:
            samples = _samples(base)
            sent = _value(
                samples, "streamwarden_notifications_total", channel="hook", outcome="sent"
            )
            firing = _value(
                samples,
                "streamwarden_alerts",
                rule="ops-power-high",
                severity="critical",
                state="firing",
            )
            dead = sum(
                v
                for (n, labels), v in samples.items()
                if n == "streamwarden_dead_letters_total" and dict(labels)["stage"] == "normalize"
            )
            transitions = _value(
                samples,
                "streamwarden_alert_transitions_total",
                rule="ops-power-high",
                state="firing",
            )
            ok = sent >= 1 and firing >= 1 and dead >= 1 and transitions == 1
            return samples if ok else None

        after = wait_until("metrics moved", sent_counted, 60, proc, log)
        moved = sum(v for (n, _l), v in after.items() if n == "streamwarden_worker_events_total")
        assert moved > normalized_before
        for stage in ("normalize", "evaluate", "notify"):  # every stage timed its batches
            assert _value(after, "streamwarden_stage_batch_seconds_count", stage=stage) >= 1
            assert _value(
                after, "streamwarden_stage_batch_seconds_bucket", stage=stage, le="+Inf"
            ) == _value(after, "streamwarden_stage_batch_seconds_count", stage=stage)
        lag_series = [k for k in after if k[0] == "streamwarden_consumer_lag"]
        assert any(dict(labels)["stage"] == "normalize" for _n, labels in lag_series)

        alerts = get_json(f"{base}/api/alerts?state=firing")
        assert [a["entity"] for a in alerts] == [hot]
        alert = alerts[0]
        assert alert["rule"] == "ops-power-high"
        assert alert["labels"]["team"] == "ops-test"
        assert alert["severity"] == "critical"
        assert alert["value"] == 55.0
        assert alert["annotations"]["summary"] == f"{hot} draws 55.0 kW"
        assert alert["since_ms"] <= int(time.time() * 1000)
        assert get_json(f"{base}/api/alerts?filter=entity%3D{quiet}") == []
        pending = get_json(f"{base}/api/alerts?state=pending")
        assert [(a["rule"], a["entity"], a["value"]) for a in pending] == [
            ("ops-power-sustained", hot, 55.0)
        ]
        status, body = get(f"{base}/api/alerts?filter=bad")
        assert status == 400 and b"no operator" in body

        def delivered() -> list | None:
            records = get_json(f"{base}/api/notifications?since=1h")
            return [r for r in records if r["outcome"] == "delivered"] or None

        records = wait_until("history", delivered, 30, proc, log)
        assert records[0]["channel"] == "hook"
        assert records[0]["rule"] == "ops-power-high"
        assert records[0]["entity"] == hot
        assert records[0]["labels"]["team"] == "ops-test"

        # STREAMWARDEN_LOG_FORMAT=json: every line of the worker's log, faust's included.
        lines = [line for line in log.read_text().splitlines() if line.strip()]
        loggers = {json.loads(line)["logger"].split(".")[0] for line in lines}
        assert {"pipeline", "faust", "aiokafka"} <= loggers, loggers

        page_status, page = get(f"{base}/")
        assert page_status == 200 and b'id="firing"' in page
        assert b"http://" not in page.replace(b"http://www.w3.org", b"")  # no external assets
