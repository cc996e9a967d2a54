"""The ``evaluate_rules`` faust agent over Kafka (TCP): canonical arrays in, alert transitions
out, rule state on the ``alert_state`` changelog recovered by the next worker; bad messages and
records the rule engine fails on dead-lettered; an upgrade resumes where the evaluate group of
earlier versions left.

Each test runs the worker's faust app in-process (``build_worker``), so it can count and
patch; record times lie an hour ahead, so the wall-clock timer never closes a window here.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from confluent_kafka import Consumer
from confluent_kafka import TopicPartition as CTopicPartition

from pipeline.agents.upgrade import legacy_evaluate_group
from pipeline.alerting.config import load_config
from pipeline.models import Measurement, encode_records
from pipeline.notify.channels import load_channels_from
from pipeline.rules.engine import RuleEngine
from pipeline.rules.runtime import RuleRuntime
from pipeline.settings import PipelineSettings
from pipeline.topics import (
    ALERT_STATE_TABLE,
    ALERTS_TOPIC,
    DEADLETTER_TOPIC,
    MEASUREMENTS_TOPIC,
    all_topics,
    changelog_topic,
    partition_of,
)
from pipeline.worker import WorkerConfig, WorkerParts, build_worker
from producers.envelope import now_ms
from tests.integration.conftest import BrokerHandle
from tests.unit.pipeline.rules.helpers import rule

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

PARTITIONS = 4
ENTITY = "mp-window"
PARTITION = partition_of(ENTITY.encode(), PARTITIONS)
BASE_MS = (now_ms() // 3_600_000 + 1) * 3_600_000
"""The next full hour: windows start here, and the wall clock never reaches them in a test."""


def _meas(value: float, seconds: float) -> Measurement:
    return Measurement(
        "aliunid", "ev-hub", ENTITY, "sys.kW", float(value), "kW", BASE_MS + int(seconds * 1000), {}
    )


def _array(*records: Measurement) -> tuple[str, int, bytes]:
    return MEASUREMENTS_TOPIC, PARTITION, encode_records(list(records))


def _settings(broker: BrokerHandle, app_id: str) -> PipelineSettings:
    return PipelineSettings(
        kafka_bootstrap=broker.bootstrap,
        kafka_embedded=broker.is_embedded,
        app_id=app_id,
        partitions=PARTITIONS,
        batch_max=100,
    )


def _config(*rules: Any) -> WorkerConfig:
    alerting = load_config(None)
    return WorkerConfig(RuleEngine(list(rules)), alerting, load_channels_from(alerting))


def _avg_high() -> Any:
    """avg over tumbling 10 s windows above 40: its open window is state worth keeping."""
    return rule("aggregate", name="avg-high", channels=["console"])


async def _write(broker: BrokerHandle, messages: list[tuple[str, int, bytes]]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap, acks="all")
    await producer.start()
    try:
        for topic, partition, value in messages:
            await producer.send_and_wait(topic, value, partition=partition)
    finally:
        await producer.stop()


async def _committed(broker: BrokerHandle, group: str, tp: TopicPartition) -> int | None:
    consumer = AIOKafkaConsumer(bootstrap_servers=broker.bootstrap, group_id=group)
    await consumer.start()
    try:
        return await consumer.committed(tp)
    finally:
        await consumer.stop()


async def _poll(condition: Callable[[], Awaitable[bool]], what: str) -> None:
    for _ in range(600):
        if await condition():
            return
        await asyncio.sleep(0.2)
    raise AssertionError(f"not within 120 s: {what}")


@contextlib.asynccontextmanager
async def _running(
    broker: BrokerHandle, app_id: str, config: WorkerConfig
) -> AsyncIterator[WorkerParts]:
    """A worker (fresh process state: nothing in memory) until the test's block ends."""
    parts = build_worker(_settings(broker, app_id), config)
    await parts.app.start()
    try:
        yield parts
    finally:
        await parts.app.stop()


def _read(bootstrap: str, topic: str, partitions: int) -> list[Any]:
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"reader-{uuid.uuid4().hex}",
            "enable.auto.commit": False,
        }
    )
    consumer.assign([CTopicPartition(topic, p, 0) for p in range(partitions)])
    out: list[Any] = []
    idle = 0
    while idle < 4:
        message = consumer.poll(0.5)
        if message is None:
            idle += 1
        elif message.error() is None:
            out.append(message)
    consumer.close()
    return out


def _topics(broker: BrokerHandle, app_id: str) -> None:
    broker.create_topics({t.name: t.partitions for t in all_topics(app_id, PARTITIONS)})


async def _true(value: bool) -> bool:
    return value


