"""Stage ``normalize``: raw envelopes -> canonical records, bad frames -> dead letters.

The stage is stateless, so it runs as a plain aiokafka consumer group inside the worker, not as
a faust agent: faust's per-message path (consumer thread, conductor, stream, acks) cost more
than the normalizers themselves (profile in ``benchmarks/README.md``). Each ``getmany`` batch
is normalized and its output written (canonical records as one JSON array per topic and
partition, see :class:`CanonicalBatch`; bad frames to ``deadletter.v1`` with the reason). The
stage goes on with the next batch while Kafka acknowledges those writes; a batch's offsets are
committed, in order, only once its writes and those of every earlier batch are acknowledged
(:class:`~pipeline.agents.commits.OrderedCommits`, at most :data:`BATCHES_IN_FLIGHT` batches
waiting). At-least-once: a crash or a rebalance before the commit makes the next owner
normalize the batch again, and the rule engine treats the repeated records as redeliveries.
Before partitions move in a rebalance the stage waits for its in-flight commits. A failure to
write ends the process at once (:func:`~pipeline.agents.crash.exit_now`), before the failed
batch or any later one is committed.

The consumer group is ``<app_id>-normalize`` (:func:`normalize_group`); every worker joins it,
so raw partitions are shared among workers like the faust agents' partitions are.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Iterator, MutableMapping, Sequence
from typing import Any

import msgspec
from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener

from pipeline.agents.batch_times import BatchTimes
from pipeline.agents.clients import stage_consumer, stage_producer
from pipeline.agents.commits import (
    COMMIT_INTERVAL_S,
    OrderedCommits,
    consumer_commit,
    run_or_exit,
)
from pipeline.agents.crash import exit_now
from pipeline.agents.deadletter import dead_letter_record
from pipeline.agents.publish import KafkaSender, Publisher
from pipeline.errors import BadInputError
from pipeline.models import CanonicalRecord, Measurement, encode_records
from pipeline.normalize import normalize_envelope
from pipeline.settings import PipelineSettings
from pipeline.topics import MEASUREMENTS_TOPIC, STATES_TOPIC, partition_of, raw_topics
from producers.envelope import decode_envelope

__all__ = [
    "BATCHES_IN_FLIGHT",
    "MAX_RECORDS_PER_MESSAGE",
    "CanonicalBatch",
    "NormalizeStage",
    "normalize_group",
]

logger = logging.getLogger(__name__)

MAX_RECORDS_PER_MESSAGE = 500
"""Canonical records per Kafka message (about 100 KB of JSON): well under Kafka's 1 MB."""
GETMANY_TIMEOUT_MS = 100
"""Longest wait for a batch; also how often the stage re-checks whether it has caught up."""
BATCHES_IN_FLIGHT = 4
"""Batches whose writes may await acknowledgement while the stage works on the next one."""


def normalize_group(app_id: str) -> str:
    """The consumer group of the normalize stage (it commits the raw topics' offsets)."""
    return f"{app_id}-normalize"


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
        """Group one frame's records. A frame's records mostly share their entity, so its
        partition is looked up once per run of equal entities, not once per record."""
        groups = self._groups
        entity: str | None = None
        partition = 0
        for record in records:
            topic = MEASUREMENTS_TOPIC if isinstance(record, Measurement) else STATES_TOPIC
            if record.entity != entity:
                entity = record.entity
                partition = partition_of(entity.encode(), self._partitions)
            group = groups.get((topic, partition))
            if group is None:
                group = groups[(topic, partition)] = []
            group.append(record)

    def messages(self) -> Iterator[tuple[str, int, bytes]]:
        """``(topic, partition, JSON array)`` of at most :data:`MAX_RECORDS_PER_MESSAGE`."""
        for (topic, partition), records in self._groups.items():
            for start in range(0, len(records), MAX_RECORDS_PER_MESSAGE):
                chunk = records[start : start + MAX_RECORDS_PER_MESSAGE]
                yield topic, partition, encode_records(chunk)


