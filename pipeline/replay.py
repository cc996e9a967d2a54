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
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

import msgspec

from pipeline.errors import BadInputError
from pipeline.models import AlertTransition, CanonicalRecord
from pipeline.normalize import normalize_envelope
from pipeline.rules.engine import EngineState, RuleEngine
from pipeline.rules.runtime import RuleRuntime
from producers.envelope import RawEnvelope, decode_envelope

logger = logging.getLogger(__name__)

TimeFormat = Literal["iso", "ms"]
MAX_LINE_PROBLEMS = 5
"""Unreadable lines described one by one; the rest are only counted."""


@dataclass
class ReplayResult:
    """Transitions in ``ts_ms`` order, and what could not be used."""

    transitions: list[AlertTransition] = field(default_factory=list)
    envelopes: int = 0
    records: int = 0
    bad_lines: int = 0
    dead_letters: int = 0
    control_frames: int = 0
    line_problems: list[str] = field(default_factory=list)
    """``file:line: why`` for the first :data:`MAX_LINE_PROBLEMS` unreadable lines."""


def read_envelopes(path: Path, result: ReplayResult) -> Iterator[RawEnvelope]:
    """Envelopes of a JSONL recording; lines that are not envelopes are counted and described
    in ``result`` (the caller decides whether that is an error)."""
    with path.open("rb") as lines:
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                yield decode_envelope(line)
            except (msgspec.DecodeError, msgspec.ValidationError) as exc:
                result.bad_lines += 1
                if len(result.line_problems) < MAX_LINE_PROBLEMS:
                    result.line_problems.append(
                        f"{path}:{number}: not a recorded envelope "
                        f"(streamwarden record writes one JSON object per line): {exc}"
                    )


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


def iso_time(ts_ms: int) -> str:
    """``1700000000000`` -> ``2023-11-14T22:13:20.000Z`` (UTC, milliseconds)."""
    moment = datetime.fromtimestamp(ts_ms / 1000, tz=UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def transition_line(
    transition: AlertTransition, time_format: TimeFormat = "ms"
) -> dict[str, object]:
    """The replay output object of one transition (strict JSON: see :func:`json_value`).

    Args:
        time_format: ``ms``: the event time as ``ts_ms`` (epoch milliseconds); ``iso``: as
            ``time``, an ISO 8601 UTC string for people.
    """
    when: dict[str, object] = (
        {"time": iso_time(transition.ts_ms)}
        if time_format == "iso"
        else {"ts_ms": transition.ts_ms}
    )
    return {
        "rule": transition.rule,
        "state": transition.state,
        "entity": transition.entity,
        "source": transition.source,
        "metric": transition.metric,
        "value": json_value(transition.value),
        "severity": transition.severity,
        **when,
        "fingerprint": transition.fingerprint,
    }
