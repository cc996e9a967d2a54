"""Agent ``evaluate_rules``: canonical records -> alert transitions, rule state in a faust table.

One :class:`~pipeline.rules.runtime.RuleRuntime` per owned partition of ``measurements.v1`` /
``states.v1`` (both keyed by entity, so an entity's records and its state share a partition;
faust assigns the ``alert_state`` changelog partition of the same number with them). The agent
takes events in batches (one canonical message holds up to 500 records); a one-second timer
advances the runtimes of caught-up partitions to the wall clock, so absence rules, pending
``for`` and window closes fire without waiting for a next event (while a partition has a
backlog, its records' event time drives it: :mod:`pipeline.agents.progress`).

Per message: decode (undecodable -> dead letter) -> for each record the pure runtime
(:meth:`~pipeline.rules.runtime.RuleRuntime.process`) -> transitions out. A record whose
evaluation raises is tried once more, then dead-lettered with the reason, and the partition
moves on: one bad record cannot stop the stage nor make it crash in a loop
(:func:`evaluate_once`).

Order of writes: a batch's alert transitions are acknowledged by Kafka *before* its rule state
goes to the changelog (:meth:`RuleRuntimes.write_state`: queued on the
:class:`~pipeline.runtime.tables.BatchedTable`, sent as one record batch per partition before
the batch returns; faust flushes the producer before it commits the batch's offsets). A crash
in between leaves the state behind the outputs, never ahead: the records are evaluated again
after the restart and give the same transitions, which the notification stage ignores (it is
idempotent per fingerprint and transition time). The other order could persist a closed
window whose transition was never written, losing it.

Rebalances: faust stops the streams and waits for the batch in hand before it revokes;
:meth:`RuleRuntimes.on_revoked` then takes the lock (a timer advance finishes first), forgets
ownership and waits until every state write is acknowledged, so the next owner's recovery
reads all of it. On assignment the table's store reloads its partitions
(:class:`~pipeline.runtime.tables.ChangelogStore`) and a runtime whose partition was reloaded
is rebuilt from it on first use.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable, MutableMapping, Sequence
from typing import Any

import msgspec

from pipeline.agents.batch_times import BatchTimes
from pipeline.agents.crash import batches_or_exit
from pipeline.agents.deadletter import dead_letter
from pipeline.agents.progress import ConsumeProgress
from pipeline.agents.publish import Publisher
from pipeline.models import (
    AlertTransition,
    CanonicalRecord,
    decode_measurements,
    decode_state_events,
    encode_record,
)
from pipeline.rules.engine import EngineState, Record, RuleEngine, decode_state, encode_state
from pipeline.rules.runtime import RuleRuntime
from pipeline.rules.state import StateFormatError
from pipeline.runtime.tables import BatchedTable, PartitionView
from pipeline.topics import ALERTS_TOPIC, STATES_TOPIC
from producers.envelope import now_ms

__all__ = ["RuleRuntimes", "evaluate_once", "make_evaluate_rules", "wall_clock_ms"]

logger = logging.getLogger(__name__)

ATTEMPTS = 2
"""Tries of one record's evaluation before it is dead-lettered (the first and one retry)."""


