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
