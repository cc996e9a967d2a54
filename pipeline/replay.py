"""Replay recorded envelopes through the live normalizers and rule engine, in event time.

``streamwarden record`` writes the JSONL this reads (one :class:`RawEnvelope` per line). The
records are normalized exactly as the worker does, ordered by event time (stable, so records
with equal times keep their recorded order), and fed to one
:class:`~pipeline.rules.runtime.RuleRuntime`; timers (absence, pending ``for``, window
closes) fire as the event-time clock passes them, with the same deterministic transition times
the live worker gives them. The clock stops at the last record's time: what would only fire
later is not reported.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import msgspec

from pipeline.errors import BadInputError
from pipeline.models import AlertTransition, CanonicalRecord
from pipeline.normalize import normalize_envelope
from pipeline.rules.engine import EngineState, RuleEngine
from pipeline.rules.runtime import RuleRuntime
from producers.envelope import RawEnvelope, decode_envelope

logger = logging.getLogger(__name__)


@dataclass
class ReplayResult:
    """Transitions in ``ts_ms`` order, and what could not be used."""

    transitions: list[AlertTransition] = field(default_factory=list)
    envelopes: int = 0
    records: int = 0
    bad_lines: int = 0
    dead_letters: int = 0
    control_frames: int = 0


def read_envelopes(path: Path, result: ReplayResult) -> Iterator[RawEnvelope]:
    """Envelopes of a JSONL recording; lines that are not envelopes are counted and logged."""
    with path.open("rb") as lines:
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                yield decode_envelope(line)
            except (msgspec.DecodeError, msgspec.ValidationError) as exc:
                result.bad_lines += 1
                logger.warning("replay skipped line %s:%d: not an envelope: %s", path, number, exc)


def replay(
    envelopes: Iterable[RawEnvelope], engine: RuleEngine, result: ReplayResult | None = None
) -> ReplayResult:
    """Normalize, order by event time, evaluate; returns the transitions ordered by ``ts_ms``."""
    result = result or ReplayResult()
    records: list[CanonicalRecord] = []
    for envelope in envelopes:
        result.envelopes += 1
        try:
            normalized = normalize_envelope(envelope)
        except BadInputError as exc:
            result.dead_letters += 1
            logger.warning("replay dead letter source=%s reason=%s", envelope.source, exc.reason)
            continue
        records.extend(normalized)
        result.control_frames += not normalized  # a frame without records is a control frame
    records.sort(key=lambda r: r.ts_ms)
    result.records = len(records)
    state: dict[str, EngineState] = {}
    runtime = RuleRuntime(engine, state)
    for record in records:
        result.transitions.extend(runtime.process(record))
    result.transitions.sort(key=lambda t: t.ts_ms)
    return result


def json_value(value: float | str) -> float | str:
    """``value`` as strict JSON can hold it: a non-finite float (which ``json.dumps`` would
    print as the invalid ``Infinity`` / ``NaN``) becomes its text, ``"inf"``, ``"-inf"`` or
    ``"nan"``. Aggregates saturate and normalizers refuse non-finite readings, so this is a
    last guard: replay output is always valid JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


def transition_line(transition: AlertTransition) -> dict[str, object]:
    """The replay output object of one transition (strict JSON: see :func:`json_value`)."""
    return {
        "rule": transition.rule,
        "state": transition.state,
        "entity": transition.entity,
        "source": transition.source,
        "metric": transition.metric,
        "value": json_value(transition.value),
        "severity": transition.severity,
        "ts_ms": transition.ts_ms,
        "fingerprint": transition.fingerprint,
    }
