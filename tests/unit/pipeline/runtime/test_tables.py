"""The batched table: writes kept per view until flushed, sent as one batch per partition in
order, acknowledged on request; the store applies changelog records like a recovery."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from types import SimpleNamespace
from typing import Any

import pytest
from faust.types import TP

from pipeline.runtime.app import StreamWardenApp
from pipeline.runtime.tables import BatchedTable, changelog_key


class Sent:
    """A sender recording each call; each batch acknowledged when :meth:`ack` is called."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, int, list[tuple[bytes | None, bytes | None]]]] = []
        self.futures: list[asyncio.Future[None]] = []

    async def __call__(
        self, topic: str, partition: int, records: Sequence[tuple[bytes | None, bytes | None]]
    ) -> list[Any]:
        self.calls.append((topic, partition, list(records)))
        future = asyncio.get_running_loop().create_future()
        self.futures.append(future)
        return [future]

    def ack(self) -> None:
        for future in self.futures:
            if not future.done():
                future.set_result(None)


def _table(partitions: int = 4) -> tuple[BatchedTable, Sent]:
    app = StreamWardenApp("tables-test", broker="kafka://localhost:1", autodiscover=False)
    table = BatchedTable(
        app=app, name="alert_state", default=None, partitions=partitions, key_type=bytes
    )
    sent = Sent()
    table.sender = sent
    return table, sent


def _view(table: BatchedTable, partition: int) -> Any:
    return table.view(partition, str.encode, bytes.decode, (UnicodeDecodeError,))


async def test_writes_stay_in_the_view_until_flushed_then_go_as_one_batch_per_partition() -> None:
    table, sent = _table()
    one, three = _view(table, 1), _view(table, 3)
    one["a"] = "1"
    one["b"] = "2"
    one["a"] = "3"  # the latest value of a key is what the changelog gets
    three["c"] = "4"
    assert one["a"] == "3" and "c" not in one and three.get("c") == "4"
    assert table.queued == 0 and table.store.partitions == {}

    assert one.flush() == 2 and three.flush() == 1
    assert table.queued == 3
    assert await table.flush() == 3
    assert sorted(sent.calls) == [
        ("tables-test-alert_state-changelog", 1, [(b"p1|a", b"3"), (b"p1|b", b"2")]),
        ("tables-test-alert_state-changelog", 3, [(b"p3|c", b"4")]),
    ]
    assert table.store.partitions == {1: {"a": b"3", "b": b"2"}, 3: {"c": b"4"}}

    del one["b"]
    assert "b" not in one and list(one) == ["a"]
    one.flush()
    await table.flush()
    assert sent.calls[-1][1:] == (1, [(b"p1|b", None)])
    assert table.store.partitions[1] == {"a": b"3"}


async def test_flush_confirmed_waits_for_every_batch_sent_so_far() -> None:
    table, sent = _table()
    view = _view(table, 0)
    view["k"] = "v"
    view.flush()
    await table.flush()  # sent, not acknowledged
    view["k2"] = "v2"
    waiting = asyncio.ensure_future(view.flush_confirmed())
    await asyncio.sleep(0.01)
    assert not waiting.done() and len(sent.calls) == 2
    sent.ack()
    assert await asyncio.wait_for(waiting, 1.0) == 1


def test_undecodable_values_read_as_absent_and_direct_item_writes_are_refused() -> None:
    table, _sent = _table()
    table.store.partition_data(2)["old"] = b"\xff\xfe"
    view = _view(table, 2)
    assert view.get("old") is None and "old" not in view
    with pytest.raises(TypeError, match=r"through BatchedTable\.view"):
        table.on_key_set(b"k", b"v")


def test_the_store_applies_changelog_records_as_recovery_reads_them() -> None:
    table, _sent = _table()
    store = table.store

    def event(partition: int, offset: int, key: bytes, value: bytes | None) -> Any:
        message = SimpleNamespace(partition=partition, offset=offset, key=key, value=value)
        return SimpleNamespace(message=message)

    store.apply_changelog_batch(
        [
            event(2, 0, changelog_key(2, "x"), b"1"),
            event(2, 1, changelog_key(2, "y"), b"2"),
            event(2, 2, changelog_key(2, "x"), None),  # a tombstone
        ],
        to_key=lambda k: k,
        to_value=lambda v: v,
    )
    assert store.partitions == {2: {"y": b"2"}}
    topic = table.changelog_topic.get_topic_name()
    assert store.persisted_offset(TP(topic, 2)) == 2
    assert store.persisted_offset(TP(topic, 1)) is None
    assert store.persisted_offset(TP("another-topic", 2)) is None
    store.drop([2])
    assert store.partitions == {} and store.persisted_offset(TP(topic, 2)) is None


class ChangelogReader:
    """A consumer over one changelog partition's records, as the store's recovery reads it.

    ``seek_to_beginning`` behaves as observed on the embedded broker when a default reset
    raced it: the position lands at the end (nothing read). An explicit ``seek`` is honoured.
    """

    def __init__(self, records: list[tuple[int, bytes, bytes | None]]) -> None:
        self.records = records  # (offset, key, value)
        self.positions: dict[Any, int] = {}

    def assign(self, tps: list[Any]) -> None:
        self.tps = tps

    async def end_offsets(self, tps: list[Any]) -> dict[Any, int]:
        return {tp: len(self.records) for tp in tps}

    async def beginning_offsets(self, tps: list[Any]) -> dict[Any, int]:
        return {tp: 0 for tp in tps}

    async def seek_to_beginning(self, *tps: Any) -> None:
        for tp in tps:
            self.positions[tp] = len(self.records)  # the racing reset to "latest"

    def seek(self, tp: Any, offset: int) -> None:
        self.positions[tp] = offset

    async def getmany(self, *tps: Any, timeout_ms: int = 0) -> dict[Any, list[Any]]:
        out: dict[Any, list[Any]] = {}
        for tp in tps:
            start = self.positions[tp]
            batch = [SimpleNamespace(offset=o, key=k, value=v) for o, k, v in self.records[start:]]
            if batch:
                out[tp] = batch
                self.positions[tp] = len(self.records)
        return out

    async def position(self, tp: Any) -> int:
        return self.positions[tp]


async def test_recovery_reads_from_an_explicit_start_not_a_reset_that_may_land_at_the_end() -> None:
    table, _sent = _table()
    reader = ChangelogReader(
        [
            (0, changelog_key(1, "a"), b"1"),
            (1, changelog_key(1, "b"), b"2"),
            (2, changelog_key(1, "a"), None),
        ]
    )
    read = await table.store._read(reader, [1])  # type: ignore[arg-type]
    assert read == 3
    assert table.store.partitions[1] == {"b": b"2"}
    assert table.store.persisted_offset(TP(table.changelog_topic.get_topic_name(), 1)) == 2
