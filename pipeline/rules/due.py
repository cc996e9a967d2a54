"""Keys by due time, compact enough for a million timers.

At 100k entities x 10 metrics of open windows the timers are a million keys, so every byte
per key counts. A heap of ``(due, key)`` tuples costs about 100 bytes a key; a dict of each
key's current due time plus its key string about 120. Here there is neither: window
deadlines cluster (every entry of a tumbling window is due at the same window end), so keys
that share a due time share a bucket, the heap holds only the distinct due times, and a key
that is an alert fingerprint (16 hex digits, what the rule engine uses) is held as 8 bytes in
an ``array`` rather than as a string object. Other keys (tests, hand-made state) are kept as
they are.

The index does not know a key's *current* due time: it is a multiset of ``(due, key)``
entries. Its caller (:class:`~pipeline.rules.runtime.RuleRuntime`) checks each popped key
against the state, which knows the real deadline, and keeps the invariant that every key with
a deadline has an entry at or before it. An entry whose deadline moved is therefore harmless
(stale: skipped or rescheduled when its time comes), and the same key twice in one bucket
pops once.
"""

from __future__ import annotations

import heapq
from array import array
from collections.abc import Iterator

__all__ = ["DueIndex"]


def _as_int(key: str) -> int | None:
    """``key`` as its 64-bit value when it is exactly 16 lowercase hex digits, else None."""
    if len(key) != 16:
        return None
    try:
        value = int(key, 16)
    except ValueError:
        return None
    return value if f"{value:016x}" == key else None  # rejects "_", "+", upper case


class _Bucket:
    """The keys due at one time: fingerprints packed 8 bytes each, other keys as they are."""

    __slots__ = ("fingerprints", "others")

    def __init__(self) -> None:
        self.fingerprints = array("Q")
        self.others: list[str] = []

    def add(self, key: str) -> None:
        value = _as_int(key)
        if value is None:
            self.others.append(key)
        else:
            self.fingerprints.append(value)

    def __len__(self) -> int:
        return len(self.fingerprints) + len(self.others)

    def keys(self) -> set[str]:
        """The distinct keys, as strings."""
        found = {f"{value:016x}" for value in self.fingerprints}
        found.update(self.others)
        return found


class DueIndex:
    """A multiset of ``(due, key)`` entries, popped in (due, key) order; see the module doc."""

    def __init__(self) -> None:
        self._buckets: dict[int, _Bucket] = {}
        self._times: list[int] = []
        self._entries = 0

    def __len__(self) -> int:
        """Entries held, stale ones and repeats included."""
        return self._entries

    def keys(self) -> set[str]:
        """Every key with at least one entry."""
        found: set[str] = set()
        for bucket in self._buckets.values():
            found |= bucket.keys()
        return found

    def clear(self) -> None:
        self._buckets.clear()
        self._times.clear()
        self._entries = 0

    def schedule(self, key: str, due: int) -> None:
        """Add an entry: ``key`` is due at ``due`` (other entries of ``key`` stay)."""
        bucket = self._buckets.get(due)
        if bucket is None:
            bucket = self._buckets[due] = _Bucket()
            heapq.heappush(self._times, due)
        bucket.add(key)
        self._entries += 1

    def earliest(self) -> int | None:
        """The earliest due time with an entry (it may be stale)."""
        return self._times[0] if self._times else None

    def pop_due(self, now_ms: int) -> Iterator[tuple[int, str]]:
        """Remove every entry due at or before ``now_ms``; yield ``(due, key)`` once per key
        and due time, in order of due time, then key.

        Entries added while iterating are honoured if they are due by ``now_ms`` too.
        """
        times, buckets = self._times, self._buckets
        while times and times[0] <= now_ms:
            due = heapq.heappop(times)
            bucket = buckets.pop(due)
            self._entries -= len(bucket)
            for key in sorted(bucket.keys()):
                yield due, key
