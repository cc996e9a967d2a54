"""How far the worker's agents got through their input partitions, against what Kafka holds.

The rule runtimes follow event time while there is a backlog and wall-clock time only once
the worker has caught up. Why: after a restart (or a takeover) the backlog holds records
from before; advancing a runtime to *now* first would close their windows and expire their
``for`` and absence deadlines early, and the records would then count as late and be lost.
Records advance a runtime's clock by their own event time (as in ``streamwarden replay``), so
while catching up the outcome is the one replay gives; once caught up, the wall-clock timer
takes over for what only time can fire (silence, a window closing with no further record).

"Caught up" for a partition means every input partition that feeds it — the canonical
partitions of that number *and* every raw partition this worker's normalize stage owns, since
its backlog becomes canonical records later — has been processed up to its high-water mark,
as the consumer last saw it. That mark comes with fetch responses, so it can trail the log by a
fetch; :class:`CatchUp` therefore asks for two consecutive positive answers.

Limit: with several workers, another worker's raw backlog is invisible here. A record it
normalizes more than the rule's ``grace`` after our clock passed its time counts as late.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from faust.types import TP

__all__ = ["CatchUp", "ConsumeProgress"]


class ConsumeProgress:
    """Next offset to process per input partition, as noted by the agents after each batch.

    Args:
        consumer: returns faust's consumer (it exists only once the app runs).
    """

    def __init__(self, consumer: Callable[[], Any]) -> None:
        self._consumer = consumer
        self._done: dict[TP, int] = {}

    def note(self, events: Iterable[Any]) -> None:
        """Record that ``events`` (a handled batch) are processed."""
        done = self._done
        for event in events:
            message = event.message
            tp = message.tp
            following = message.offset + 1
            if done.get(tp, -1) < following:
                done[tp] = following

    def lag(self, tp: TP) -> int | None:
        """Records of ``tp`` not yet processed, or None when unknown (not fetched yet)."""
        consumer = self._consumer()
        if tp not in consumer.assignment():
            return None
        highwater = consumer.highwater(tp)
        if highwater is None:
            return None
        # After a restart nothing was noted yet: the committed offset is where we resume.
        committed = getattr(consumer, "_committed_offset", {}).get(tp) or 0
        return max(0, int(highwater) - max(self._done.get(tp, 0), int(committed)))

    def caught_up(self, tps: Iterable[TP]) -> bool:
        """Every one of ``tps`` processed up to its known high-water mark."""
        return all(self.lag(tp) == 0 for tp in tps)


class CatchUp:
    """Which partitions may follow the wall clock: caught up now and at the previous check.

    Args:
        progress: the agents' progress.
        feeds: partition number -> the canonical partitions that feed its rule runtime.
        upstream_caught_up: whether the normalize stage has caught up with every raw
            partition it owns (its backlog becomes canonical records later).
    """

    def __init__(
        self,
        progress: ConsumeProgress,
        feeds: Callable[[int], list[TP]],
        upstream_caught_up: Callable[[], bool] = lambda: True,
    ) -> None:
        self._progress = progress
        self._feeds = feeds
        self._upstream_caught_up = upstream_caught_up
        self._previous: set[int] = set()
        self.lagging: set[int] = set()

    def check(self, partitions: Iterable[int]) -> set[int]:
        """The partitions of ``partitions`` that were caught up at this and the last check."""
        asked = set(partitions)
        upstream = self._upstream_caught_up()
        now = {p for p in asked if upstream and self._progress.caught_up(self._feeds(p))}
        stable = now & self._previous
        self._previous = now
        self.lagging = asked - stable
        return stable
