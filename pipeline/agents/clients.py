"""The aiokafka consumer and producer of the normalize stage (the worker's one plain consumer
group; the stateful stages are faust agents), configured in one place.

It must read and write with the worker's guarantees (manual commits in order, idempotent
producers acknowledged by every replica) and its fetch wait and timeouts.
"""

from __future__ import annotations

from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from pipeline.app import MAX_BATCH_BYTES, MAX_FETCH_BYTES
from pipeline.settings import PipelineSettings

__all__ = ["stage_consumer", "stage_producer"]


def stage_consumer(
    settings: PipelineSettings, group_id: str | None, **extra: Any
) -> AIOKafkaConsumer:
    """A consumer that never commits by itself and starts at the earliest offset when its
    group has none; in a group (``group_id``), with the worker's session, heartbeat and
    rebalance timeouts. ``extra`` are further aiokafka options (an assignor)."""
    options: dict[str, Any] = {
        "bootstrap_servers": settings.kafka_bootstrap,
        "group_id": group_id,
        "enable_auto_commit": False,
        "auto_offset_reset": "earliest",
        "fetch_max_wait_ms": settings.effective_fetch_max_wait_ms,
        "max_partition_fetch_bytes": MAX_FETCH_BYTES,
    }
    if group_id is not None:
        options.update(
            session_timeout_ms=int(settings.effective_session_timeout_s * 1000),
            heartbeat_interval_ms=int(settings.effective_heartbeat_interval_s * 1000),
            rebalance_timeout_ms=int(settings.rebalance_timeout_s * 1000),
        )
    return AIOKafkaConsumer(**options, **extra)


def stage_producer(settings: PipelineSettings, linger_ms: int) -> AIOKafkaProducer:
    """An idempotent producer acknowledged by every in-sync replica, batching ``linger_ms``."""
    return AIOKafkaProducer(
        bootstrap_servers=settings.kafka_bootstrap,
        acks="all",
        enable_idempotence=True,
        linger_ms=linger_ms,
        max_batch_size=MAX_BATCH_BYTES,
    )
