"""What the rule engine keeps per alert: msgspec structs, stored as msgpack bytes.

The worker keeps these in a changelog-backed table keyed by alert fingerprint; tests use a
dict. Every entry names its rule and carries a 32-bit hash of the rule's definition
(:func:`pipeline.rules.engine.rule_hash`), so after a reload the engine can tell state written
under another definition and treat it as absent. Every entry also carries its
:class:`Subject`, so a timer can announce a transition without the record that started it.

:data:`EngineState` is a tagged union (the tag is the first array element):

- :class:`AlertState` (``"alert"``): threshold and state rules. Absent while nothing is in
  progress for a threshold rule; state rules keep it to remember the last state.
- :class:`WindowState` (``"window"``): aggregate rules: panes or sliding cells plus the alert.
- :class:`AbsenceState` (``"absence"``): absence rules: when the entity was last seen.

Size: a subject and a few integers, plus for windows at most
:data:`~pipeline.rules.schema.MAX_OPEN_PANES` panes (tumbling/hopping) or
:data:`~pipeline.windows.MAX_SLIDING_CELLS` cells (sliding) of about ten numbers each, plus at
most :data:`~pipeline.windows.PERCENTILE_BUDGET` sampled values for a percentile rule, plus
for windows the seen keys of redelivery detection (one small integer per record within the
lateness horizon, at most :data:`~pipeline.windows.MAX_SEEN_KEYS`).
Fields added later have defaults, so entries written before them still decode.
"""

from __future__ import annotations

from typing import Literal

import msgspec

from pipeline.windows import Pane

__all__ = [
    "IDENTITY_VERSION",
    "AbsenceState",
    "AlertState",
    "EngineState",
    "Phase",
    "StateFormatError",
    "Subject",
    "WindowState",
    "decode_state",
    "encode_state",
]


IDENTITY_VERSION = 1
"""Version of alert identity that written entries follow: 1 = identity labels (issue 14)."""


class Subject(msgspec.Struct, frozen=True, array_like=True):
    """What an alert is about, taken from the record that created its entry.

    Attributes:
        entity, source, stream: as on the record.
        metric: the measurement's metric, or the state event's name.
        unit: the measurement's unit (empty for state events).
        labels: the alert's identity labels (those its fingerprint hashes).
        annotations: the record's annotations plus the labels the rule's ``identity``
            left out.
        identity_version: :data:`IDENTITY_VERSION` for entries keyed by identity labels;
            0 for entries written before (their ``labels`` hold every record label,
            annotations included, and their key hashed them all): the engine re-keys those
            (see "Upgrade" in :mod:`pipeline.rules.engine`).
        fingerprint: the fingerprint the alert is announced under when it is not the key
            of its entry: a re-keyed entry keeps its old fingerprint, so the alert that
            fired before the upgrade is the one that resolves. Empty: the key.
    """

    entity: str
    source: str
    stream: str
    metric: str
    unit: str = ""
    labels: dict[str, str] = msgspec.field(default_factory=dict)
    annotations: dict[str, str] = msgspec.field(default_factory=dict)
    identity_version: int = 0
    fingerprint: str = ""


class Phase(msgspec.Struct, frozen=True, array_like=True):
    """An alert in progress; no phase means ok.

    Attributes:
        state: ``pending`` (condition holds, waiting for ``for``) or ``firing``.
        since_ms: pending: event time the condition began to hold; firing: when it fired.
        value: the value that started this phase (announced by a timer transition).
        clear_since_ms: while firing, when the clear condition began to hold; else None.
        clear_value: the value that started clearing.
    """

    state: Literal["pending", "firing"]
    since_ms: int
    value: float | str
    clear_since_ms: int | None = None
    clear_value: float | str | None = None


class AlertState(msgspec.Struct, frozen=True, array_like=True, tag="alert"):
    """Entry of a threshold or state rule.

    Attributes:
        rule, rule_hash: the rule and the hash of the definition that wrote the entry.
        subject: what the alert is about.
        phase: the alert in progress, or None.
        floor_ms: records of an earlier event time are late (the time of the last change).
        seen: state rules: the last state value seen.
        seen_before: state rules: the value before ``seen``.
    """

    rule: str
    rule_hash: int
    subject: Subject
    phase: Phase | None = None
    floor_ms: int | None = None
    seen: str | None = None
    seen_before: str | None = None


class WindowState(msgspec.Struct, frozen=True, array_like=True, tag="window"):
    """Entry of an aggregate rule.

    Attributes:
        rule, rule_hash, subject: as for :class:`AlertState`.
        phase: the alert in progress, fed by window results.
        watermark_ms: the latest event time accepted for this entity.
        floor_ms: records of an earlier event time are late (tumbling/hopping: end of the last
            closed window; sliding: just after the last deadline applied).
        panes: tumbling/hopping: aligned panes by start; sliding: cells by first event time.
        seen: keys (event time relative to ``watermark_ms``, value hash) of the applied
            records that could still be accepted, sorted, so a redelivered record is not
            counted twice (:func:`~pipeline.windows.seen_add`).
        seen_from_ms: records of an earlier event time are late because their seen keys
            were dropped (more than :data:`~pipeline.windows.MAX_SEEN_KEYS`); else None.
    """

    rule: str
    rule_hash: int
    subject: Subject
    phase: Phase | None
    watermark_ms: int
    floor_ms: int | None = None
    panes: tuple[Pane, ...] = ()
    seen: tuple[int, ...] = ()
    seen_from_ms: int | None = None


class AbsenceState(msgspec.Struct, frozen=True, array_like=True, tag="absence"):
    """Entry of an absence rule.

    Attributes:
        rule, rule_hash, subject: as for :class:`AlertState`.
        last_seen_ms: latest event time seen from the entity.
        value: the value seen then.
        firing_since_ms: when the alert fired (``last_seen_ms + after``), or None.
    """

    rule: str
    rule_hash: int
    subject: Subject
    last_seen_ms: int
    value: float
    firing_since_ms: int | None = None


EngineState = AlertState | WindowState | AbsenceState
"""One entry of engine state, stored under an alert fingerprint."""


class StateFormatError(ValueError):
    """Bytes that are not engine state (e.g. written by an older format); treat as absent."""


_encoder = msgspec.msgpack.Encoder()
_decoder: msgspec.msgpack.Decoder[EngineState] = msgspec.msgpack.Decoder(EngineState)


def encode_state(state: EngineState) -> bytes:
    """Serialize one entry to msgpack bytes."""
    return _encoder.encode(state)


def decode_state(data: bytes) -> EngineState:
    """Parse bytes written by :func:`encode_state`.

    Raises:
        StateFormatError: the bytes are not engine state.
    """
    try:
        return _decoder.decode(data)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise StateFormatError(f"not engine state: {exc}") from exc
