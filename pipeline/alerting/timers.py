"""Finding due keys without scanning state: an in-memory deadline index.

The dispatcher's state may live in a changelog table that cannot be iterated per event. Every
write goes through :class:`TrackedState`, which records the key's
:func:`~pipeline.alerting.model.deadline` in a heap; a periodic timer asks
:meth:`DeadlineIndex.due` which keys to pass to
:meth:`~pipeline.alerting.dispatch.Dispatcher.expire`. After a restart, rebuild the index once
by iterating the table (:meth:`DeadlineIndex.rebuild`).

:func:`run_due` is that timer's body, and what tests use to step through time.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Iterator, MutableMapping

from pipeline.alerting.dispatch import Dispatcher
from pipeline.alerting.model import Notification, StateValue, deadline

__all__ = ["DeadlineIndex", "TrackedState", "run_due"]


class DeadlineIndex:
    """Keys by deadline: a heap with lazy deletion (stale heap entries are skipped)."""

    def __init__(self) -> None:
        self._heap: list[tuple[int, str]] = []
        self._deadlines: dict[str, int] = {}

    def update(self, key: str, value: StateValue | None) -> None:
        """Record ``key``'s new value (None: deleted)."""
        due = deadline(key, value) if value is not None else None
        if due is None:
            self._deadlines.pop(key, None)
            return
        if self._deadlines.get(key) != due:
            self._deadlines[key] = due
            heapq.heappush(self._heap, (due, key))

    def rebuild(self, items: Iterable[tuple[str, StateValue]]) -> None:
        """Forget everything and index ``items`` (the whole state, after a restart)."""
        self._heap.clear()
        self._deadlines.clear()
        for key, value in items:
            self.update(key, value)

    def next_deadline(self) -> int | None:
        """The earliest deadline, or None."""
        while self._heap:
            due, key = self._heap[0]
            if self._deadlines.get(key) == due:
                return due
            heapq.heappop(self._heap)
        return None

    def due(self, now_ms: int) -> list[str]:
        """Remove and return the keys whose deadline is at or before ``now_ms``, earliest
        first."""
        out: list[str] = []
        while self._heap and self._heap[0][0] <= now_ms:
            due, key = heapq.heappop(self._heap)
            if self._deadlines.get(key) == due:
                del self._deadlines[key]
                out.append(key)
        return out

    def __len__(self) -> int:
        return len(self._deadlines)


class TrackedState(MutableMapping[str, StateValue]):
    """A state mapping that keeps a :class:`DeadlineIndex` up to date as it is written.

    Args:
        inner: where values really live (a dict when omitted).
        index: the index to maintain (a new one when omitted).
    """

    def __init__(
        self,
        inner: MutableMapping[str, StateValue] | None = None,
        index: DeadlineIndex | None = None,
    ) -> None:
        self.inner: MutableMapping[str, StateValue] = {} if inner is None else inner
        self.index = index or DeadlineIndex()

    def __getitem__(self, key: str) -> StateValue:
        return self.inner[key]

    def __setitem__(self, key: str, value: StateValue) -> None:
        self.inner[key] = value
        self.index.update(key, value)

    def __delitem__(self, key: str) -> None:
        del self.inner[key]
        self.index.update(key, None)

    def __iter__(self) -> Iterator[str]:
        return iter(self.inner)

    def __len__(self) -> int:
        return len(self.inner)


def run_due(dispatcher: Dispatcher, state: TrackedState, now_ms: int) -> list[Notification]:
    """Expire every key due at ``now_ms`` and return the notifications, in deadline order."""
    out: list[Notification] = []
    for _ in range(1000):  # expire never reschedules at or before now_ms; this is a backstop
        keys = state.index.due(now_ms)
        if not keys:
            break
        for key in keys:
            out += dispatcher.expire(state, key, now_ms)
    return out