class RuleRuntimes:
    """The runtimes of the partitions this worker owns, their state, and where they publish.

    Args:
        engine: the rules.
        table: the ``alert_state`` table (``p<partition>|<key>`` -> encoded rule state).
        producer: returns faust's producer (it exists once the app runs).
        counters: the worker's counters (``evaluated``, ``transitions``, ``deadlettered``,
            ``evaluate_failed``).

    Attributes:
        owned: partitions this worker owns and has recovered; the timer advances only these.
        lock: held by a batch, a timer advance and a revocation: none may interleave with
            another (either could flush state that holds the other's unconfirmed transitions,
            or state of a partition being handed over).
        progress: how far the agent got through each input partition.
    """

    def __init__(
        self,
        engine: RuleEngine,
        table: BatchedTable,
        producer: Callable[[], Any],
        counters: MutableMapping[str, int],
    ) -> None:
        self.engine = engine
        self.table = table
        self._producer = producer
        self._publisher: Publisher | None = None
        self._counters = counters
        self._runtimes: dict[int, tuple[RuleRuntime, PartitionView[EngineState], int]] = {}
        self.owned: set[int] = set()
        self.lock = asyncio.Lock()
        self.progress = ConsumeProgress()

    @property
    def publisher(self) -> Publisher:
        """Created on first use: faust's producer exists only once the app runs."""
        if self._publisher is None:
            self._publisher = Publisher(self._producer())
        return self._publisher

    def runtime(self, partition: int) -> tuple[RuleRuntime, PartitionView[EngineState]]:
        """The partition's runtime, (re)built from the table when its partition was
        (re)loaded since."""
        loads = self.table.store.loads.get(partition, 0)
        found = self._runtimes.get(partition)
        if found is None or found[2] != loads:
            state: PartitionView[EngineState] = self.table.view(
                partition, encode_state, decode_state, (StateFormatError,)
            )
            runtime = RuleRuntime(self.engine, state)
            runtime.rebuild(state.items_decodable())
            found = self._runtimes[partition] = (runtime, state, loads)
            logger.info("rule runtime ready partition=%d timers=%d", partition, runtime.timers)
        return found[0], found[1]

    def recovered(self, partitions: Iterable[int]) -> None:
        """Faust finished an assignment: own ``partitions`` (recovered), forget the rest."""
        owned = set(partitions)
        for partition in list(self._runtimes):
            if partition not in owned:
                del self._runtimes[partition]
        self.progress.forget_all()
        self.owned = owned
        logger.info(
            "rule partitions owned partitions=%s", ",".join(map(str, sorted(owned))) or "none"
        )

    async def on_revoked(self) -> None:
        """Partitions are about to move: no timer may advance them, every write acknowledged."""
        async with self.lock:
            self.owned = set()
            await self.table.flush_confirmed()
            if self._publisher is not None:
                await self._publisher.confirm()

    def set_engine(self, engine: RuleEngine) -> None:
        """Swap in reloaded rules; state of unchanged rules carries over (rule hashes)."""
        self.engine = engine
        for runtime, _state, _loads in self._runtimes.values():
            runtime.set_engine(engine)

    async def publish(self, transitions: Iterable[AlertTransition]) -> None:
        for transition in transitions:
            self._counters["transitions"] += 1
            await self.publisher.send(
                ALERTS_TOPIC, transition.fingerprint.encode(), encode_record(transition)
            )

    async def write_state(self, partitions: Iterable[int]) -> None:
        """After the outputs are acknowledged: these partitions' changed state to the
        changelog, one record batch per partition (sent, not awaited: faust flushes the
        producer before it commits)."""
        for partition in partitions:
            found = self._runtimes.get(partition)
            if found is not None:
                found[1].flush()
        await self.table.flush()

    async def advance(self, clock_ms: int, partitions: Iterable[int]) -> None:
        """Timer body: fire everything due by ``clock_ms`` on these partitions' runtimes.

        The worker passes only partitions that have caught up with their input (see
        :mod:`pipeline.agents.progress`); the others follow their records' event time.
        Partitions not owned (any more) are skipped.
        """
        async with self.lock:
            advanced = [p for p in partitions if p in self.owned]
            for partition in advanced:
                await self.publish(self.runtime(partition)[0].advance(clock_ms))
            await self.publisher.confirm()  # outputs first: see module docstring
            await self.write_state(advanced)
            await self.table.flush_confirmed()

    async def evaluate(self, events: Sequence[Any]) -> None:
        """One batch of canonical messages: transitions out, confirmed, then the state they
        changed to the changelog. Caller holds :attr:`lock`.

        Raises:
            RuntimeError: an event of a partition this worker has not recovered (faust
                resumes a stream only after recovery: a bug, the worker must stop).
        """
        counters = self._counters
        touched: set[int] = set()
        for event in events:
            message = event.message
            partition = message.partition
            if partition not in self.table.store.partitions:
                raise RuntimeError(f"event of partition {partition}, whose state is not loaded")
            try:
                records = _decode(message.topic, message.value)
            except (msgspec.DecodeError, msgspec.ValidationError) as exc:
                counters["deadlettered"] += 1
                await dead_letter(
                    self.publisher, event, stage="evaluate", reason=f"not a canonical record: {exc}"
                )
                continue
            runtime, _state = self.runtime(partition)
            touched.add(partition)
            for index, record in enumerate(records):
                outcome = evaluate_once(runtime, record)
                if isinstance(outcome, str):
                    counters["evaluate_failed"] += 1
                    counters["deadlettered"] += 1
                    reason = f"record {index + 1} of {len(records)}: {outcome}"
                    await dead_letter(self.publisher, event, stage="evaluate", reason=reason)
                    continue
                await self.publish(outcome)
            counters["evaluated"] += len(records)
        await self.publisher.confirm()  # outputs first: see module docstring
        await self.write_state(touched)
        self.progress.note(events)


def evaluate_once(runtime: RuleRuntime, record: Record) -> list[AlertTransition] | str:
    """The record's transitions, or why it could not be evaluated after :data:`ATTEMPTS` tries.

    A rule engine that raises is a bug (or a record it cannot handle); trying again covers a
    passing condition, and giving up after that keeps the partition moving: the record goes
    to the dead letters with the reason, never into a crash loop.
    """
    failure: Exception | None = None
    for attempt in range(ATTEMPTS):
        try:
            return runtime.process(record)
        except Exception as exc:
            failure = exc
            logger.exception(
                "rule evaluation failed attempt=%d entity=%s", attempt + 1, record.entity
            )
    return f"rule evaluation failed: {type(failure).__name__}: {str(failure)[:200]}"


def _decode(topic: str, value: bytes | None) -> Sequence[CanonicalRecord]:
    if value is None:
        raise msgspec.DecodeError("no value")
    if topic == STATES_TOPIC:
        return decode_state_events(value)
    return decode_measurements(value)


def make_evaluate_rules(
    runtimes: RuleRuntimes,
    *,
    batch_max: int,
    batch_within: float,
    batch_times: BatchTimes | None = None,
) -> Callable[[Any], Awaitable[None]]:
    """Build the agent function over ``measurements.v1`` and ``states.v1``."""
    times = batch_times or BatchTimes()

    async def evaluate_rules(stream: Any) -> None:
        async def handle(events: Any) -> None:
            async with runtimes.lock:
                with times.timed("evaluate"):
                    await runtimes.evaluate(events)

        await batches_or_exit(
            "evaluate_rules", stream.take_events(batch_max, within=batch_within), handle
        )

    return evaluate_rules


def wall_clock_ms() -> int:
    """The live driver's clock (replay drives runtimes with event time instead)."""
    return now_ms()
