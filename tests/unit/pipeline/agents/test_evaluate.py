"""Records that arrive around a rebalance, before their partition is ready, are fetched again."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from aiokafka import TopicPartition
from aiokafka.errors import IllegalStateError

from pipeline.agents.evaluate import _owned_only

M0, M1, S1 = (
    TopicPartition("measurements.v1", 0),
    TopicPartition("measurements.v1", 1),
    TopicPartition("states.v1", 1),
)


class SeekRecorder:
    """The one consumer call ``_owned_only`` makes; partitions in ``gone`` are not assigned."""

    def __init__(self, gone: set[TopicPartition]) -> None:
        self.gone = gone
        self.seeks: list[tuple[TopicPartition, int]] = []

    def seek(self, tp: TopicPartition, offset: int) -> None:
        if tp in self.gone:
            raise IllegalStateError(f"{tp} is not assigned")
        self.seeks.append((tp, offset))


def records(*offsets: int) -> list[Any]:
    return [SimpleNamespace(offset=o) for o in offsets]


def test_records_of_partitions_not_owned_are_handed_back_from_their_first_offset() -> None:
    consumer = SeekRecorder(gone=set())
    batches = {M0: records(5, 6), M1: records(7, 8, 9), S1: records(3)}
    ready = _owned_only(consumer, batches, owned={0})  # type: ignore[arg-type]
    assert ready == {M0: batches[M0]}
    assert consumer.seeks == [(M1, 7), (S1, 3)]


def test_a_partition_no_longer_assigned_is_skipped_without_error() -> None:
    consumer = SeekRecorder(gone={M1})
    ready = _owned_only(consumer, {M1: records(7), M0: records(1)}, owned=set())  # type: ignore[arg-type]
    assert ready == {}
    assert consumer.seeks == [(M0, 1)]


def test_partitions_the_assignment_moved_are_left_where_it_put_them() -> None:
    """A batch taken before the assignment was ready is not used; the consumer goes back to
    its first records, except where the assignment itself chose the start (a seek of its
    own that handing the records back would undo)."""
    consumer = SeekRecorder(gone=set())
    batches = {M0: records(0, 1), M1: records(4)}
    ready = _owned_only(consumer, batches, owned=set(), positioned={M0})  # type: ignore[arg-type]
    assert ready == {}
    assert consumer.seeks == [(M1, 4)]
