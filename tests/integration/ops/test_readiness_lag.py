"""``/readyz`` follows the stage groups' committed offsets on a real broker: not ready while
a group lags more than the bound, ready once it committed up to the end."""

from __future__ import annotations

import json
import time
from pathlib import Path

import aiohttp
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.structs import OffsetAndMetadata

from pipeline.agents.normalize import normalize_group
from pipeline.ops.server import OpsServer
from pipeline.ops.sources import WorkerSources
from pipeline.settings import PipelineSettings
from pipeline.topics import all_topics
from tests.integration.conftest import BrokerHandle
from tests.integration.ops.support import new_entity, produce_frames

pytestmark = pytest.mark.integration


async def _commit(bootstrap: str, group: str, offset: int) -> None:
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False
    )
    await consumer.start()
    try:
        tp = TopicPartition("raw.aliunid.v1", 0)
        consumer.assign([tp])
        await consumer.commit({tp: OffsetAndMetadata(offset, "")})
    finally:
        await consumer.stop()


async def _readyz(base: str) -> tuple[int, dict]:
    async with aiohttp.ClientSession() as session, session.get(f"{base}/readyz") as response:
        return response.status, json.loads(await response.read())


async def test_not_ready_until_the_group_caught_up(
    fresh_broker: BrokerHandle, unique_suffix: str, tmp_path: Path
) -> None:
    app_id = f"sw-ready-{unique_suffix}"
    fresh_broker.create_topics({t.name: t.partitions for t in all_topics(app_id, 1)})
    await produce_frames(fresh_broker.bootstrap, new_entity(), [1.0] * 50)
    settings = PipelineSettings(
        kafka_bootstrap=fresh_broker.bootstrap,
        kafka_embedded=fresh_broker.is_embedded,
        partitions=1,
        app_id=app_id,
        ops_port=0,
        ops_ready_max_lag=10,
        ops_refresh_s=0.2,
        data_dir=tmp_path,
    )
    sources = WorkerSources(counters={}, readiness=lambda: {"assigned": True})
    server = OpsServer(settings, sources)
    await server.start()
    try:
        base = server.url.rstrip("/")
        await _commit(fresh_broker.bootstrap, normalize_group(app_id), 30)
        await server.refresh()
        status, body = await _readyz(base)
        assert status == 503
        assert body["not_ready"] == ["caught_up:normalize"]
        assert body["checks"]["caught_up:normalize"]["lag"] == 20
        assert body["checks"]["caught_up:normalize"]["detail"] == "lag=20 max=10"

        await _commit(fresh_broker.bootstrap, normalize_group(app_id), 45)
        deadline = time.monotonic() + 30
        while (answer := await _readyz(base))[0] != 200 and time.monotonic() < deadline:
            await server.refresh()
        status, body = answer
        assert status == 200, body
        assert body["checks"]["caught_up:normalize"]["lag"] == 5
    finally:
        await server.stop()
