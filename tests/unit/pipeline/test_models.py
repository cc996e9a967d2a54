"""Canonical records travel as one JSON array per raw message, topic and entity."""

from __future__ import annotations

import msgspec
import pytest

from pipeline.agents.normalize import _by_topic_and_entity
from pipeline.models import (
    Measurement,
    StateEvent,
    decode_measurements,
    decode_state_events,
    encode_record,
    encode_records,
)
from pipeline.topics import MEASUREMENTS_TOPIC, STATES_TOPIC


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


def test_records_are_grouped_by_topic_and_entity_keeping_their_order() -> None:
    a1, b1, a2 = measurement("a", "x", 1), measurement("b", "x", 2), measurement("a", "y", 3)
    state = StateEvent("nobil", "s", "a", "status", "error", None, 5)
    groups = _by_topic_and_entity([a1, b1, state, a2])
    assert groups == {
        (MEASUREMENTS_TOPIC, "a"): [a1, a2],
        (MEASUREMENTS_TOPIC, "b"): [b1],
        (STATES_TOPIC, "a"): [state],
    }
