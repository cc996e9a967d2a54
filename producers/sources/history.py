"""Read back what a producer already wrote, so a restarted producer resumes where it stopped.

The producer's own output is its durable state: Kafka's ``raw.<kind>.v1`` topic, or the JSONL
recording of ``streamwarden record``. No other store exists, so nothing can disagree with what
was actually delivered: an envelope the sink had buffered but not delivered when the process
died is not in the history, and the upstream replays it.

What may be missing is bounded: the Kafka sink delivers its buffer in batches of at most
:data:`~producers.sink._MAX_BATCH` envelopes, one batch at a time, so when a producer dies only
envelopes of its last batch can be missing, in any order across partitions (an earlier one lost,
a later one acknowledged). Callers therefore read back the newest :data:`TAIL` envelopes, not
just the newest one, and treat that tail as possibly incomplete.

* Kafka: the newest ``count`` envelopes the caller ``wants`` of every partition of the raw
  topic, read backwards from the end in growing windows (a restart reads a few thousand
  records, not the topic). Keys spread one stream over partitions; within a partition a
  stream's envelopes are in the order the producer sent them.
* JSONL: the file's last ``count`` wanted lines (the file is read once, front to back); lines
  that are not envelopes (a line cut short by a crash) are skipped.

:func:`history_of` picks the reader that matches a sink; other sinks (tests' memory sinks)
have no history.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

import msgspec

from producers.envelope import RawEnvelope, decode_envelope, raw_topic
from producers.errors import ProducerError
from producers.sink import JsonlSink, KafkaSink

__all__ = [
    "TAIL",
    "EnvelopeHistory",
    "HistoryError",
    "JsonlHistory",
    "KafkaHistory",
    "history_of",
]

logger = logging.getLogger(__name__)

#: The first window read back from the end of a partition; it grows 4x per step.
_FIRST_WINDOW = 64
#: Envelopes to read back: at least the Kafka sink's largest batch (only the last batch of a
#: killed producer can be partly missing).
TAIL = 500


class HistoryError(ProducerError):
    """What the producer wrote cannot be read back (so where to resume is unknown).

    Attributes:
        retryable: True when trying again later may work (Kafka unreachable).
    """

    def __init__(self, message: str, *, retryable: bool = False) -> None:
        super().__init__(message)
        self.retryable = retryable


Wanted = Callable[[RawEnvelope], bool]


class EnvelopeHistory(Protocol):
    """Where a producer's earlier envelopes can be read back."""

    async def tail(self, kind: str, wanted: Wanted, count: int) -> list[RawEnvelope]:
        """The newest ``count`` ``wanted`` envelopes (of each Kafka partition), oldest first."""
        ...


class KafkaHistory:
    """Reads back ``raw.<kind>.v1``.

    Args:
        bootstrap: ``host:port[,host:port]``.
        client_id: Kafka client id.
        request_timeout: bound on the whole read-back, seconds.
    """

    def __init__(
        self, bootstrap: str, *, client_id: str = "streamwarden-resume", request_timeout: float = 30
    ) -> None:
        self.bootstrap = bootstrap
        self.client_id = client_id
        self.request_timeout = request_timeout

    async def tail(self, kind: str, wanted: Wanted, count: int) -> list[RawEnvelope]:
        """The newest ``count`` ``wanted`` envelopes of every partition, partition by partition.

        Raises:
            HistoryError: Kafka could not be read within ``request_timeout``.
        """
        from aiokafka import AIOKafkaConsumer
        from aiokafka.errors import KafkaError

        topic = raw_topic(kind)
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap,
            client_id=self.client_id,
            enable_auto_commit=False,
            group_id=None,
        )
        try:
            async with asyncio.timeout(self.request_timeout):
                try:
                    await consumer.start()
                    found: list[RawEnvelope] = []
                    partitions = await _partitions(self.bootstrap, self.client_id, topic)
                    for partition in sorted(partitions):
                        found += await _tail_of_partition(consumer, topic, partition, wanted, count)
                    return found
                finally:
                    await consumer.stop()
        except (KafkaError, OSError, TimeoutError) as exc:
            raise HistoryError(
                f"cannot read back {topic} from Kafka bootstrap={self.bootstrap}: "
                f"{type(exc).__name__}: {exc}".rstrip(": "),
                retryable=True,
            ) from exc


async def _partitions(bootstrap: str, client_id: str, topic: str) -> set[int]:
    """The topic's partitions; none when it does not exist (nothing was ever written)."""
    from aiokafka import AIOKafkaClient

    client = AIOKafkaClient(bootstrap_servers=bootstrap, client_id=client_id)
    try:
        await client.bootstrap()
        cluster = await client.fetch_all_metadata()
    finally:
        await client.close()
    return set(cluster.partitions_for_topic(topic) or ())


async def _tail_of_partition(
    consumer: object, topic: str, partition: int, wanted: Wanted, count: int
) -> list[RawEnvelope]:
    from aiokafka import AIOKafkaConsumer, TopicPartition

    assert isinstance(consumer, AIOKafkaConsumer)
    tp = TopicPartition(topic, partition)
    consumer.assign([tp])
    begin = (await consumer.beginning_offsets([tp]))[tp]
    high = (await consumer.end_offsets([tp]))[tp]
    found: list[RawEnvelope] = []
    window = _FIRST_WINDOW
    while high > begin and len(found) < count:
        low = max(begin, high - window)
        consumer.seek(tp, low)
        chunk: list[RawEnvelope] = []
        position = low
        while position < high:
            batches = await consumer.getmany(tp, timeout_ms=1000, max_records=500)
            for record in batches.get(tp, []):
                position = record.offset + 1
                if record.offset >= high:
                    break
                envelope = _decode(record.value)
                if envelope is not None and wanted(envelope):
                    chunk.append(envelope)
            if not batches:
                position = await consumer.position(tp)
        found = chunk + found
        high = low
        window *= 4
    return found[-count:]


class JsonlHistory:
    """Reads back a JSONL recording (``streamwarden record --out``)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    async def tail(self, kind: str, wanted: Wanted, count: int) -> list[RawEnvelope]:
        """The file's last ``count`` ``wanted`` envelopes (none when it does not exist).

        Raises:
            HistoryError: the file exists but cannot be read.
        """
        found: deque[RawEnvelope] = deque(maxlen=count)
        try:
            with self.path.open("rb") as file:
                for line in file:
                    envelope = _decode(line.rstrip(b"\n"))
                    if envelope is not None and envelope.source == kind and wanted(envelope):
                        found.append(envelope)
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise HistoryError(
                f"cannot read back the recording path={self.path}: {exc.strerror}"
            ) from exc
        return list(found)


def history_of(sink: object) -> EnvelopeHistory | None:
    """The history matching ``sink`` (Kafka or a JSONL recording), or None.

    A sink that wraps another (``producers.ops.MeteredSink`` counts for ``/metrics``) names it
    as ``inner``: the history is the wrapped sink's."""
    while not isinstance(sink, KafkaSink | JsonlSink) and hasattr(sink, "inner"):
        sink = sink.inner
    if isinstance(sink, KafkaSink):
        return KafkaHistory(sink.bootstrap, client_id=f"{sink.client_id}-resume")
    if isinstance(sink, JsonlSink):
        return JsonlHistory(sink.path)
    return None


def _decode(value: bytes | None) -> RawEnvelope | None:
    if not value:
        return None
    try:
        return decode_envelope(value)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return None
