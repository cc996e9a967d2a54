"""KafkaSink against the embedded broker (or real Kafka when STREAMWARDEN_KAFKA_BOOTSTRAP is set).

Topics are shared when the broker is: each test tells its records apart by a unique stream name.
"""

from __future__ import annotations

import asyncio
import re
import uuid
from typing import Any

import msgspec
import orjson
import pytest
from aiokafka import AIOKafkaConsumer

from producers.backoff import Backoff
from producers.envelope import RawEnvelope, decode_envelope, raw_topic
from producers.simulators.aliunid import AliunidSimulator
from producers.sink import EXCERPT_BYTES, DeadLetterRecord, KafkaSink
from tests.integration.producers.helpers import API_KEY, BUSINESS, aliunid_source, producing

pytestmark = pytest.mark.integration

TOPIC = raw_topic("aliunid")
TIMEOUT = 60.0


async def consume(
    bootstrap: str, stream: str, count: int
) -> list[tuple[int, bytes | None, RawEnvelope]]:
    """Read ``TOPIC`` from the start until ``count`` envelopes of ``stream`` arrived."""
    consumer = AIOKafkaConsumer(
        TOPIC,
        bootstrap_servers=bootstrap,
        group_id=None,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    found: list[tuple[int, bytes | None, RawEnvelope]] = []
    try:
        async with asyncio.timeout(TIMEOUT):
            while len(found) < count:
                batches = await consumer.getmany(timeout_ms=500)
                for partition, records in batches.items():
                    for record in records:
                        envelope = decode_envelope(record.value)
                        if envelope.stream == stream:
                            found.append((partition.partition, record.key, envelope))
    finally:
        await consumer.stop()
    return found


def envelope(stream: str, mp: str, n: int) -> RawEnvelope:
    payload = orjson.dumps({"type": "data", "id": mp, "data": {"sys": {"kW": n, "kWh+": 100 + n}}})
    return RawEnvelope(
        "aliunid", stream, 1_700_000_000_000 + n, payload.decode(), {"connection": 1}
    )


async def test_envelopes_arrive_keyed_and_in_order_per_key(embedded_broker: Any) -> None:
    embedded_broker.create_topics({TOPIC: 4})
    stream = f"kafka-sink-{uuid.uuid4().hex[:10]}"
    points = [str(uuid.uuid4()) for _ in range(3)]
    sent = [(points[n % 3].encode(), envelope(stream, points[n % 3], n)) for n in range(30)]

    sink = KafkaSink(embedded_broker.bootstrap, buffer_max_messages=8, client_id="test-kafka-sink")
    try:
        for key, env in sent:
            await sink.send(key, env)
        async with asyncio.timeout(TIMEOUT):
            await sink.flush()
        assert sink.sent_total == 30
        assert sink.buffered == 0
    finally:
        async with asyncio.timeout(TIMEOUT):
            await sink.close()

    received = await consume(embedded_broker.bootstrap, stream, 30)
    assert {(k, e.received_at_ms): e for _, k, e in received} == {
        (k, e.received_at_ms): e for k, e in sent
    }
    for point in points:
        mine = [(p, e) for p, k, e in received if k == point.encode()]
        assert len({p for p, _ in mine}) == 1  # one key, one partition
        times = [e.received_at_ms for _, e in mine]
        assert times == sorted(times)  # order kept per key


class CountingSink:
    """Forwards to a real sink and signals when ``target`` envelopes went through it."""

    def __init__(self, inner: KafkaSink, target: int) -> None:
        self.inner = inner
        self.count = 0
        self.target = target
        self.reached = asyncio.Event()

    async def send(self, key: bytes | None, envelope: RawEnvelope) -> None:
        await self.inner.send(key, envelope)
        self.count += 1
        if self.count >= self.target:
            self.reached.set()

    async def flush(self) -> None:
        await self.inner.flush()

    async def close(self) -> None:
        await self.inner.close()


async def test_simulator_to_kafka_end_to_end(embedded_broker: Any) -> None:
    embedded_broker.create_topics({TOPIC: 4})
    name = f"e2e-{uuid.uuid4().hex[:10]}"
    async with AliunidSimulator(BUSINESS, API_KEY, interval=0.05, seed=3) as sim:
        kafka = KafkaSink(embedded_broker.bootstrap, buffer_max_messages=100, client_id=name)
        sink = CountingSink(kafka, target=12)
        try:
            async with producing(aliunid_source(sim, name=name), sink):
                async with asyncio.timeout(TIMEOUT):
                    await sink.reached.wait()
            # run_source flushed on exit: everything it read is acknowledged.
            assert kafka.sent_total == sink.count
            assert kafka.buffered == 0
        finally:
            async with asyncio.timeout(TIMEOUT):
                await sink.close()
        published = sim.frames_for(1)[: sink.count]
    received = await consume(embedded_broker.bootstrap, name, len(published))
    assert len(received) == len(published)
    for _, key, env in received:
        assert key == orjson.loads(env.payload)["id"].encode()
        assert env.meta == {"connection": 1}
        assert API_KEY not in env.payload
    assert sorted(e.payload for _, _, e in received) == sorted(published)


async def test_a_broker_outage_applies_backpressure_and_loses_nothing(
    private_broker: Any,
) -> None:
    from aiokafka import AIOKafkaProducer

    fresh_broker = private_broker  # its own even when a broker is shared: it is taken down

    fresh_broker.create_topics({TOPIC: 2})
    stream = f"outage-{uuid.uuid4().hex[:10]}"

    def factory() -> Any:
        return AIOKafkaProducer(
            bootstrap_servers=fresh_broker.bootstrap,
            client_id="test-outage",
            acks="all",
            enable_idempotence=True,
            linger_ms=5,
            request_timeout_ms=1500,
        )

    sink = KafkaSink(
        fresh_broker.bootstrap,
        buffer_max_messages=3,
        client_id="test-outage",
        producer_factory=factory,
        retry_backoff=Backoff(initial=0.1, maximum=0.5),
    )
    mp = str(uuid.uuid4())
    try:
        await sink.send(mp.encode(), envelope(stream, mp, 0))
        async with asyncio.timeout(TIMEOUT):
            await sink.flush()
        fresh_broker.embedded.set_down()
        for n in (1, 2, 3):
            await sink.send(mp.encode(), envelope(stream, mp, n))
        blocked = asyncio.create_task(sink.send(mp.encode(), envelope(stream, mp, 4)))
        done, _ = await asyncio.wait({blocked}, timeout=0.5)
        assert not done  # backpressure: the fourth waits for room
        assert sink.buffer_full_total == 1
        fresh_broker.embedded.set_up()
        async with asyncio.timeout(TIMEOUT):
            await blocked
            await sink.flush()
    finally:
        async with asyncio.timeout(TIMEOUT):
            await sink.close()
    received = await consume(fresh_broker.bootstrap, stream, 5)
    assert sorted(e.received_at_ms % 10 for _, _, e in received) == [0, 1, 2, 3, 4]
    assert sink.sent_total == 5


class DeadLetterWatch:
    """Forwards to a real sink and signals once ``target`` dead letters went through it."""

    def __init__(self, inner: KafkaSink, target: int) -> None:
        self.inner = inner
        self.target = target
        self.reached = asyncio.Event()

    async def send(self, key: bytes | None, envelope: RawEnvelope) -> None:
        await self.inner.send(key, envelope)

    async def send_dead_letter(
        self,
        source: str,
        stream: str,
        reason: str,
        excerpt: str | bytes,
        *,
        received_at_ms: int | None = None,
    ) -> None:
        await self.inner.send_dead_letter(
            source, stream, reason, excerpt, received_at_ms=received_at_ms
        )
        if self.inner.deadlettered_total >= self.target:
            self.reached.set()

    async def flush(self) -> None:
        await self.inner.flush()

    async def close(self) -> None:
        await self.inner.close()


async def test_oversized_frames_reach_the_deadletter_topic(embedded_broker: Any) -> None:
    from pipeline.models import DeadLetter
    from pipeline.topics import DEADLETTER_TOPIC

    embedded_broker.create_topics({TOPIC: 4, DEADLETTER_TOPIC: 4})
    name = f"dl-{uuid.uuid4().hex[:10]}"
    limit = 64  # every aliunid frame is larger
    async with AliunidSimulator(BUSINESS, API_KEY, interval=0.05, seed=5) as sim:
        kafka = KafkaSink(embedded_broker.bootstrap, buffer_max_messages=100, client_id=name)
        sink = DeadLetterWatch(kafka, target=3)
        try:
            async with producing(aliunid_source(sim, name=name, max_frame_bytes=limit), sink):
                async with asyncio.timeout(TIMEOUT):
                    await sink.reached.wait()
            assert kafka.buffered == 0
        finally:
            async with asyncio.timeout(TIMEOUT):
                await sink.close()
        refused = sim.frames_for(1)[: kafka.deadlettered_total]

    consumer = AIOKafkaConsumer(
        DEADLETTER_TOPIC,
        bootstrap_servers=embedded_broker.bootstrap,
        group_id=None,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    letters: list[tuple[bytes | None, DeadLetterRecord]] = []
    try:
        async with asyncio.timeout(TIMEOUT):
            while len(letters) < len(refused):
                for records in (await consumer.getmany(timeout_ms=500)).values():
                    for record in records:
                        letter = msgspec.json.decode(record.value, type=DeadLetterRecord)
                        if letter.stream == name:
                            letters.append((record.key, letter))
                            # The pipeline's own dead-letter type reads it too.
                            assert msgspec.json.decode(record.value, type=DeadLetter).stage == (
                                "producer"
                            )
    finally:
        await consumer.stop()
    assert [letter.raw for _, letter in letters] == [f[:EXCERPT_BYTES] for f in refused]
    for key, letter in letters:
        assert key == name.encode()
        assert (letter.stage, letter.source, letter.topic, letter.partition, letter.offset) == (
            "producer",
            "aliunid",
            "",
            -1,
            -1,
        )
        assert re.fullmatch(rf"frame of \d+ bytes exceeds max_frame_bytes={limit}", letter.reason)
        assert API_KEY not in letter.raw
