"""Baseline: the plain aiokafka loop every pipeline figure is compared with.

consume (getmany batches) -> JSON-decode the envelope and its payload -> compare a value ->
produce a small result: the least a Kafka-to-Kafka alerting step must do, with no framework.
"""

from __future__ import annotations

import asyncio
import time
import uuid

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer


async def run_baseline(
    bootstrap: str, topics: list[str], expected: int, out_topic: str
) -> dict[str, float]:
    """Consume ``expected`` messages from ``topics``; returns events/s and elapsed seconds."""
    consumer = AIOKafkaConsumer(
        *topics,
        bootstrap_servers=bootstrap,
        group_id=f"bench-baseline-{uuid.uuid4().hex[:8]}",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        max_poll_records=5000,
        fetch_max_bytes=16 * 1024 * 1024,
        max_partition_fetch_bytes=4 * 1024 * 1024,
    )
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, acks="all", linger_ms=5, max_batch_size=256 * 1024
    )
    await consumer.start()
    await producer.start()
    seen = alerts = 0
    started: float | None = None
    try:
        while seen < expected:
            batches = await consumer.getmany(timeout_ms=1000, max_records=5000)
            if started is None and batches:
                started = time.perf_counter()
            futures = []
            for records in batches.values():
                for record in records:
                    seen += 1
                    envelope = orjson.loads(record.value or b"{}")
                    frame = orjson.loads(envelope["payload"])
                    value = (
                        frame.get("data", {}).get("sys", {}).get("kW")
                        if isinstance(frame, dict)
                        else None
                    )
                    if isinstance(value, int | float) and value > 40:
                        alerts += 1
                        futures.append(
                            await producer.send(out_topic, b"%d" % int(value), key=record.key)
                        )
            if futures:
                await asyncio.gather(*futures)
            if batches:
                await consumer.commit()
        elapsed = time.perf_counter() - (started or time.perf_counter())
    finally:
        await producer.stop()
        await consumer.stop()
    return {
        "events": float(seen),
        "elapsed_s": elapsed,
        "events_per_s": seen / elapsed if elapsed else 0.0,
    }
