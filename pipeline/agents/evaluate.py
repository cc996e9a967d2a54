"""Agent ``evaluate_rules``: canonical records -> alert transitions, rule state in a table.

One :class:`~pipeline.rules.runtime.RuleRuntime` per owned partition of ``measurements.v1`` /
``states.v1`` (both keyed by entity, so an entity's records and state share a partition). The
agent feeds records in batches; a one-second timer advances the runtimes of caught-up
partitions to the wall clock, so absence rules, pending ``for`` and window closes fire without
waiting for a next event (while a partition has a backlog, its records' event time drives it:
:mod:`pipeline.agents.progress`).
After a rebalance the runtimes of newly owned partitions are rebuilt from the recovered
changelog table; revoked ones are dropped.

Order of writes: a batch's alert transitions are acknowledged by Kafka *before* its rule state
goes to the changelog. A crash in between leaves the state behind the outputs, never ahead:
the records are evaluated again after the restart and give the same transitions, which the
notification stage ignores (it is idempotent per fingerprint and transition time). The other
order could persist a closed window whose transition was never written, losing it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any

import msgspec

from pipeline.agents.crash import batches_or_exit
from pipeline.agents.deadletter import dead_letter
from pipeline.agents.progress import ConsumeProgress
from pipeline.agents.publish import Publisher
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
from pipeline.topics import ALERTS_TOPIC, STATES_TOPIC
from producers.envelope import now_ms

logger = logging.getLogger(__name__)


class RuleRuntimes:
    """The runtimes of the partitions this worker owns, and how to publish what they emit."""

    def __init__(
        self, engine: RuleEngine, table: Any, producer: Callable[[], Any], counters: dict[str, int]
    ) -> None:
        self.engine = engine
        self._table = table
        self._producer = producer
        self._publisher: Publisher | None = None
        self._counters = counters
        self._runtimes: dict[int, tuple[RuleRuntime, PartitionState[EngineState]]] = {}
        # A batch and a timer advance must not interleave: either could flush state that
        # holds the other's not yet confirmed transitions (see module docstring).
        self.lock = asyncio.Lock()

    def runtime(self, partition: int) -> tuple[RuleRuntime, PartitionState[EngineState]]:
        """The partition's runtime, created and rebuilt from the table on first use."""
        found = self._runtimes.get(partition)
        if found is None:
            state: PartitionState[EngineState] = PartitionState(
                self._table, partition, encode_state, decode_state, (StateFormatError,)
            )
            runtime = RuleRuntime(self.engine, state)
            runtime.rebuild(state.items_decodable())
            found = self._runtimes[partition] = (runtime, state)
            logger.info("rule runtime ready partition=%d timers=%d", partition, runtime.timers)
        return found

    def keep_only(self, partitions: Iterable[int]) -> None:
        """Drop runtimes of partitions no longer owned; create the owned ones (timers!)."""
        owned = set(partitions)
        for partition in list(self._runtimes):
            if partition not in owned:
                del self._runtimes[partition]
        for partition in sorted(owned):
            self.runtime(partition)

    def set_engine(self, engine: RuleEngine) -> None:
        """Swap in reloaded rules; state of unchanged rules carries over (rule hashes)."""
        self.engine = engine
        for runtime, _state in self._runtimes.values():
            runtime.set_engine(engine)

    @property
    def publisher(self) -> Publisher:
        """Created on first use: faust's producer exists only once the app runs."""
        if self._publisher is None:
            self._publisher = Publisher(self._producer())
        return self._publisher

    async def publish(self, transitions: Iterable[AlertTransition]) -> None:
        for transition in transitions:
            self._counters["transitions"] += 1
            await self.publisher.send(
                ALERTS_TOPIC, transition.fingerprint.encode(), encode_record(transition)
            )

    @property
    def partitions(self) -> set[int]:
        """The partitions whose runtimes exist (owned ones)."""
        return set(self._runtimes)

    async def advance(self, clock_ms: int, partitions: Iterable[int]) -> None:
        """Timer body: fire everything due by ``clock_ms`` on these partitions' runtimes.

        The worker passes only partitions that have caught up with their input (see
        :mod:`pipeline.agents.progress`); the others follow their records' event time.
        """
        async with self.lock:
            advanced = [self._runtimes[p] for p in partitions if p in self._runtimes]
            for runtime, _state in advanced:
                await self.publish(runtime.advance(clock_ms))
            await self.publisher.confirm()  # outputs first: see module docstring
            for _runtime, state in advanced:
                state.flush()


def _decode(event: Any) -> Sequence[CanonicalRecord]:
    if event.message.topic == STATES_TOPIC:
        return decode_state_events(event.value)
    return decode_measurements(event.value)


def make_evaluate_rules(
    runtimes: RuleRuntimes,
    *,
    batch_max: int,
    batch_within: float,
    counters: dict[str, int],
    progress: ConsumeProgress | None = None,
) -> Callable[[Any], Awaitable[None]]:
    """Build the agent function over ``measurements.v1`` and ``states.v1``."""

    async def evaluate_rules(stream: Any) -> None:
        async def handle(events: Any) -> None:
            async with runtimes.lock:
                await evaluate(events)

        async def evaluate(events: Any) -> None:
            touched: set[int] = set()
            for event in events:
                try:
                    records = _decode(event)
                except (msgspec.DecodeError, msgspec.ValidationError) as exc:
                    counters["deadlettered"] += 1
                    await dead_letter(
                        runtimes.publisher,
                        event,
                        stage="evaluate",
                        reason=f"not a canonical record: {exc}",
                    )
                    continue
                partition = event.message.partition
                runtime, _state = runtimes.runtime(partition)
                touched.add(partition)
                for record in records:
                    await runtimes.publish(runtime.process(record))
                counters["evaluated"] += len(records)
            await runtimes.publisher.confirm()  # outputs first: see module docstring
            for partition in touched:
                runtimes.runtime(partition)[1].flush()

        await batches_or_exit(
            "evaluate_rules",
            stream.take_events(batch_max, within=batch_within),
            handle,
            progress,
        )

    return evaluate_rules


def wall_clock_ms() -> int:
    """The live driver's clock (replay drives runtimes with event time instead)."""
    return now_ms()
