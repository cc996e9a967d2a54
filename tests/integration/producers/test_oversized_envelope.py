"""Issue 16, defect 4: one frame never stops a producer.

A 600 KB frame of ``"`` characters is under ``max_frame_bytes`` but JSON-escapes to a 1.2 MB
envelope. Before the fix the sink failed permanently with ``MessageSizeTooLargeError`` and
the producer stopped; now the envelope is dead-lettered (masked excerpt) and the envelopes
after it are delivered. Over TCP against the embedded broker."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import msgspec
import orjson
import pytest
from aiokafka import AIOKafkaConsumer

from producers.envelope import RawEnvelope, decode_envelope, encode_envelope, raw_topic
from producers.sink import DEADLETTER_TOPIC, MAX_MESSAGE_BYTES, DeadLetterRecord, KafkaSink

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

TIMEOUT = 60.0
SECRET = "k-oversized-0123456789abcdef"


async def read_all(bootstrap: str, topic: str, want: int, accept: Any) -> list[bytes]:
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=None,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    found: list[bytes] = []
    try:
        async with asyncio.timeout(TIMEOUT):
            while len(found) < want:
                for records in (await consumer.getmany(timeout_ms=500)).values():
                    found.extend(r.value for r in records if r.value and accept(r.value))
    finally:
        await consumer.stop()
    return found


async def test_an_escaped_frame_too_large_for_kafka_is_dead_lettered_and_the_sink_goes_on(
    fresh_broker: Any,
) -> None:
    # A broker of its own: the session broker may hold raw.aliunid.v1 with other partitions.
    embedded_broker = fresh_broker
    topic = raw_topic("aliunid")
    embedded_broker.create_topics({topic: 1, DEADLETTER_TOPIC: 1})
    stream = f"oversized-{uuid.uuid4().hex[:10]}"
    quotes = f'{{"apiKey": "{SECRET}", "q": "' + '\\"' * 300_000 + '"}'
    big = RawEnvelope("aliunid", stream, 1, quotes)
    assert len(quotes.encode()) < MAX_MESSAGE_BYTES < len(encode_envelope(big))
    small = [
        RawEnvelope(
            "aliunid",
            stream,
            n,
            orjson.dumps({"type": "data", "id": "mp", "data": {"sys": {"kW": n}}}).decode(),
        )
        for n in (2, 3)
    ]

    sink = KafkaSink(embedded_broker.bootstrap, buffer_max_messages=8, client_id=stream)
    try:
        await sink.send(b"mp", small[0])
        await sink.send(b"mp", big)
        await sink.send(b"mp", small[1])
        async with asyncio.timeout(TIMEOUT):
            await sink.flush()
        assert sink.oversized_total == 1
        assert sink.deadlettered_total == 1
    finally:
        async with asyncio.timeout(TIMEOUT):
            await sink.close()

    delivered = await read_all(
        embedded_broker.bootstrap, topic, 2, lambda v: decode_envelope(v).stream == stream
    )
    assert [decode_envelope(v).received_at_ms for v in delivered] == [2, 3]
    letters = await read_all(
        embedded_broker.bootstrap,
        DEADLETTER_TOPIC,
        1,
        lambda v: msgspec.json.decode(v, type=DeadLetterRecord).stream == stream,
    )
    letter = msgspec.json.decode(letters[0], type=DeadLetterRecord)
    assert letter.stage == "producer"
    assert "exceeds the broker message size" in letter.reason
    assert letter.received_at_ms == 1
    assert SECRET not in letter.raw and "apiKey" in letter.raw
    assert len(letter.raw.encode()) <= 1100
