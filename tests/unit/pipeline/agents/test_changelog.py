"""The changelog table under PartitionState: writes queue until published, to the partition
they belong to; a revoked partition's keys go, the others stay."""

from __future__ import annotations

from typing import Any

from pipeline.agents.changelog import ChangelogTable
from pipeline.agents.publish import Publisher
from pipeline.agents.state import PartitionState


class RecordingSender:
    """Collects what the publisher hands on (a producer's ``send`` signature)."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes | None, bytes | None, int | None]] = []

    async def send(
        self,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        partition: int | None,
        timestamp: int | None,
        headers: Any,
    ) -> Any:
        self.sent.append((topic, key, value, partition))
        return _done()


async def _done() -> None:
    return None


def _state(table: ChangelogTable, partition: int) -> PartitionState[str]:
    return PartitionState(table, partition, str.encode, bytes.decode)


async def test_writes_reach_the_changelog_only_when_published_on_their_partition() -> None:
    table = ChangelogTable("app-alert_state-changelog")
    sender = RecordingSender()
    publisher = Publisher(sender)
    p0, p3 = _state(table, 0), _state(table, 3)
    p0["a"] = "1"
    p3["b"] = "2"
    p0.flush()
    p3.flush()
    assert table.queued == 2 and sender.sent == []
    assert table.data == {b"p0|a": b"1", b"p3|b": b"2"}  # readable at once
    del p0["a"]
    p0.flush()
    await table.publish(publisher)
    assert sender.sent == [  # by partition, each partition's writes in the order made
        ("app-alert_state-changelog", b"p0|a", b"1", 0),
        ("app-alert_state-changelog", b"p0|a", None, 0),  # a tombstone for the deletion
        ("app-alert_state-changelog", b"p3|b", b"2", 3),
    ]
    assert table.queued == 0
    await publisher.confirm()


def test_dropping_a_partition_forgets_only_its_keys() -> None:
    table = ChangelogTable("t")
    table.data.update({b"p1|x": b"1", b"p12|x": b"2", b"p2|y": b"3"})
    assert table.drop([1]) == 1
    assert table.data == {b"p12|x": b"2", b"p2|y": b"3"}  # p12 is not p1
    assert table.drop([]) == 0


def test_get_reads_pending_writes_stored_values_and_misses_without_raising() -> None:
    table = ChangelogTable("t")
    table.data[b"p0|stale"] = b"\xff"  # written by an older version: reads as absent

    def decode(raw: bytes) -> str:
        if raw == b"\xff":
            raise ValueError("undecodable")
        return raw.decode()

    state: PartitionState[str] = PartitionState(table, 0, str.encode, decode, (ValueError,))
    state["a"] = "pending"
    assert state.get("a") == "pending"
    state.flush()
    assert state.get("a") == "pending"  # now from the store
    del state["a"]
    assert state.get("a") is None and state.get("a", "dflt") == "dflt"  # deleted, not flushed
    assert state.get("never") is None
    assert state.get("stale", "dflt") == "dflt"
    assert "stale" not in state
