"""The evaluate stage over Kafka (TCP): canonical arrays in, alert transitions out, rule state
on its changelog, recovered by the next member; bad messages dead-lettered."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from confluent_kafka import Consumer
from confluent_kafka import TopicPartition as CTopicPartition

from pipeline.agents.changelog import ChangelogTable
from pipeline.agents.evaluate import EvaluateStage, RuleRuntimes, evaluate_group
from pipeline.models import Measurement, encode_records
from pipeline.rules.engine import RuleEngine
from pipeline.settings import PipelineSettings
from pipeline.topics import (
    ALERT_STATE_TABLE,
    ALERTS_TOPIC,
    DEADLETTER_TOPIC,
    MEASUREMENTS_TOPIC,
    STATES_TOPIC,
    all_topics,
    changelog_topic,
    partition_of,
)
from tests.integration.conftest import BrokerHandle
from tests.unit.pipeline.rules.helpers import meas, rule

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

PARTITIONS = 4
ENTITY = "mp-window"


def _settings(broker: BrokerHandle, app_id: str) -> PipelineSettings:
    return PipelineSettings(
        kafka_bootstrap=broker.bootstrap,
        kafka_embedded=broker.is_embedded,
        app_id=app_id,
        partitions=PARTITIONS,
        batch_max=100,
    )


def _engine() -> RuleEngine:
    """avg over tumbling 10 s windows above 40: its open window is state worth keeping."""
    return RuleEngine([rule("aggregate", name="avg-high", channels=["console"])])


async def _write(
    broker: BrokerHandle, messages: list[tuple[str, int, bytes]], key: bytes | None = None
) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap, acks="all")
    await producer.start()
    try:
        for topic, partition, value in messages:
            await producer.send_and_wait(topic, value, key=key, partition=partition)
    finally:
        await producer.stop()


def _array(*records: Measurement) -> tuple[str, int, bytes]:
    partition = partition_of(records[0].entity.encode(), PARTITIONS)
    return MEASUREMENTS_TOPIC, partition, encode_records(list(records))


async def _committed(broker: BrokerHandle, group: str, topics: list[str]) -> int:
    consumer = AIOKafkaConsumer(bootstrap_servers=broker.bootstrap, group_id=group)
    await consumer.start()
    try:
        total = 0
        for topic in topics:
            for partition in range(PARTITIONS):
                total += await consumer.committed(TopicPartition(topic, partition)) or 0
        return total
    finally:
        await consumer.stop()


async def _ends(broker: BrokerHandle, topics: list[str]) -> int:
    consumer = AIOKafkaConsumer(bootstrap_servers=broker.bootstrap)
    await consumer.start()
    try:
        tps = [TopicPartition(t, p) for t in topics for p in range(PARTITIONS)]
        return sum((await consumer.end_offsets(tps)).values())
    finally:
        await consumer.stop()


async def _poll(condition: Callable[[], Awaitable[bool]], what: str) -> None:
    for _ in range(450):
        if await condition():
            return
        await asyncio.sleep(0.2)
    raise AssertionError(f"not within 90 s: {what}")


@contextlib.asynccontextmanager
async def _running(
    broker: BrokerHandle, app_id: str, counters: dict[str, int]
) -> AsyncIterator[EvaluateStage]:
    """A stage with fresh runtimes (nothing in memory), until everything is committed."""
    table = ChangelogTable(changelog_topic(app_id, ALERT_STATE_TABLE))
    stage = EvaluateStage(_settings(broker, app_id), RuleRuntimes(_engine(), table, counters))
    task = asyncio.create_task(stage.run())
    inputs = [MEASUREMENTS_TOPIC, STATES_TOPIC]

    async def all_committed() -> bool:
        ends = await _ends(broker, inputs)
        return await _committed(broker, evaluate_group(app_id), inputs) >= ends

    try:
        yield stage
        await _poll(all_committed, "every canonical message committed")
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


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


async def test_window_state_survives_a_new_member_and_bad_messages_are_dead_lettered(
    fresh_broker: BrokerHandle,
) -> None:
    app_id = f"eval-{uuid.uuid4().hex[:8]}"
    fresh_broker.create_topics({t.name: t.partitions for t in all_topics(app_id, PARTITIONS)})
    counters: dict[str, int] = defaultdict(int)

    # First member: two readings of 90 open the window [0 s, 10 s); nothing fires yet.
    await _write(fresh_broker, [_array(meas(90, 1, entity=ENTITY), meas(90, 2, entity=ENTITY))])
    async with _running(fresh_broker, app_id, counters):
        pass
    assert counters["evaluated"] == 2 and counters["transitions"] == 0
    changelog = _read(
        fresh_broker.bootstrap, changelog_topic(app_id, ALERT_STATE_TABLE), PARTITIONS
    )
    partition = partition_of(ENTITY.encode(), PARTITIONS)
    assert changelog and {m.partition() for m in changelog} == {partition}
    assert all(m.key().startswith(f"p{partition}|".encode()) for m in changelog)

    # A second member, with nothing in memory: a 0 in the same window, then readings that
    # close it and the next one. Average 60 only if the two 90s were recovered (0 if not).
    bad = (MEASUREMENTS_TOPIC, partition, b"\xff not a canonical array")
    await _write(
        fresh_broker,
        [
            _array(meas(0, 3, entity=ENTITY)),
            bad,
            _array(meas(0, 12, entity=ENTITY)),
            _array(meas(0, 21, entity=ENTITY)),
        ],
    )
    async with _running(fresh_broker, app_id, counters) as stage:
        pass
    assert stage.partition_caught_up(partition)

    alerts = [orjson.loads(m.value()) for m in _read(fresh_broker.bootstrap, ALERTS_TOPIC, 1)]
    assert [(a["rule"], a["state"], a["value"]) for a in alerts] == [
        ("avg-high", "firing", 60.0),
        ("avg-high", "resolved", 0.0),
    ]
    letters = [orjson.loads(m.value()) for m in _read(fresh_broker.bootstrap, DEADLETTER_TOPIC, 4)]
    assert len(letters) == 1 and letters[0]["stage"] == "evaluate"
    assert "not a canonical record" in letters[0]["reason"]
    assert letters[0]["partition"] == partition


async def test_a_rebalance_keeps_unchanged_partitions_and_recovers_moved_ones(
    fresh_broker: BrokerHandle,
) -> None:
    """Revocation notes where each changelog ends; on assignment a partition whose changelog
    did not move keeps its runtime (no re-read), one another member wrote is recovered."""
    app_id = f"eval-{uuid.uuid4().hex[:8]}"
    fresh_broker.create_topics({t.name: t.partitions for t in all_topics(app_id, PARTITIONS)})
    counters: dict[str, int] = defaultdict(int)
    partition = partition_of(ENTITY.encode(), PARTITIONS)
    other = (partition + 1) % PARTITIONS
    await _write(fresh_broker, [_array(meas(90, 1, entity=ENTITY))])
    async with _running(fresh_broker, app_id, counters) as stage:
        runtimes = stage._runtimes
        await _poll(lambda: _true(runtimes.owned == set(range(PARTITIONS))), "assigned")
        await _poll(lambda: _true(counters["evaluated"] == 1), "evaluated")
        before = {p: runtimes.runtime(p)[0] for p in range(PARTITIONS)}

        await stage.on_revoked()
        assert runtimes.owned == set()
        written = (changelog_topic(app_id, ALERT_STATE_TABLE), other, b"from another member")
        await _write(fresh_broker, [written], key=f"p{other}|k".encode())
        await stage.on_assigned(set(range(PARTITIONS)))

        assert runtimes.owned == set(range(PARTITIONS))
        after = {p: runtimes.runtime(p)[0] for p in range(PARTITIONS)}
        assert [after[p] is before[p] for p in range(PARTITIONS)] == [
            p != other for p in range(PARTITIONS)
        ]
        held = runtimes.table.data
        assert held[f"p{other}|k".encode()] == b"from another member"  # recovered
        assert any(k.startswith(f"p{partition}|".encode()) for k in held)  # kept as it was
    assert counters["evaluated"] == 1


async def _true(value: bool) -> bool:
    return value


async def test_a_first_start_resumes_where_the_faust_group_of_earlier_versions_left(
    fresh_broker: BrokerHandle,
) -> None:
    """Until 2026-12 the faust group ``<app_id>`` consumed the canonical topics: a worker of
    this version must not evaluate what that group had already committed."""
    app_id = f"eval-{uuid.uuid4().hex[:8]}"
    fresh_broker.create_topics({t.name: t.partitions for t in all_topics(app_id, PARTITIONS)})
    partition = partition_of(ENTITY.encode(), PARTITIONS)
    await _write(
        fresh_broker,
        [_array(meas(90, 1, entity=ENTITY)), _array(meas(90, 2, entity=ENTITY))],
    )
    legacy = AIOKafkaConsumer(bootstrap_servers=fresh_broker.bootstrap, group_id=app_id)
    await legacy.start()
    try:
        tp = TopicPartition(MEASUREMENTS_TOPIC, partition)
        legacy.assign([tp])
        await legacy.commit({tp: 1})  # the old worker had done the first message
    finally:
        await legacy.stop()

    counters: dict[str, int] = defaultdict(int)
    async with _running(fresh_broker, app_id, counters):
        pass
    assert counters["evaluated"] == 1
    assert await _committed(fresh_broker, evaluate_group(app_id), [MEASUREMENTS_TOPIC]) == 2
