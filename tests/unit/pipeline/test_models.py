"""Canonical records travel as JSON arrays, one per batch, topic and partition."""

from __future__ import annotations

import msgspec
import pytest

from pipeline.agents.normalize import MAX_RECORDS_PER_MESSAGE, CanonicalBatch
from pipeline.models import (
    Measurement,
    StateEvent,
    decode_measurements,
    decode_state_events,
    encode_record,
    encode_records,
)
from pipeline.topics import MEASUREMENTS_TOPIC, STATES_TOPIC, partition_of

PARTITIONS = 8


def measurement(entity: str, metric: str, value: float) -> Measurement:
    return Measurement("aliunid", "s", entity, metric, value, "kW", 1_000, {"phase": "L1"})


def test_arrays_and_single_records_both_decode() -> None:
    batch = [measurement("m1", "sys.kW", 41.5), measurement("m1", "sys.kWh", 7.0)]
    assert decode_measurements(encode_records(batch)) == batch
    # a single record (as written before arrays) still reads as a one-element batch
    assert decode_measurements(encode_record(batch[0])) == batch[:1]
    state = StateEvent("nobil", "s", "c1", "status", "error", "available", 5)
    assert decode_state_events(encode_records([state])) == [state]
    assert decode_state_events(encode_record(state)) == [state]


def test_a_measurement_array_is_not_taken_for_states() -> None:
    with pytest.raises(msgspec.ValidationError):
        decode_state_events(encode_records([measurement("m1", "sys.kW", 1.0)]))


def test_a_batch_groups_records_by_topic_and_entity_partition_keeping_their_order() -> None:
    a1, b1, a2 = measurement("a", "x", 1), measurement("c", "x", 2), measurement("a", "y", 3)
    state = StateEvent("nobil", "s", "a", "status", "error", None, 5)
    batch = CanonicalBatch(PARTITIONS)
    batch.add([a1, b1, state])
    batch.add([a2])
    pa, pb = partition_of(b"a", PARTITIONS), partition_of(b"c", PARTITIONS)
    assert pa != pb  # the two entities land apart with this partition count
    decoded = {
        (topic, partition): (
            decode_measurements(value)
            if topic == MEASUREMENTS_TOPIC
            else decode_state_events(value)
        )
        for topic, partition, value in batch.messages()
    }
    assert decoded == {
        (MEASUREMENTS_TOPIC, pa): [a1, a2],
        (MEASUREMENTS_TOPIC, pb): [b1],
        (STATES_TOPIC, pa): [state],
    }


def test_big_batches_are_cut_into_messages_of_bounded_size() -> None:
    batch = CanonicalBatch(1)
    records = [measurement("a", "x", i) for i in range(MAX_RECORDS_PER_MESSAGE * 2 + 1)]
    batch.add(records)
    messages = list(batch.messages())
    assert [len(decode_measurements(v)) for _t, _p, v in messages] == [
        MAX_RECORDS_PER_MESSAGE,
        MAX_RECORDS_PER_MESSAGE,
        1,
    ]
    assert [r for _t, _p, v in messages for r in decode_measurements(v)] == records


def test_partition_of_is_kafkas_default_partitioner() -> None:
    from aiokafka.partitioner import DefaultPartitioner

    partitioner = DefaultPartitioner()
    for key in (b"a", b"meter-000017", b"NOR_01333/0"):
        assert partition_of(key, 8) == partitioner(key, list(range(8)), list(range(8)))
