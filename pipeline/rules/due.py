"""Keys by due time, compact enough for a million timers.

A heap of ``(due, key)`` tuples costs a tuple, an int and a heap slot per key (about 100
bytes): at 100k entities x 10 metrics of open windows that is 100 MB on its own. Window
deadlines cluster (every entry of a tumbling window is due at the same window end), so here
keys that share a due time share a bucket (a list slot per key, and one int object for the
time) and the heap holds only the distinct due times.

One current due time per key, the earliest asked for (:meth:`DueIndex.schedule`); when a key
is scheduled earlier its old bucket entry stays and is skipped when its time comes (lazy
deletion). :meth:`DueIndex.pop_due` yields keys in order of due time, then key.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterator

__all__ = ["DueIndex"]


class DueIndex:
    """Earliest due time per key, popped in (due, key) order."""

    def __init__(self) -> None:
        self._due: dict[str, int] = {}
        # due -> (that due as the one int object every key due then shares, keys)
        self._buckets: dict[int, tuple[int, list[str]]] = {}
        self._times: list[int] = []

    def __len__(self) -> int:
        """Keys with a due time."""
        return len(self._due)

    def get(self, key: str) -> int | None:
        return self._due.get(key)

    def keys(self) -> list[str]:
        """The keys with a due time (a copy)."""
        return list(self._due)

    def clear(self) -> None:
        self._due.clear()
        self._buckets.clear()
        self._times.clear()

    def schedule(self, key: str, due: int) -> None:
        """Make ``key`` due at ``due`` unless it is already due at that time or earlier."""
        current = self._due.get(key)
        if current is not None and current <= due:
            return
        bucket = self._buckets.get(due)
        if bucket is None:
            bucket = self._buckets[due] = (due, [])
            heapq.heappush(self._times, due)
        shared_due, keys = bucket
        keys.append(key)
        self._due[key] = shared_due

    def earliest(self) -> int | None:
        """The earliest due time that still has a key (stale buckets are dropped)."""
        while self._times:
            due = self._times[0]
            if any(self._due.get(key) == due for key in self._buckets[due][1]):
                return due
            heapq.heappop(self._times)
            del self._buckets[due]
        return None

    def pop_due(self, now_ms: int) -> Iterator[tuple[int, str]]:
        """Remove and yield ``(due, key)`` for every key due at or before ``now_ms``.

        Keys scheduled while iterating are honoured if they are due by ``now_ms`` too.
        """
        times, buckets, current = self._times, self._buckets, self._due
        while times and times[0] <= now_ms:
            due = heapq.heappop(times)
            _shared_due, keys = buckets.pop(due)
            for key in sorted(set(keys)):
                if current.get(key) == due:
                    del current[key]
                    yield due, key
