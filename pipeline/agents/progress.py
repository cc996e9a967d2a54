"""Whether the rule runtimes may follow the wall clock: the input is processed to its end.

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
as the consumer last saw it (each stage checks its own after every batch). That mark comes
with fetch responses, so it can trail the log by a fetch; :class:`CatchUp` therefore asks for
two consecutive positive answers.

Limit: with several workers, another worker's raw backlog is invisible here. A record it
normalizes more than the rule's ``grace`` after our clock passed its time counts as late.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

__all__ = ["CatchUp"]


class CatchUp:
    """Which partitions may follow the wall clock: caught up now and at the previous check.

    Args:
        partition_caught_up: whether the canonical partitions of a number (both topics) were
            processed up to their high-water marks at the evaluate stage's last check.
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
