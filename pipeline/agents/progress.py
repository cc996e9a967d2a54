"""Whether the rule runtimes may follow the wall clock: the input is processed to its end.

The rule runtimes follow event time while there is a backlog and wall-clock time only once
the worker has caught up. Why: after a restart (or a takeover) the backlog holds records
from before; advancing a runtime to *now* first would close their windows and expire their
``for`` and absence deadlines early, and the records would then count as late and be lost.
Records advance a runtime's clock by their own event time (as in ``streamwarden replay``), so
while catching up the outcome is the one replay gives; once caught up, the wall-clock timer
takes over for what only time can fire (silence, a window closing with no further record).

"Caught up" for a partition means both canonical partitions of that number were processed up
to their high-water mark as faust's consumer last saw it (``Consumer.highwater``, per topic
partition, from the fetch responses; :class:`ConsumeProgress` keeps the next offset the agent
has processed, or the committed one before it processed any), and this worker's normalize
stage has caught up with the raw partitions it owns (its backlog becomes canonical records
later). The high-water mark comes with fetch responses, so it can trail the log by a fetch;
:class:`CatchUp` therefore asks for two consecutive positive answers.

Limit: with several workers, another worker's raw backlog is invisible here. A record it
normalizes more than the rule's ``grace`` after our clock passed its time counts as late.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from faust.types import TP

from pipeline.topics import MEASUREMENTS_TOPIC, STATES_TOPIC

__all__ = ["CatchUp", "ConsumeProgress"]


class ConsumeProgress:
    """Next offset to process per input partition, as noted by the agent after each batch."""

    def __init__(self) -> None:
        self._done: dict[TP, int] = {}

    def note(self, events: Iterable[Any]) -> None:
        """Record that ``events`` (a handled batch) are processed."""
        done = self._done
        for event in events:
            message = event.message
            following = message.offset + 1
            if done.get(message.tp, -1) < following:
                done[message.tp] = following

    def forget_all(self) -> None:
        """After an assignment: what was noted may belong to partitions now elsewhere."""
        self._done.clear()

    def lag(self, consumer: Any, tp: TP) -> int | None:
        """Records of ``tp`` not processed yet, or None when unknown (not fetched yet).

        Args:
            consumer: faust's consumer (``highwater``, ``assignment`` and the committed
                offsets it keeps after seeking to them).
        """
        if tp not in consumer.assignment():
            return None
        highwater = consumer.highwater(tp)
        if highwater is None:
            return None
        # After an assignment nothing was noted yet: the committed offset is where we resume.
        committed = consumer._committed_offset.get(tp) or 0
        return max(0, int(highwater) - max(self._done.get(tp, 0), int(committed)))

    def caught_up(self, consumer: Any, partition: int) -> bool:
        """Both canonical partitions of ``partition`` processed to their high-water marks."""
        return all(
            self.lag(consumer, TP(topic, partition)) == 0
            for topic in (MEASUREMENTS_TOPIC, STATES_TOPIC)
        )


class CatchUp:
    """Which partitions may follow the wall clock: caught up now and at the previous check.

    Args:
        partition_caught_up: whether the canonical partitions of a number (both topics) were
            processed up to their high-water marks.
        upstream_caught_up: whether the normalize stage has caught up with every raw
            partition it owns (its backlog becomes canonical records later).
    """

    def __init__(
        self,
        partition_caught_up: Callable[[int], bool],
        upstream_caught_up: Callable[[], bool] = lambda: True,
    ) -> None:
        self._partition_caught_up = partition_caught_up
        self._upstream_caught_up = upstream_caught_up
        self._previous: set[int] = set()
        self.lagging: set[int] = set()

    def check(self, partitions: Iterable[int]) -> set[int]:
        """The partitions of ``partitions`` that were caught up at this and the last check."""
        asked = set(partitions)
        upstream = self._upstream_caught_up()
        now = {p for p in asked if upstream and self._partition_caught_up(p)}
        stable = now & self._previous
        self._previous = now
        self.lagging = asked - stable
        return stable
