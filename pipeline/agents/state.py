"""A batch-friendly view of a changelog-backed faust table.

faust writes a table's changelog to the partition of the *current* event. Inside
``stream.take_events`` the current event is the last one buffered, which may come from another
partition than the event being processed; writing through ``table[key] = value`` there would put
state on the wrong changelog partition and lose it at the next rebalance. This view is told the
partition of each event explicitly, keeps the batch's writes in memory, and writes them once at
the end of the batch (one changelog message per changed key, not per event).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, MutableMapping
from typing import Any, Generic, TypeVar

V = TypeVar("V")

_DELETED = object()


def partition_prefix(partition: int) -> str:
    """What the keys of ``partition`` start with in a table :class:`PartitionState` writes."""
    return f"p{partition}|"


class BatchedTableState(MutableMapping[str, V], Generic[V]):
    """MutableMapping over a faust table whose keys and values are stored as raw bytes.

    Set :attr:`partition` before writes that belong to an event (the event's partition) and
    call :meth:`flush` at the end of each batch; one view may live as long as the agent.

    Args:
        table: a faust ``Table`` with ``key_serializer="raw"`` and ``value_serializer="raw"``.
        encode: value -> bytes.
        decode: bytes -> value.
    """

    def __init__(
        self,
        table: Any,
        encode: Callable[[V], bytes],
        decode: Callable[[bytes], V],
        *,
        confirm_writes: bool = False,
    ) -> None:
        self._table = table
        self._store = table.data
        self._encode = encode
        self._decode = decode
        self._dirty: dict[str, tuple[int, object]] = {}
        self._confirm_writes = confirm_writes
        self._unconfirmed: list[Any] = []
        self.partition = 0

    def __getitem__(self, key: str) -> V:
        pending = self._dirty.get(key)
        if pending is not None:
            if pending[1] is _DELETED:
                raise KeyError(key)
            return pending[1]  # type: ignore[return-value]
        raw = self._store.get(key.encode())
        if raw is None:
            raise KeyError(key)
        return self._decode(raw)

    def get(self, key: str, default: V | None = None) -> V | None:  # type: ignore[override]
        """``Mapping.get`` without raising KeyError for a missing key (the common case)."""
        pending = self._dirty.get(key)
        if pending is not None:
            return default if pending[1] is _DELETED else pending[1]  # type: ignore[return-value]
        raw = self._store.get(key.encode())
        return default if raw is None else self._decode(raw)

    def __setitem__(self, key: str, value: V) -> None:
        self._dirty[key] = (self.partition, value)

    def __delitem__(self, key: str) -> None:
        self[key]
        self._dirty[key] = (self.partition, _DELETED)

    def __iter__(self) -> Iterator[str]:
        """Every key held locally (the partitions this worker owns), pending writes included.

        Costs a scan of the local store: for rebuilding timers after an assignment, not per
        event.
        """
        keys = {k.decode() if isinstance(k, bytes) else str(k) for k in list(self._store.keys())}
        for key, (_partition, value) in self._dirty.items():
            if value is _DELETED:
                keys.discard(key)
            else:
                keys.add(key)
        return iter(sorted(keys))

    def __len__(self) -> int:
        return sum(1 for _ in self)

    @property
    def pending_writes(self) -> int:
        return len(self._dirty)

    def flush(self) -> int:
        """Write the batch's changes to the local store and the changelog; returns how many."""
        return len(self._write())

    async def flush_confirmed(self) -> int:
        """:meth:`flush`, then wait until Kafka acknowledged every write of this view so far.

        For the few writes whose durability gates the next step (a notification's attempt and
        delivery marks): waiting for this table's records is faster than flushing the whole
        producer, which also holds whatever the agents are publishing. "Every write so far",
        not "this call's": concurrent callers (delivery lanes) may have written each other's
        records, and each must still see its own acknowledged before it goes on.
        """
        if not self._confirm_writes:
            raise RuntimeError("flush_confirmed needs a view made with confirm_writes=True")
        written = len(self._write())
        for future in list(self._unconfirmed):
            await future
        self._unconfirmed = [f for f in self._unconfirmed if not f.done()]
        return written

    def _write(self) -> list[Any]:
        futures = []
        for key, (partition, value) in self._dirty.items():
            raw_key = key.encode()
            if value is _DELETED:
                self._store.pop(raw_key, None)
                futures.append(self._table.send_changelog(partition, raw_key, None))
            else:
                raw_value = self._encode(value)  # type: ignore[arg-type]
                self._store[raw_key] = raw_value
                futures.append(self._table.send_changelog(partition, raw_key, raw_value))
        self._dirty.clear()
        if self._confirm_writes:
            self._unconfirmed.extend(futures)  # pruned by flush_confirmed once acknowledged
        return futures


class PartitionState(MutableMapping[str, V], Generic[V]):
    """One partition's slice of a table, for state that timers write outside any event.

    Keys are stored as ``p<partition>|<key>``: a faust memory store keeps every partition in
    one dict, and a timer that fires after a restart must find exactly its partition's entries
    to rebuild from (and write back to that partition's changelog). Values that cannot be
    decoded (written by an older version) read as absent.

    Args:
        table: faust table with raw bytes keys and values.
        partition: the partition this slice belongs to.
        encode, decode: value <-> bytes; ``decode`` may raise any of ``undecodable``.
        undecodable: exceptions that mean "stale bytes, treat as absent".
    """

    def __init__(
        self,
        table: Any,
        partition: int,
        encode: Callable[[V], bytes],
        decode: Callable[[bytes], V],
        undecodable: tuple[type[Exception], ...] = (),
        *,
        confirm_writes: bool = False,
    ) -> None:
        self._view: BatchedTableState[V] = BatchedTableState(
            table, encode, self._decode, confirm_writes=confirm_writes
        )
        self._view.partition = partition
        self._decode_value = decode
        self._undecodable = undecodable
        self._prefix = partition_prefix(partition)
        self.partition = partition

    def _decode(self, raw: bytes) -> V:
        return self._decode_value(raw)

    def __getitem__(self, key: str) -> V:
        try:
            return self._view[self._prefix + key]
        except self._undecodable:
            raise KeyError(key) from None

    def get(self, key: str, default: V | None = None) -> V | None:  # type: ignore[override]
        """``Mapping.get`` without raising KeyError for a missing key (the common case)."""
        try:
            return self._view.get(self._prefix + key, default)
        except self._undecodable:
            return default

    def __setitem__(self, key: str, value: V) -> None:
        self._view[self._prefix + key] = value

    def __delitem__(self, key: str) -> None:
        self._view[self._prefix + key]
        self._view._dirty[self._prefix + key] = (self.partition, _DELETED)

    def __iter__(self) -> Iterator[str]:
        cut = len(self._prefix)
        return (k[cut:] for k in self._view if k.startswith(self._prefix))

    def __len__(self) -> int:
        return sum(1 for _ in self)

    def items_decodable(self) -> Iterator[tuple[str, V]]:
        """``(key, value)`` of every entry that decodes; for rebuilding timers."""
        for key in list(self):
            try:
                yield key, self[key]
            except KeyError:
                continue

    @property
    def pending_writes(self) -> int:
        return self._view.pending_writes

    def flush(self) -> int:
        """Write pending changes to the store and the changelog partition."""
        return self._view.flush()

    async def flush_confirmed(self) -> int:
        """:meth:`flush` and wait for Kafka's acknowledgement of every write so far."""
        return await self._view.flush_confirmed()
