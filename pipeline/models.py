"""Wire records of the pipeline: what flows on ``measurements.v1``, ``alerts.v1`` and the
dead-letter topic ``deadletter.v1``.

They are msgspec structs so decoding and validation cost microseconds per record; the faust
agents move them as JSON bytes (``value_serializer="raw"``) and decode in batches.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import msgspec

from producers.envelope import RawEnvelope

__all__ = [
    "AlertTransition",
    "CanonicalRecord",
    "DeadLetter",
    "Measurement",
    "RawEnvelope",
    "StateEvent",
    "decode_measurements",
    "decode_state_events",
    "encode_record",
    "encode_records",
]


class Measurement(msgspec.Struct, frozen=True):
    """One numeric reading in canonical form.

    Attributes:
        source: upstream family (``aliunid``...).
        stream: configured source name.
        entity: the measured thing (meter, connector, sensor id); Kafka key on ``measurements.v1``.
        metric: dotted metric name, e.g. ``sys.kW``.
        value: the reading.
        unit: unit when known (``kW``, ``kWh``), else empty.
        ts_ms: event time in epoch ms (upstream time where it has one, else receipt time).
        labels: identity labels: stable, low-cardinality dimensions that, with the entity and
            metric, name one series (``phase``, ``gateway``...). They enter alert
            fingerprints, rule ``match.labels``, routing, silences and grouping.
        annotations: descriptive facts (names, reasons, ids, message types): they reach
            templates and the "why" line, never an alert's identity.
    """

    source: str
    stream: str
    entity: str
    metric: str
    value: float
    unit: str
    ts_ms: int
    labels: dict[str, str] = msgspec.field(default_factory=dict)
    annotations: dict[str, str] = msgspec.field(default_factory=dict)


class StateEvent(msgspec.Struct, frozen=True):
    """A discrete state of an entity changed (connector status, device online, sensor state).

    Normalizers emit one only when the value changed, where they can know it (the producer
    passes the previous snapshot in ``meta``); otherwise ``previous`` is None and rules that
    ask for a change compare with the state they remember.

    Attributes:
        source, stream: where it came from.
        entity: the thing whose state this is (e.g. ``NOR_01333/0`` for a Nobil connector);
            Kafka key on ``states.v1``.
        name: which state (``status``, ``error``, ``connectivity``...).
        value: the new state, as text (``available``, ``error``, ``offline``...).
        previous: the state before, when known.
        ts_ms: event time in epoch ms.
        labels: identity labels (see :class:`Measurement`).
        annotations: descriptive facts (see :class:`Measurement`).
    """

    source: str
    stream: str
    entity: str
    name: str
    value: str
    previous: str | None
    ts_ms: int
    labels: dict[str, str] = msgspec.field(default_factory=dict)
    annotations: dict[str, str] = msgspec.field(default_factory=dict)


CanonicalRecord = Measurement | StateEvent
"""What a normalizer returns: numbers go to ``measurements.v1``, states to ``states.v1``."""


class AlertTransition(msgspec.Struct, frozen=True):
    """A rule's alert for one entity changed state.

    Attributes:
        fingerprint: stable identity of the alert (rule + entity + identity labels).
        rule: rule name.
        state: ``firing`` or ``resolved``.
        entity, source, stream, metric: what the alert is about (``metric`` is the state name
            for state rules).
        value: the value that caused the transition (text for state rules).
        severity: rule severity.
        ts_ms: event time of the transition.
        summary: rendered summary text.
        description: rendered description text.
        channels: channel names to notify.
        labels: the record's identity labels (those the rule's ``identity`` names, by default
            all of them) plus the rule's labels: what routing, silences and grouping see.
        annotations: the record's annotations and the labels the rule's ``identity`` left
            out: descriptive text for templates, never matched on.
    """

    fingerprint: str
    rule: str
    state: Literal["firing", "resolved"]
    entity: str
    source: str
    stream: str
    metric: str
    value: float | str
    severity: str
    ts_ms: int
    summary: str = ""
    description: str = ""
    channels: tuple[str, ...] = ()
    labels: dict[str, str] = msgspec.field(default_factory=dict)
    annotations: dict[str, str] = msgspec.field(default_factory=dict)


class DeadLetter(msgspec.Struct, frozen=True):
    """A record the pipeline could not process, kept with the reason so nothing is lost.

    Attributes:
        stage: where it failed (``normalize``...).
        reason: what was wrong, secret-free.
        topic, partition, offset: where the original record sits.
        raw: the original record bytes as text (the envelope JSON for raw topics).
        failed_at_ms: when it was dead-lettered.
    """

    stage: str
    reason: str
    topic: str
    partition: int
    offset: int
    raw: str
    failed_at_ms: int


_encoder = msgspec.json.Encoder()
_measurements_decoder = msgspec.json.Decoder(list[Measurement] | Measurement)
_state_events_decoder = msgspec.json.Decoder(list[StateEvent] | StateEvent)
_alert_decoder = msgspec.json.Decoder(AlertTransition)


def encode_record(record: Measurement | StateEvent | AlertTransition | DeadLetter) -> bytes:
    """Serialize any pipeline record to JSON bytes."""
    return _encoder.encode(record)


def encode_records(records: Sequence[CanonicalRecord]) -> bytes:
    """Serialize canonical records as one JSON array.

    Why arrays: the normalize stage writes one Kafka message per batch, topic and partition
    (:class:`~pipeline.agents.normalize.CanonicalBatch`), so the rule stage pays faust's
    per-message machinery per batch, not per reading.
    """
    return _encoder.encode(records)


def decode_measurements(data: bytes) -> list[Measurement]:
    """Parse a ``measurements.v1`` value: an array of measurements, or a single one."""
    value = _measurements_decoder.decode(data)
    return value if isinstance(value, list) else [value]


def decode_state_events(data: bytes) -> list[StateEvent]:
    """Parse a ``states.v1`` value: an array of state events, or a single one."""
    value = _state_events_decoder.decode(data)
    return value if isinstance(value, list) else [value]


def decode_alert(data: bytes) -> AlertTransition:
    """Parse an ``alerts.v1`` value."""
    return _alert_decoder.decode(data)
