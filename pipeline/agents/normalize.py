"""Agent ``normalize_raw``: raw envelopes -> canonical measurements, bad frames -> dead letters."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable, Iterator
from typing import Any

import msgspec

from pipeline.agents.crash import batches_or_exit
from pipeline.agents.deadletter import dead_letter
from pipeline.agents.progress import ConsumeProgress
from pipeline.agents.publish import Publisher
from pipeline.errors import BadInputError
from pipeline.models import CanonicalRecord, Measurement, encode_records
from pipeline.normalize import normalize_envelope
from pipeline.topics import MEASUREMENTS_TOPIC, STATES_TOPIC, partition_of
from producers.envelope import decode_envelope

logger = logging.getLogger(__name__)


MAX_RECORDS_PER_MESSAGE = 500
"""Canonical records per Kafka message (about 100 KB of JSON): well under Kafka's 1 MB."""


class CanonicalBatch:
    """A batch's canonical records, by output topic and partition, in arrival order.

    Why: one Kafka message per partition and batch (not per record) is what keeps the
    stateful hop out of faust's per-message machinery. The partition is the one Kafka's
    default partitioner gives the entity, so an entity's records (and its rule state) always
    live on the same partition, in order.
    """

    def __init__(self, partitions: int) -> None:
        self._partitions = partitions
        self._groups: dict[tuple[str, int], list[CanonicalRecord]] = {}

    def add(self, records: Iterable[CanonicalRecord]) -> None:
        for record in records:
            topic = MEASUREMENTS_TOPIC if isinstance(record, Measurement) else STATES_TOPIC
            partition = partition_of(record.entity.encode(), self._partitions)
            self._groups.setdefault((topic, partition), []).append(record)

    def messages(self) -> Iterator[tuple[str, int, bytes]]:
        """``(topic, partition, JSON array)`` of at most :data:`MAX_RECORDS_PER_MESSAGE`."""
        for (topic, partition), records in self._groups.items():
            for start in range(0, len(records), MAX_RECORDS_PER_MESSAGE):
                chunk = records[start : start + MAX_RECORDS_PER_MESSAGE]
                yield topic, partition, encode_records(chunk)


def make_normalize_raw(
    producer: Callable[[], Any],
    *,
    partitions: int,
    batch_max: int,
    batch_within: float,
    counters: dict[str, int],
    progress: ConsumeProgress | None = None,
) -> Callable[[Any], Awaitable[None]]:
    """Build the agent function; ``producer`` returns faust's transport producer.

    Measurements go to ``measurements``, state events to ``states``, on the partition of their
    entity (``partitions`` of each), so one entity's records stay in order on one partition
    number of both; each batch writes one JSON array per topic and partition
    (:class:`CanonicalBatch`).
    """

    async def normalize_raw(stream: Any) -> None:
        publisher = Publisher(producer())
        deadletter = publisher

        async def handle(events: Any) -> None:
            batch = CanonicalBatch(partitions)
            for event in events:
                try:
                    envelope = decode_envelope(event.value)
                    records = normalize_envelope(envelope)
                except BadInputError as exc:
                    counters["deadlettered"] += 1
                    await dead_letter(deadletter, event, stage="normalize", reason=exc.reason)
                    continue
                except (msgspec.DecodeError, msgspec.ValidationError) as exc:
                    counters["deadlettered"] += 1
                    await dead_letter(
                        deadletter, event, stage="normalize", reason=f"not a raw envelope: {exc}"
                    )
                    continue
                except Exception as exc:
                    # A normalizer bug must not lose the frame nor stop the worker.
                    logger.exception("normalizer failed unexpectedly topic=%s", event.message.topic)
                    counters["deadlettered"] += 1
                    await dead_letter(
                        deadletter,
                        event,
                        stage="normalize",
                        reason=f"unexpected {type(exc).__name__} in normalizer",
                    )
                    continue
                batch.add(records)
                counters["measurements"] += len(records)
                counters["raw"] += 1
            for topic, partition, value in batch.messages():
                await publisher.send(topic, None, value, partition=partition)
            await publisher.confirm()

        await batches_or_exit(
            "normalize_raw",
            stream.take_events(batch_max, within=batch_within),
            handle,
            progress,
        )

    return normalize_raw