class NormalizeStage:
    """The normalize consumer group member of one worker; see the module docstring.

    Args:
        settings: bootstrap, app id, partitions, batch size, linger, fetch wait, timeouts.
        counters: the worker's counters (``raw``, ``measurements``, ``deadlettered``).

    Attributes:
        caught_up: every raw partition this member owns was processed up to its high-water
            mark at the last check, and Kafka acknowledged every canonical record written (the
            rule runtimes follow wall-clock time only then, see
            :mod:`pipeline.agents.progress`).
    """

    def __init__(
        self,
        settings: PipelineSettings,
        counters: MutableMapping[str, int],
        batch_times: BatchTimes | None = None,
    ) -> None:
        self._settings = settings
        self._counters = counters
        self._batch_times = batch_times or BatchTimes()
        self._assigned = False
        self._commits: OrderedCommits | None = None
        self.caught_up = False

    @property
    def assigned(self) -> bool:
        """The group has assigned this member its partitions (possibly none) since the last
        revocation."""
        return self._assigned

    async def on_ownership(self, assigned: bool) -> None:
        """Partitions were revoked (False) or assigned (True; possibly none) by the group.

        On revocation the batches in flight are committed first, while this member still
        owns their partitions (their writes are acknowledged by then, or the worker exits).
        """
        self._assigned = assigned
        if not assigned:
            self.caught_up = False
            if self._commits is not None:
                await self._commits.drain()

    async def run(self) -> None:
        """Consume until cancelled (the worker stopping); a failed write ends the process."""
        settings = self._settings
        consumer = stage_consumer(settings, normalize_group(settings.app_id))
        producer = stage_producer(settings, settings.canonical_linger_ms)
        consumer.subscribe(list(raw_topics()), listener=_Ownership(self))
        try:
            await producer.start()
            await consumer.start()
            await self._loop(consumer, Publisher(KafkaSender(producer)))
        finally:  # also when stopped while starting: an unstopped client leaks its sockets
            await consumer.stop()
            await producer.stop()

    async def _loop(self, consumer: AIOKafkaConsumer, publisher: Publisher) -> None:
        commits = self._commits = OrderedCommits(
            consumer_commit(consumer, "normalize"), BATCHES_IN_FLIGHT, interval=COMMIT_INTERVAL_S
        )
        committer = asyncio.create_task(run_or_exit(commits, "normalize"))
        try:
            while True:
                batches = await consumer.getmany(
                    timeout_ms=GETMANY_TIMEOUT_MS, max_records=self._settings.batch_max
                )
                if batches:
                    try:
                        with self._batch_times.timed("normalize"):
                            await self._normalize(batches, publisher)
                    except Exception as exc:  # a bug, or the producer refused: see docstring
                        exit_now("normalize", exc)
                    offsets = {tp: records[-1].offset + 1 for tp, records in batches.items()}
                    await commits.add(offsets, publisher.take_pending())
                self.caught_up = (
                    self._assigned and not commits.unacknowledged and await _caught_up(consumer)
                )
        finally:
            self._commits = None
            committer.cancel()

    async def _normalize(self, batches: dict[Any, list[Any]], publisher: Publisher) -> None:
        counters = self._counters
        batch = CanonicalBatch(self._settings.partitions)
        for messages in batches.values():
            for message in messages:
                outcome = _normalize_one(message)
                if not isinstance(outcome, str):
                    batch.add(outcome)
                    counters["raw"] += 1
                    counters["measurements"] += len(outcome)
                    if not outcome:  # a control frame (pong, heartbeat...): see pipeline.normalize
                        counters["control_frames"] += 1
                    continue
                counters["deadlettered"] += 1
                await dead_letter_record(publisher, message, stage="normalize", reason=outcome)
        for topic, partition, value in batch.messages():
            await publisher.send(topic, None, value, partition=partition)
            counters["canonical_messages"] += 1


ATTEMPTS = 2
"""Tries of a frame whose normalizer raises unexpectedly (the first and one retry)."""


def _normalize_one(message: Any) -> Sequence[CanonicalRecord] | str:
    """One raw record's canonical records, or the dead-letter reason when it has none.

    Bad input is dead-lettered at once; a normalizer that raises anything else is tried once
    more, then the frame is dead-lettered too: one frame never stops the partition.
    """
    failure: Exception | None = None
    for _attempt in range(ATTEMPTS):
        try:
            return normalize_envelope(decode_envelope(message.value))
        except BadInputError as exc:
            return exc.reason
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            return f"not a raw envelope: {exc}"
        except Exception as exc:
            # A normalizer bug must not lose the frame nor stop the worker.
            failure = exc
            logger.exception("normalizer failed unexpectedly topic=%s", message.topic)
    return f"unexpected {type(failure).__name__} in normalizer"


class _Ownership(ConsumerRebalanceListener):  # type: ignore[misc]
    """Tells the stage when the group moves partitions.

    Until the group has assigned this member its partitions (after a restart, while the dead
    member's session runs out), an empty assignment means "not known yet", not "nothing to
    do": the stage must not report itself caught up, or the rule runtimes would move to the
    wall clock ahead of the raw backlog the dead member left.
    """

    def __init__(self, stage: NormalizeStage) -> None:
        self._stage = stage

    async def on_partitions_revoked(self, revoked: Any) -> None:
        await self._stage.on_ownership(False)

    async def on_partitions_assigned(self, assigned: Any) -> None:
        await self._stage.on_ownership(True)


async def _caught_up(consumer: AIOKafkaConsumer) -> bool:
    """Every owned raw partition processed up to its high-water mark (as last fetched)."""
    for tp in consumer.assignment():
        highwater = consumer.highwater(tp)
        if highwater is None or await consumer.position(tp) < highwater:
            return False
    return True