async def test_window_state_recovers_in_a_new_worker_and_bad_messages_are_dead_lettered(
    fresh_broker: BrokerHandle,
) -> None:
    app_id = f"eval-{uuid.uuid4().hex[:8]}"
    _topics(fresh_broker, app_id)
    tp = TopicPartition(MEASUREMENTS_TOPIC, PARTITION)

    # First worker: two readings of 90 open the window [0 s, 10 s); nothing fires yet.
    await _write(fresh_broker, [_array(_meas(90, 1), _meas(90, 2))])
    async with _running(fresh_broker, app_id, _config(_avg_high())) as parts:
        await _poll(lambda: _true(parts.counters["evaluated"] == 2), "two records evaluated")
        await _poll(lambda: _committed_is(fresh_broker, app_id, tp, 1), "the message committed")
        assert parts.counters["transitions"] == 0
    changelog = _read(
        fresh_broker.bootstrap, changelog_topic(app_id, ALERT_STATE_TABLE), PARTITIONS
    )
    assert changelog and {m.partition() for m in changelog} == {PARTITION}
    assert all(m.key().startswith(f"p{PARTITION}|".encode()) for m in changelog)

    # A second worker, nothing in memory: a 0 in the same window, then readings that close it
    # and the next one. Average 60 only if the two 90s were recovered (0 if not).
    bad = (MEASUREMENTS_TOPIC, PARTITION, b"\xff not a canonical array")
    await _write(
        fresh_broker,
        [_array(_meas(0, 3)), bad, _array(_meas(0, 12)), _array(_meas(0, 21))],
    )
    async with _running(fresh_broker, app_id, _config(_avg_high())) as parts:
        await _poll(lambda: _true(parts.counters["evaluated"] == 3), "three records evaluated")
        await _poll(lambda: _committed_is(fresh_broker, app_id, tp, 5), "all committed")
        # Ready is a moment's state: the group may still settle (a further rebalance when the
        # first worker's members are only now evicted), after which the worker reports ready.
        await _poll(lambda: _true(parts.readiness()["ready"] is True), "the worker ready")
        evaluate: Any = parts.readiness()["evaluate"]
        assert evaluate["partitions"] == list(range(PARTITIONS)) and evaluate["recovered"]

    alerts = [orjson.loads(m.value()) for m in _read(fresh_broker.bootstrap, ALERTS_TOPIC, 1)]
    assert [(a["rule"], a["state"], a["value"]) for a in alerts] == [
        ("avg-high", "firing", 60.0),
        ("avg-high", "resolved", 0.0),
    ]
    letters = [
        orjson.loads(m.value()) for m in _read(fresh_broker.bootstrap, DEADLETTER_TOPIC, PARTITIONS)
    ]
    assert len(letters) == 1 and letters[0]["stage"] == "evaluate"
    assert "not a canonical record" in letters[0]["reason"]
    assert (letters[0]["partition"], letters[0]["offset"]) == (PARTITION, 2)


async def _committed_is(broker: BrokerHandle, group: str, tp: TopicPartition, want: int) -> bool:
    return await _committed(broker, group, tp) == want


async def test_a_record_the_rule_engine_fails_on_is_dead_lettered_and_later_records_alert(
    fresh_broker: BrokerHandle, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No poison pill: a record whose evaluation raises is tried twice, dead-lettered with the
    reason, and the partition moves on (the worker neither stops nor crash-loops)."""
    app_id = f"eval-{uuid.uuid4().hex[:8]}"
    _topics(fresh_broker, app_id)
    real_process = RuleRuntime.process
    tries: list[float] = []

    def process(self: RuleRuntime, record: Any) -> Any:
        if getattr(record, "value", None) == 666.0:
            tries.append(record.value)
            raise ZeroDivisionError("a bug in an evaluator")
        return real_process(self, record)

    monkeypatch.setattr(RuleRuntime, "process", process)
    hot = rule("threshold", name="hot", channels=["console"])
    await _write(fresh_broker, [_array(_meas(666, 1)), _array(_meas(90, 2))])
    async with _running(fresh_broker, app_id, _config(hot)) as parts:
        await _poll(lambda: _true(parts.counters["transitions"] == 1), "the later record alerts")
        tp = TopicPartition(MEASUREMENTS_TOPIC, PARTITION)
        await _poll(lambda: _committed_is(fresh_broker, app_id, tp, 2), "both committed")
        assert parts.counters["evaluate_failed"] == 1
    assert tries == [666.0, 666.0]
    letters = [
        orjson.loads(m.value()) for m in _read(fresh_broker.bootstrap, DEADLETTER_TOPIC, PARTITIONS)
    ]
    assert [(d["stage"], d["topic"], d["partition"], d["offset"]) for d in letters] == [
        ("evaluate", MEASUREMENTS_TOPIC, PARTITION, 0)
    ]
    assert "rule evaluation failed: ZeroDivisionError" in letters[0]["reason"]
    alerts = [orjson.loads(m.value()) for m in _read(fresh_broker.bootstrap, ALERTS_TOPIC, 1)]
    assert [(a["rule"], a["state"], a["value"]) for a in alerts] == [("hot", "firing", 90.0)]


async def test_an_upgrade_resumes_where_the_evaluate_group_of_earlier_versions_left(
    fresh_broker: BrokerHandle,
) -> None:
    """Until issue 18 the group ``<app_id>-evaluate`` consumed the canonical topics: a worker
    of this version must not evaluate again what that group had committed."""
    app_id = f"eval-{uuid.uuid4().hex[:8]}"
    _topics(fresh_broker, app_id)
    tp = TopicPartition(MEASUREMENTS_TOPIC, PARTITION)
    await _write(fresh_broker, [_array(_meas(90, 1)), _array(_meas(90, 2))])
    legacy = AIOKafkaConsumer(
        bootstrap_servers=fresh_broker.bootstrap, group_id=legacy_evaluate_group(app_id)
    )
    await legacy.start()
    try:
        legacy.assign([tp])
        await legacy.commit({tp: 1})  # the old worker had done the first message
    finally:
        await legacy.stop()

    async with _running(fresh_broker, app_id, _config(_avg_high())) as parts:
        await _poll(lambda: _committed_is(fresh_broker, app_id, tp, 2), "the second committed")
        assert parts.counters["evaluated"] == 1
