"""Stage ``evaluate_rules``: canonical records -> alert transitions, rule state on a changelog.

One :class:`~pipeline.rules.runtime.RuleRuntime` per owned partition of ``measurements.v1`` /
``states.v1`` (both keyed by entity, so an entity's records and state share a partition). The
stage feeds records in batches; a one-second timer advances the runtimes of caught-up
partitions to the wall clock, so absence rules, pending ``for`` and window closes fire without
waiting for a next event (while a partition has a backlog, its records' event time drives it:
:mod:`pipeline.agents.progress`).

Why not a faust agent: faust's consumer hands records to an agent one message at a time
across its consumer thread, and at a steady 500 frames/s (on a slow day of this machine) a
canonical message waited p50 ~0.45 s, p99 ~2.6 s before the agent saw it, while a plain
aiokafka consumer reading the same topics in the same run saw them after p50 34 ms, p99 55 ms
(``benchmarks/README.md``). So the stage runs, like the normalize stage, as a plain aiokafka
consumer group (``<app_id>-evaluate``, :func:`evaluate_group`) inside the worker, and keeps its
state in a :class:`~pipeline.agents.changelog.ChangelogTable`: the same changelog topic, keys
and values the faust table had, recovered when the group assigns a partition. The group uses
the range assignor, so partition ``n`` of both input topics goes to the same member.

Order of writes: a batch's alert transitions are acknowledged by Kafka *before* its rule state
goes to the changelog, and its input offsets are committed only once that state is
acknowledged too (in order, at most :data:`BATCHES_IN_FLIGHT` batches waiting, as in the
normalize stage). A crash in between leaves the state behind the outputs, never ahead: the
records are evaluated again after the restart and give the same transitions, which the
notification stage ignores (it is idempotent per fingerprint and transition time). The other
order could persist a closed window whose transition was never written, losing it.

Rebalances: on revocation the stage finishes its batch (a lock), commits what is in flight and
waits for every write; it notes each changelog partition's end offset. On assignment it keeps
the runtimes of partitions it held if their changelog has not moved since (nobody else wrote
them meanwhile), recovers the others from their changelog, and drops what it no longer owns.
A partition the group has never committed starts where the worker's faust group (which ran
this stage until 2026-12) left it, not at the beginning of what Kafka retains.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable, MutableMapping, Sequence
from typing import Any

import msgspec
from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.coordinator.assignors.range import RangePartitionAssignor
from aiokafka.errors import IllegalStateError

from pipeline.agents.changelog import ChangelogTable
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
from pipeline.agents.state import PartitionState
from pipeline.models import (
    AlertTransition,
    CanonicalRecord,
    decode_measurements,
    decode_state_events,
    encode_record,
)
from pipeline.rules.engine import EngineState, RuleEngine, decode_state, encode_state
from pipeline.rules.runtime import RuleRuntime
from pipeline.rules.state import StateFormatError
from pipeline.settings import PipelineSettings
from pipeline.topics import ALERTS_TOPIC, MEASUREMENTS_TOPIC, STATES_TOPIC
from producers.envelope import now_ms

__all__ = ["BATCHES_IN_FLIGHT", "EvaluateStage", "RuleRuntimes", "evaluate_group"]

logger = logging.getLogger(__name__)

GETMANY_TIMEOUT_MS = 100
"""Longest wait for a batch; also how often the stage re-checks whether it has caught up."""
BATCHES_IN_FLIGHT = 4
"""Batches whose state writes may await acknowledgement while the stage works on the next."""
INPUT_TOPICS = (MEASUREMENTS_TOPIC, STATES_TOPIC)


def evaluate_group(app_id: str) -> str:
    """The consumer group of the evaluate stage (it commits the canonical topics' offsets)."""
    return f"{app_id}-evaluate"


class RuleRuntimes:
    """The runtimes of the partitions this worker owns, their state, and where they publish.

    Args:
        engine: the rules.
        table: rule state of the owned partitions (``p<partition>|<key>``).
        counters: the worker's counters (``transitions``, ``evaluated``, ``deadlettered``).

    Attributes:
        owned: the partitions this worker owns now; the timer advances only these.
        lock: held by a batch, a timer advance and a rebalance step: none of them may
            interleave with another (either could flush state that holds the other's
            unconfirmed transitions, or state of a partition being handed over).
    """

    def __init__(
        self, engine: RuleEngine, table: ChangelogTable, counters: MutableMapping[str, int]
    ) -> None:
        self.engine = engine
        self.table = table
        self._publisher: Publisher | None = None
        self._counters = counters
        self._runtimes: dict[int, tuple[RuleRuntime, PartitionState[EngineState]]] = {}
        self.owned: set[int] = set()
        self.lock = asyncio.Lock()

    def bind(self, publisher: Publisher) -> None:
        """Publish transitions and state through ``publisher`` (the stage's producer)."""
        self._publisher = publisher

    @property
    def publisher(self) -> Publisher:
        if self._publisher is None:
            raise RuntimeError("RuleRuntimes used before its stage bound a publisher")
        return self._publisher

    def runtime(self, partition: int) -> tuple[RuleRuntime, PartitionState[EngineState]]:
        """The partition's runtime, created and rebuilt from the table on first use."""
        found = self._runtimes.get(partition)
        if found is None:
            state: PartitionState[EngineState] = PartitionState(
                self.table, partition, encode_state, decode_state, (StateFormatError,)
            )
            runtime = RuleRuntime(self.engine, state)
            runtime.rebuild(state.items_decodable())
            found = self._runtimes[partition] = (runtime, state)
            logger.info("rule runtime ready partition=%d timers=%d", partition, runtime.timers)
        return found

    @property
    def held(self) -> set[int]:
        """Partitions whose runtime exists (owned, or held across a rebalance)."""
        return set(self._runtimes)

    def drop(self, partitions: Iterable[int]) -> None:
        """Forget the runtimes and local state of ``partitions``."""
        gone = [p for p in partitions if p in self._runtimes]
        for partition in gone:
            del self._runtimes[partition]
        self.table.drop(gone)
        self.owned.difference_update(gone)

    def set_engine(self, engine: RuleEngine) -> None:
        """Swap in reloaded rules; state of unchanged rules carries over (rule hashes)."""
        self.engine = engine
        for runtime, _state in self._runtimes.values():
            runtime.set_engine(engine)

    async def publish(self, transitions: Iterable[AlertTransition]) -> None:
        for transition in transitions:
            self._counters["transitions"] += 1
            await self.publisher.send(
                ALERTS_TOPIC, transition.fingerprint.encode(), encode_record(transition)
            )

    async def write_state(self, partitions: Iterable[int]) -> None:
        """After the outputs are acknowledged: these partitions' changed state to the
        changelog (sent, not awaited; the publisher's next confirm covers it)."""
        for partition in partitions:
            found = self._runtimes.get(partition)
            if found is not None:
                found[1].flush()
        await self.table.publish(self.publisher)

    async def advance(self, clock_ms: int, partitions: Iterable[int]) -> None:
        """Timer body: fire everything due by ``clock_ms`` on these partitions' runtimes.

        The worker passes only partitions that have caught up with their input (see
        :mod:`pipeline.agents.progress`); the others follow their records' event time.
        Partitions not owned (any more) are skipped.
        """
        async with self.lock:
            advanced = [p for p in partitions if p in self.owned and p in self._runtimes]
            for partition in advanced:
                await self.publish(self._runtimes[partition][0].advance(clock_ms))
            await self.publisher.confirm()  # outputs first: see module docstring
            await self.write_state(advanced)

    async def evaluate(self, batches: dict[Any, list[Any]]) -> None:
        """One batch of canonical messages (by topic partition): transitions out, confirmed,
        then the state they changed to the changelog. Caller holds :attr:`lock`."""
        counters = self._counters
        touched: list[int] = []
        for tp, messages in batches.items():
            runtime, _state = self.runtime(tp.partition)
            touched.append(tp.partition)
            for message in messages:
                try:
                    records = _decode(message.topic, message.value)
                except (msgspec.DecodeError, msgspec.ValidationError) as exc:
                    counters["deadlettered"] += 1
                    await dead_letter_record(
                        self.publisher,
                        message,
                        stage="evaluate",
                        reason=f"not a canonical record: {exc}",
                    )
                    continue
                for record in records:
                    await self.publish(runtime.process(record))
                counters["evaluated"] += len(records)
        await self.publisher.confirm()  # outputs first: see module docstring
        await self.write_state(touched)


def _decode(topic: str, value: bytes | None) -> Sequence[CanonicalRecord]:
    if value is None:
        raise msgspec.DecodeError("no value")
    if topic == STATES_TOPIC:
        return decode_state_events(value)
    return decode_measurements(value)


class EvaluateStage:
    """The evaluate consumer group member of one worker; see the module docstring.

    Args:
        settings: bootstrap, app id, batch size, linger, fetch wait, timeouts.
        runtimes: the rule runtimes this stage feeds and owns the partitions of.
    """

    def __init__(self, settings: PipelineSettings, runtimes: RuleRuntimes) -> None:
        self._settings = settings
        self._runtimes = runtimes
        self._caught_up: set[int] = set()
        self._held_ends: dict[int, int] = {}
        """Changelog end offset of each partition held at the last revocation."""
        self._commits: OrderedCommits | None = None
        self._restore: AIOKafkaConsumer | None = None
        self._consumer: AIOKafkaConsumer | None = None
        self._publisher: Publisher | None = None
        self._assignments = 0
        """Assignments made ready so far (a batch taken before the last one is not used)."""
        self._positioned: set[TopicPartition] = set()
        """Input partitions the last assignment moved to a start of its own."""

    def partition_caught_up(self, partition: int) -> bool:
        """Partition ``partition`` of both input topics was processed up to its high-water
        mark at the stage's last check (every :data:`GETMANY_TIMEOUT_MS` at most)."""
        return partition in self._caught_up

    async def run(self) -> None:
        """Consume until cancelled (the worker stopping); a failed write ends the process."""
        settings = self._settings
        consumer = stage_consumer(
            settings,
            evaluate_group(settings.app_id),
            partition_assignment_strategy=(RangePartitionAssignor,),
        )
        self._consumer = consumer
        restore = self._restore = stage_consumer(settings, None)
        producer = stage_producer(settings, settings.producer_linger_ms)
        publisher = self._publisher = Publisher(KafkaSender(producer))
        self._runtimes.bind(publisher)
        consumer.subscribe(list(INPUT_TOPICS), listener=_Ownership(self))
        await producer.start()
        try:
            await restore.start()
            try:
                await consumer.start()
                try:
                    await self._loop(consumer, publisher)
                finally:
                    await consumer.stop()
            finally:
                await restore.stop()
        finally:
            await producer.stop()

    async def _loop(self, consumer: AIOKafkaConsumer, publisher: Publisher) -> None:
        commits = self._commits = OrderedCommits(
            consumer_commit(consumer, "evaluate"), BATCHES_IN_FLIGHT, interval=COMMIT_INTERVAL_S
        )
        committer = asyncio.create_task(run_or_exit(commits, "evaluate_rules"))
        runtimes = self._runtimes
        try:
            while True:
                assignments = self._assignments
                batches = await consumer.getmany(
                    timeout_ms=GETMANY_TIMEOUT_MS, max_records=self._settings.batch_max
                )
                if batches:
                    try:
                        async with runtimes.lock:
                            if self._assignments == assignments:
                                owned = _owned_only(consumer, batches, runtimes.owned)
                            else:  # taken before the last assignment was ready: none of it
                                owned = _owned_only(consumer, batches, set(), self._positioned)
                            if owned:
                                await runtimes.evaluate(owned)
                                written = publisher.take_pending()
                    except Exception as exc:  # a bug, or Kafka refused our writes
                        exit_now("evaluate_rules", exc)
                    if owned:
                        offsets = {tp: records[-1].offset + 1 for tp, records in owned.items()}
                        await commits.add(offsets, written)
                self._caught_up = await self._check_caught_up(consumer)
        finally:
            self._commits = None
            committer.cancel()

    async def _check_caught_up(self, consumer: AIOKafkaConsumer) -> set[int]:
        owned = self._runtimes.owned
        lagging: set[int] = set()
        seen: set[int] = set()
        for tp in consumer.assignment():
            seen.add(tp.partition)
            highwater = consumer.highwater(tp)
            if highwater is None or await consumer.position(tp) < highwater:
                lagging.add(tp.partition)
        return (owned & seen) - lagging

    async def _recover(self, partitions: set[int]) -> None:
        runtimes = self._runtimes
        if self._restore is None:
            raise RuntimeError("the evaluate stage is not running")
        runtimes.drop(partitions)
        await runtimes.table.recover(self._restore, partitions)
        for partition in sorted(partitions):
            runtimes.runtime(partition)

    async def on_revoked(self) -> None:
        """The group takes every partition back (eager rebalance): finish the batch, commit
        what is in flight, wait for every write, and note where each changelog ends.

        A failure here ends the process: the next owner must not start from state this
        worker may still change.
        """
        runtimes = self._runtimes
        try:
            async with runtimes.lock:
                self._caught_up = set()
                held = sorted(runtimes.owned)
                runtimes.owned = set()
                if self._commits is not None:
                    await self._commits.drain()
                if self._publisher is not None:
                    await self._publisher.confirm()  # a timer's state writes
                self._held_ends = await self._changelog_ends(held)
        except Exception as exc:
            exit_now("evaluate_rules", exc)

    async def on_assigned(self, partitions: set[int]) -> None:
        """Own ``partitions``: keep held runtimes whose changelog did not move, recover the
        rest, drop the partitions that went elsewhere.

        A failure here ends the process (aiokafka would only log it, and the stage would
        wait for partitions it never gets ready).
        """
        runtimes = self._runtimes
        try:
            async with runtimes.lock:
                runtimes.drop(runtimes.held - partitions)
                kept: set[int] = set()
                candidates = sorted(partitions & runtimes.held)
                if candidates:
                    ends = await self._changelog_ends(candidates)
                    kept = {p for p in candidates if ends.get(p) == self._held_ends.get(p)}
                fresh = partitions - kept
                positioned: set[TopicPartition] = set()
                if fresh:
                    await self._recover(fresh)
                    positioned = await self._adopt_legacy_offsets(fresh)
                runtimes.owned = set(partitions)
                self._held_ends = {}
                self._positioned = positioned
                self._assignments += 1
        except Exception as exc:
            exit_now("evaluate_rules", exc)
        logger.info(
            "evaluate stage assigned partitions=%s kept=%s recovered=%s",
            _listed(partitions),
            _listed(kept),
            _listed(fresh),
        )

    async def _adopt_legacy_offsets(self, partitions: set[int]) -> set[TopicPartition]:
        """Input partitions this stage's group never committed start where the worker's faust
        group left them, if it did: until 2026-12 this stage was a faust agent of that group.
        Starting at the beginning instead would evaluate a whole retained topic again and
        notify old alerts once more (the notify stage keeps delivered marks for a day).

        Returns:
            The partitions moved.
        """
        consumer = self._consumer
        if consumer is None:
            return set()
        tps = [TopicPartition(t, p) for t in INPUT_TOPICS for p in sorted(partitions)]
        never = [tp for tp in tps if await consumer.committed(tp) is None]
        if not never:
            return set()
        admin = AIOKafkaAdminClient(bootstrap_servers=self._settings.kafka_bootstrap)
        await admin.start()
        try:
            legacy = await admin.list_consumer_group_offsets(
                self._settings.app_id, partitions=never
            )
        finally:
            await admin.close()
        adopted = {tp: meta.offset for tp, meta in legacy.items() if meta.offset >= 0}
        for tp, offset in adopted.items():
            consumer.seek(tp, offset)
        if adopted:
            logger.info(
                "evaluate stage starts where the faust group %s left partitions=%d",
                self._settings.app_id,
                len(adopted),
            )
        return set(adopted)

    async def _changelog_ends(self, partitions: Sequence[int]) -> dict[int, int]:
        if not partitions or self._restore is None:
            return {}
        topic = self._runtimes.table.topic
        ends = await self._restore.end_offsets([TopicPartition(topic, p) for p in partitions])
        return {tp.partition: offset for tp, offset in ends.items()}


def _owned_only(
    consumer: AIOKafkaConsumer,
    batches: dict[Any, list[Any]],
    owned: set[int],
    positioned: set[Any] | frozenset[Any] = frozenset(),
) -> dict[Any, list[Any]]:
    """The records of ``batches`` on owned partitions. The others arrived around a rebalance,
    before the stage was ready for them: the consumer is moved back to their first offset, so
    they are fetched again once their state is (or by their new owner, from the commit),
    except on ``positioned`` partitions, which the assignment already moved where to start."""
    ready: dict[Any, list[Any]] = {}
    for tp, records in batches.items():
        if tp.partition in owned:
            ready[tp] = records
        elif tp not in positioned:
            with contextlib.suppress(IllegalStateError):  # not assigned any more
                consumer.seek(tp, records[0].offset)
    return ready


def _listed(partitions: Iterable[int]) -> str:
    return ",".join(map(str, sorted(partitions))) or "none"


class _Ownership(ConsumerRebalanceListener):  # type: ignore[misc]
    """Tells the stage when the group moves partitions."""

    def __init__(self, stage: EvaluateStage) -> None:
        self._stage = stage

    async def on_partitions_revoked(self, revoked: Any) -> None:
        await self._stage.on_revoked()

    async def on_partitions_assigned(self, assigned: Any) -> None:
        await self._stage.on_assigned({tp.partition for tp in assigned})


def wall_clock_ms() -> int:
    """The live driver's clock (replay drives runtimes with event time instead)."""
    return now_ms()
