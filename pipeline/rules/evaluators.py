"""One evaluator class per rule type: matching, templates, and the type's state machine.

:data:`EVALUATORS` maps a rule model to its evaluator factory (the registry of rule types;
:class:`~pipeline.rules.engine.RuleEngine` builds one evaluator per rule with
:func:`make_evaluator`). An evaluator is stateless between calls: it reads one
:data:`~pipeline.rules.state.EngineState` entry and returns the next, appending transitions.
The semantics (floors, deadlines, due times, reload) are described in
:mod:`pipeline.rules.engine`; the alert lifecycle in :mod:`pipeline.rules.lifecycle`.

Every evaluator offers: ``matches(record)``, ``owns(entry)`` (same rule and definition hash),
``is_late(entry, ts_ms)``, ``is_duplicate(entry, record)`` (a redelivered record already
applied: aggregate rules only, see :func:`pipeline.windows.seen_add`),
``on_record(key, entry, record, out)``, ``deadline(entry)`` (due clock time),
``expire(key, entry, now_ms, out)`` and ``carry(stale_entry)`` (a fresh entry keeping only a
firing alert).
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import math
import operator
import re
from collections.abc import Callable
from typing import Any, ClassVar, Final, Generic, Literal, TypeVar

import msgspec
from jinja2 import Template

from pipeline.models import AlertTransition, Measurement, StateEvent
from pipeline.rules.duration import format_duration
from pipeline.rules.lifecycle import (
    Change,
    Timing,
    apply_deadline,
    catch_up,
    expire_due,
    observe,
)
from pipeline.rules.lifecycle import deadline as phase_deadline
from pipeline.rules.schema import (
    AbsenceRule,
    AggregateRule,
    Comparison,
    Condition,
    HoppingWindow,
    Percentile,
    Range,
    Rule,
    SlidingWindow,
    StateRule,
    ThresholdRule,
)
from pipeline.rules.state import (
    IDENTITY_VERSION,
    AbsenceState,
    AlertState,
    EngineState,
    Phase,
    Subject,
    WindowState,
)
from pipeline.rules.templates import MAX_ALERT_TEXT_BYTES, compile_template, fit_texts, render
from pipeline.windows import (
    MAX_SLIDING_CELLS,
    PERCENTILE_BUDGET,
    add_to_panes,
    aggregate,
    next_window_end,
    pane_start,
    seen_add,
    seen_has,
    sliding_insert,
    window_panes,
)

__all__ = [
    "EVALUATORS",
    "AnyEvaluator",
    "Evaluator",
    "Record",
    "firing_of",
    "make_evaluator",
    "rule_hash",
    "split_identity",
]

Record = Measurement | StateEvent
"""What the engine evaluates."""

_PRESENTATION: Final = frozenset(
    {"name", "description", "summary", "severity", "labels", "channels"}
)


def rule_hash(rule: Rule) -> int:
    """32-bit hash of what decides a rule's alerts (not its texts, severity, labels, channels).

    ``identity`` counts only when set, so rules written before it existed keep their hash.
    """
    exclude = set(_PRESENTATION) if rule.identity is not None else {*_PRESENTATION, "identity"}
    data = rule.model_dump(mode="json", by_alias=True, exclude=exclude)
    text = json.dumps(data, sort_keys=True, separators=(",", ":"))
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=4).digest(), "big")


Predicate = Callable[[float], bool]
StrMatcher = Callable[[str], bool] | None

_COMPARE: dict[str, Callable[[float, float], bool]] = {
    ">": operator.gt,
    ">=": operator.ge,
    "<": operator.lt,
    "<=": operator.le,
    "==": operator.eq,
    "!=": operator.ne,
}


def _predicate(condition: Condition) -> Predicate:
    if isinstance(condition, Comparison):
        compare = _COMPARE[condition.op]
        threshold = condition.value
        return lambda value: compare(value, threshold)
    low, high = condition.low, condition.high
    if condition.op == "between":
        return lambda value: low <= value <= high
    return lambda value: value < low or value > high


def _clear_predicate(rule: ThresholdRule | AggregateRule, fires: Predicate) -> Predicate:
    clear = rule.clear
    if clear is not None and clear.condition is not None:
        clear_condition = _predicate(clear.condition)
        return lambda value: clear_condition(value) and not fires(value)
    return lambda value: not fires(value)


def _glob(pattern: str) -> StrMatcher:
    """Matcher for a glob; None when it matches everything (the common ``*``)."""
    if pattern == "*":
        return None
    if not any(c in pattern for c in "*?["):
        return pattern.__eq__
    regex = re.compile(fnmatch.translate(pattern))
    return lambda text: regex.match(text) is not None


def _as_written(number: float) -> float | int:
    """``40.0`` -> ``40``: YAML ``value: 40`` should render as 40 in templates, not 40.0."""
    return int(number) if float(number).is_integer() else number


def _condition_context(condition: Condition) -> dict[str, Any]:
    if isinstance(condition, Range):
        return {
            "op": condition.op,
            "threshold": f"{condition.low:g}..{condition.high:g}",
            "low": _as_written(condition.low),
            "high": _as_written(condition.high),
        }
    return {"op": condition.op, "threshold": _as_written(condition.value)}


def _ms(duration: Any) -> int:
    return int(duration.total_seconds() * 1000)


def _later(floor: int | None, ts_ms: int) -> int:
    return ts_ms if floor is None or ts_ms > floor else floor


def split_identity(
    identity: tuple[str, ...] | None, labels: dict[str, str], annotations: dict[str, str]
) -> tuple[dict[str, str], dict[str, str]]:
    """``(identity labels, annotations)`` of a record for a rule's ``identity``.

    ``None`` (the default) keeps the record's identity labels as they are. A list takes the
    named keys from the labels, or else from the annotations (``identity: [alert_id]``);
    labels it leaves out join the annotations, so templates still see them.
    """
    if identity is None:
        return labels, annotations
    chosen: dict[str, str] = {}
    for key in identity:
        value = labels.get(key, annotations.get(key))
        if value is not None:
            chosen[key] = value
    if len(chosen) == len(labels) and chosen.keys() == labels.keys():
        return chosen, annotations
    notes = {k: v for k, v in annotations.items() if k not in chosen}
    notes.update((k, v) for k, v in labels.items() if k not in chosen)
    return chosen, notes


def firing_of(entry: EngineState) -> tuple[int, float | str] | None:
    """``(since, value)`` of a firing alert held in any kind of entry."""
    if isinstance(entry, AbsenceState):
        if entry.firing_since_ms is None:
            return None
        return entry.firing_since_ms, entry.value
    if entry.phase is not None and entry.phase.state == "firing":
        return entry.phase.since_ms, entry.phase.value
    return None


E = TypeVar("E", AlertState, WindowState, AbsenceState)


class Evaluator(Generic[E]):
    """One compiled rule: matching, templates, and its type's state machine over ``E``."""

    kind: ClassVar[Literal["measurement", "state"]] = "measurement"
    entry_type: ClassVar[type[Any]]

    def __init__(self, rule: Rule) -> None:
        self.rule = rule
        self.name = rule.name
        self.hash = rule_hash(rule)
        self.grace_ms = _ms(rule.grace)
        match = rule.match
        self.source = match.source
        self.match_name = rule.match.state if isinstance(rule, StateRule) else rule.match.metric
        self.stream = _glob(match.stream)
        self.entity = _glob(match.entity)
        self.labels = tuple(sorted(match.labels.items()))
        self.identity = tuple(rule.identity) if rule.identity is not None else None
        # The record being evaluated (its annotations and event time): set by the engine around
        # on_record, so a transition its observation causes describes that record (a
        # "Reconnected" reason on the resolve); deadlines announce the subject's annotations.
        self.record_notes: dict[str, str] | None = None
        self.record_ts: int | None = None
        self.summary: Template = compile_template(rule.summary)
        self.description: Template | None = (
            compile_template(rule.description) if rule.description else None
        )
        self.channels = tuple(rule.channels)
        self.context: dict[str, Any] = {"type": rule.type}

    # --- matching -----------------------------------------------------------------------------

    def matches(self, record: Record) -> bool:
        if self.stream is not None and not self.stream(record.stream):
            return False
        if self.entity is not None and not self.entity(record.entity):
            return False
        if self.labels:
            labels = record.labels
            for key, value in self.labels:
                if labels.get(key) != value:
                    return False
        return True

    def identify(self, record: Record) -> tuple[dict[str, str], dict[str, str]]:
        """``(identity labels, annotations)`` of ``record`` for this rule."""
        return split_identity(self.identity, record.labels, record.annotations)

    def subject_of(self, record: Record) -> Subject:
        """The subject of a new entry for ``record``."""
        labels, notes = self.identify(record)
        if isinstance(record, Measurement):
            metric, unit = record.metric, record.unit
        else:
            metric, unit = record.name, ""
        return Subject(
            record.entity,
            record.source,
            record.stream,
            metric,
            unit,
            labels,
            notes,
            IDENTITY_VERSION,
        )

    def refreshed(self, subject: Subject) -> Subject:
        """``subject`` with the annotations of the record being evaluated (threshold and state
        rules keep the latest record's, so a timer announces what the last record said)."""
        notes = self.record_notes
        if notes is None or notes == subject.annotations:
            return subject
        return msgspec.structs.replace(subject, annotations=notes)

    def owns(self, entry: EngineState) -> bool:
        """Whether ``entry`` was written by this very definition."""
        return (
            isinstance(entry, self.entry_type)
            and entry.rule == self.name
            and entry.rule_hash == self.hash
        )

    # --- per type -----------------------------------------------------------------------------

    def is_late(self, entry: E, ts_ms: int) -> bool:
        raise NotImplementedError

    def is_duplicate(self, entry: E, record: Record) -> bool:
        """Whether ``record`` (not late) was already applied to ``entry``. Only aggregate
        rules need to know: the other entries are idempotent under redelivery."""
        return False

    def floor(self, entry: E) -> int | None:
        """Earliest event time not late (for the log), when simple to state."""
        raise NotImplementedError

    def on_record(
        self, key: str, entry: E | None, record: Record, out: list[AlertTransition]
    ) -> E | None:
        """The entry after a record that is not late; the same object when unchanged."""
        raise NotImplementedError

    def deadline(self, entry: E) -> int | None:
        """Due time (clock ms) at which :meth:`expire` must run, or None."""
        raise NotImplementedError

    def expire(self, key: str, entry: E, now_ms: int, out: list[AlertTransition]) -> E | None:
        """The entry after applying everything due at ``now_ms``."""
        raise NotImplementedError

    def carry(self, stale: EngineState) -> E | None:
        """A fresh entry keeping only a firing alert of ``stale`` (written by another
        definition), or None."""
        raise NotImplementedError

    # --- transitions --------------------------------------------------------------------------

    def transition(
        self, key: str, subject: Subject, change: Change, extra: dict[str, Any] | None = None
    ) -> AlertTransition:
        rule = self.rule
        labels = {**subject.labels, **rule.labels}
        notes = subject.annotations
        if self.record_notes is not None and change.observed_ms == self.record_ts:
            notes = self.record_notes
        context: dict[str, Any] = {
            "rule": self.name,
            "entity": subject.entity,
            "source": subject.source,
            "stream": subject.stream,
            "metric": subject.metric,
            "value": change.value,
            "unit": subject.unit,
            "labels": labels,
            "annotations": notes,
            "state": change.state,
            "ts_ms": change.ts_ms,
            "severity": rule.severity,
            **self.context,
        }
        if extra:
            context.update(extra)
        # texts are bounded by their render budget; cut them further if upstream names and
        # labels are long, so the alert record stays under the broker's message size
        other = (
            len(subject.entity)
            + len(subject.stream)
            + len(subject.metric)
            + sum(len(k) + len(v) for k, v in labels.items())
        )
        summary, description = fit_texts(
            render(self.summary, context),
            render(self.description, context) if self.description else "",
            other_bytes=4 * other + 1024,
            max_bytes=MAX_ALERT_TEXT_BYTES,
        )
        return AlertTransition(
            fingerprint=subject.fingerprint or key,
            rule=self.name,
            state=change.state,
            entity=subject.entity,
            source=subject.source,
            stream=subject.stream,
            metric=subject.metric,
            value=change.value,
            severity=rule.severity,
            ts_ms=change.ts_ms,
            summary=summary,
            description=description,
            channels=self.channels,
            labels=labels,
            annotations=dict(notes),
        )


RESOLVED_FLOOR_KEPT_MS = 10 * 60 * 1000
"""How long (clock time past its floor) an ended threshold alert keeps its entry: far longer
than the uncommitted records a restarted worker reads again (seconds)."""


def _is_kept_floor(entry: AlertState) -> bool:
    """An ended alert's entry, kept only for its floor (see ``_InstantEvaluator.store``)."""
    return entry.phase is None and entry.seen is None and entry.floor_ms is not None


class _InstantEvaluator(Evaluator[AlertState]):
    """Shared by threshold and state rules: each record is an observation."""

    entry_type = AlertState
    timing: Timing

    def is_late(self, entry: AlertState, ts_ms: int) -> bool:
        return entry.floor_ms is not None and ts_ms < entry.floor_ms

    def floor(self, entry: AlertState) -> int | None:
        return entry.floor_ms

    def deadline(self, entry: AlertState) -> int | None:
        if _is_kept_floor(entry):
            return entry.floor_ms + RESOLVED_FLOOR_KEPT_MS  # type: ignore[operator]
        due = phase_deadline(entry.phase, self.timing)
        return None if due is None else due + 1 + self.grace_ms

    def expire(
        self, key: str, entry: AlertState, now_ms: int, out: list[AlertTransition]
    ) -> AlertState | None:
        if _is_kept_floor(entry):
            return None  # kept long enough: no redelivery reaches this far back
        changes: list[Change] = []
        phase, applied = expire_due(entry.phase, now_ms, self.grace_ms, self.timing, changes)
        if applied is None:
            return entry
        self.announce(key, entry, changes, out, entry.seen_before)
        floor = _later(entry.floor_ms, applied + 1)
        return self.store(entry, entry.subject, phase, floor, entry.seen, entry.seen_before)

    def carry(self, stale: EngineState) -> AlertState | None:
        firing = firing_of(stale)
        if firing is None:
            return None
        since, value = firing
        return AlertState(self.name, self.hash, stale.subject, Phase("firing", since, value))

    def store(
        self,
        entry: AlertState | None,
        subject: Subject,
        phase: Phase | None,
        floor_ms: int | None,
        seen: str | None = None,
        seen_before: str | None = None,
    ) -> AlertState | None:
        """The new entry (``entry`` itself if equal; None when there is nothing to keep).

        An alert that ended (resolved, or pending that never fired) keeps its entry with only
        the floor for :data:`RESOLVED_FLOOR_KEPT_MS`: records replayed after a crash (their
        offsets not yet committed when the state was written) are then late, not a new
        episode that would fire and resolve the alert a second time.
        """
        if phase is None and seen is None and floor_ms is None:
            return None
        new = AlertState(self.name, self.hash, subject, phase, floor_ms, seen, seen_before)
        return entry if entry is not None and entry == new else new

    def announce(
        self,
        key: str,
        entry: AlertState | None,
        changes: list[Change],
        out: list[AlertTransition],
        previous: str | None,
        subject: Subject | None = None,
    ) -> None:
        target = subject if subject is not None else entry.subject if entry else None
        if target is None:
            return
        for change in changes:
            out.append(self.transition(key, target, change, self.context_of(previous)))

    def context_of(self, previous: str | None) -> dict[str, Any] | None:
        return None


class _ThresholdEvaluator(_InstantEvaluator):
    def __init__(self, rule: ThresholdRule) -> None:
        super().__init__(rule)
        self.fires = _predicate(rule.condition)
        self.clears = _clear_predicate(rule, self.fires)
        self.timing = Timing(_ms(rule.for_), _ms(rule.clear.for_) if rule.clear else 0)
        self.context.update(_condition_context(rule.condition))

    def on_record(
        self, key: str, entry: AlertState | None, record: Record, out: list[AlertTransition]
    ) -> AlertState | None:
        if not isinstance(record, Measurement):
            return entry
        ts, value = record.ts_ms, record.value
        phase = entry.phase if entry is not None else None
        if phase is None and not self.fires(value):
            return entry  # the common case: all is well and stays so (nothing due, no change)
        floor = entry.floor_ms if entry is not None else None
        changes: list[Change] = []
        phase, applied = catch_up(phase, ts, self.timing, changes)
        if applied is not None:
            floor = _later(floor, applied + 1)
        before = phase
        phase = observe(
            phase, ts, value, self.fires(value), self.clears(value), self.timing, changes
        )
        if phase is not before:
            floor = _later(floor, ts)
        subject = entry.subject if entry is not None else self.subject_of(record)
        self.announce(key, entry, changes, out, None, subject)
        return self.store(entry, self.refreshed(subject), phase, floor)


class _StateEvaluator(_InstantEvaluator):
    kind = "state"

    def __init__(self, rule: StateRule) -> None:
        super().__init__(rule)
        self.target = rule.target
        self.changes_from = rule.changes.from_ if rule.changes is not None else None
        self.timing = Timing(_ms(rule.for_), _ms(rule.clear.for_) if rule.clear else 0)
        self.context["expected"] = self.target

    def context_of(self, previous: str | None) -> dict[str, Any] | None:
        return {"previous": previous}

    def on_record(
        self, key: str, entry: AlertState | None, record: Record, out: list[AlertTransition]
    ) -> AlertState | None:
        if not isinstance(record, StateEvent):
            return entry
        ts, value = record.ts_ms, record.value
        seen = entry.seen if entry is not None else None
        previous = record.previous if record.previous is not None else seen
        phase = entry.phase if entry is not None else None
        floor = entry.floor_ms if entry is not None else None
        changes: list[Change] = []
        phase, applied = catch_up(phase, ts, self.timing, changes)
        if applied is not None:
            floor = _later(floor, applied + 1)
        subject = entry.subject if entry is not None else self.subject_of(record)
        # deadlines applied before this record announce the state before it
        self.announce(key, entry, changes, out, entry.seen_before if entry else None, subject)
        changes.clear()
        holds = value == self.target and (
            self.changes_from is None or phase is not None or previous == self.changes_from
        )
        phase = observe(phase, ts, value, holds, not holds, self.timing, changes)
        self.announce(key, entry, changes, out, previous, subject)
        seen_before = entry.seen_before if entry is not None and value == seen else previous
        subject = self.refreshed(subject)
        return self.store(entry, subject, phase, _later(floor, ts), value, seen_before)


class _AbsenceEvaluator(Evaluator[AbsenceState]):
    entry_type = AbsenceState

    def __init__(self, rule: AbsenceRule) -> None:
        super().__init__(rule)
        self.after_ms = _ms(rule.after)
        self.context["after"] = format_duration(rule.after)

    def is_late(self, entry: AbsenceState, ts_ms: int) -> bool:
        return ts_ms < self.floor(entry)

    def floor(self, entry: AbsenceState) -> int:
        if entry.firing_since_ms is not None:
            return entry.firing_since_ms + 1
        return entry.last_seen_ms - self.grace_ms

    def deadline(self, entry: AbsenceState) -> int | None:
        if entry.firing_since_ms is not None:
            return None
        return entry.last_seen_ms + self.after_ms + 1 + self.grace_ms

    def _fire(self, key: str, entry: AbsenceState, out: list[AlertTransition]) -> AbsenceState:
        at = entry.last_seen_ms + self.after_ms
        change = Change("firing", at, entry.value, entry.last_seen_ms)
        out.append(
            self.transition(key, entry.subject, change, {"last_seen_ms": entry.last_seen_ms})
        )
        return AbsenceState(
            self.name, self.hash, entry.subject, entry.last_seen_ms, entry.value, at
        )

    def on_record(
        self, key: str, entry: AbsenceState | None, record: Record, out: list[AlertTransition]
    ) -> AbsenceState | None:
        if not isinstance(record, Measurement):
            return entry
        ts, value = record.ts_ms, record.value
        if entry is None:
            return AbsenceState(self.name, self.hash, self.subject_of(record), ts, value)
        if entry.firing_since_ms is None and entry.last_seen_ms + self.after_ms < ts:
            entry = self._fire(key, entry, out)  # silent for `after`, found out only now
        if entry.firing_since_ms is not None:
            change = Change("resolved", ts, value, ts)
            out.append(
                self.transition(key, entry.subject, change, {"last_seen_ms": entry.last_seen_ms})
            )
        if ts >= entry.last_seen_ms:
            last_seen, last = ts, value
        else:
            last_seen, last = entry.last_seen_ms, entry.value
        new = AbsenceState(self.name, self.hash, entry.subject, last_seen, last)
        return entry if new == entry else new

    def expire(
        self, key: str, entry: AbsenceState, now_ms: int, out: list[AlertTransition]
    ) -> AbsenceState | None:
        due = self.deadline(entry)
        if due is None or due > now_ms:
            return entry
        return self._fire(key, entry, out)

    def carry(self, stale: EngineState) -> AbsenceState | None:
        firing = firing_of(stale)
        if firing is None:
            return None
        since, value = firing
        number = value if isinstance(value, float) else math.nan
        return AbsenceState(self.name, self.hash, stale.subject, since, number, since)


class _WindowBase(Evaluator[WindowState]):
    """Shared by the aggregate evaluators."""

    entry_type = WindowState

    def __init__(self, rule: AggregateRule, pane_bound: int) -> None:
        super().__init__(rule)
        self.size_ms = _ms(rule.window.size)
        how = rule.aggregate
        self.how = how.percentile if isinstance(how, Percentile) else how
        self.sample_cap = (
            max(1, PERCENTILE_BUDGET // pane_bound) if isinstance(how, Percentile) else 0
        )
        self.fires = _predicate(rule.condition)
        self.clears = _clear_predicate(rule, self.fires)
        self.timing = Timing(_ms(rule.for_), _ms(rule.clear.for_) if rule.clear else 0)
        name = f"p{_as_written(how.percentile):g}" if isinstance(how, Percentile) else how
        self.context.update(_condition_context(rule.condition))
        self.context.update(
            aggregate=name, window=rule.window.kind, window_size=format_duration(rule.window.size)
        )

    def carry(self, stale: EngineState) -> WindowState | None:
        firing = firing_of(stale)
        if firing is None:
            return None
        since, value = firing
        return WindowState(
            self.name, self.hash, stale.subject, Phase("firing", since, value), since
        )

    def announce(
        self, key: str, subject: Subject, changes: list[Change], out: list[AlertTransition]
    ) -> None:
        for change in changes:
            window = {
                "window_start_ms": change.observed_ms - self.size_ms,
                "window_end_ms": change.observed_ms,
            }
            out.append(self.transition(key, subject, change, window))

    def observe(
        self, phase: Phase | None, ts_ms: int, value: float | None, changes: list[Change]
    ) -> Phase | None:
        if value is None:
            return phase
        return observe(
            phase, ts_ms, value, self.fires(value), self.clears(value), self.timing, changes
        )

    def floor(self, entry: WindowState) -> int | None:
        return entry.floor_ms

    def is_duplicate(self, entry: WindowState, record: Record) -> bool:
        if not isinstance(record, Measurement) or record.ts_ms > entry.watermark_ms:
            return False  # in order: after every record applied
        return seen_has(entry.seen, entry.watermark_ms, record.ts_ms, record.value)

    def keep_from(self, watermark_ms: int, floor_ms: int | None) -> int:
        """Earliest event time not late at this watermark and floor (seen keys before it
        are of no use)."""
        raise NotImplementedError

    def remember(
        self,
        entry: WindowState,
        watermark_ms: int,
        floor_ms: int | None,
        record: Measurement | None,
    ) -> tuple[tuple[int, ...], int | None]:
        """``(seen, seen_from_ms)`` with ``record``'s key added and useless keys pruned."""
        seen_from = entry.seen_from_ms
        keep = self.keep_from(watermark_ms, floor_ms)
        if seen_from is not None:
            keep = max(keep, seen_from)
        ts, value = (None, 0.0) if record is None else (record.ts_ms, record.value)
        seen, dropped = seen_add(entry.seen, entry.watermark_ms, watermark_ms, ts, value, keep)
        if dropped is not None:
            seen_from = dropped if seen_from is None else max(seen_from, dropped)
        return seen, seen_from

    def late_by_seen(self, entry: WindowState, ts_ms: int) -> bool:
        return entry.seen_from_ms is not None and ts_ms < entry.seen_from_ms


class _TumblingEvaluator(_WindowBase):
    """Tumbling and hopping windows: aligned panes of ``hop``, results when a window closes."""

    def __init__(self, rule: AggregateRule) -> None:
        window = rule.window
        size_ms = _ms(window.size)
        hop_ms = _ms(window.hop) if isinstance(window, HoppingWindow) else size_ms
        bound = -(-(size_ms + _ms(rule.grace)) // hop_ms) + 1
        super().__init__(rule, bound)
        self.hop_ms = hop_ms

    def is_late(self, entry: WindowState, ts_ms: int) -> bool:
        if entry.floor_ms is not None and ts_ms < entry.floor_ms:
            return True
        if self.late_by_seen(entry, ts_ms):
            return True
        return pane_start(ts_ms, self.hop_ms) + self.hop_ms + self.grace_ms <= entry.watermark_ms

    def keep_from(self, watermark_ms: int, floor_ms: int | None) -> int:
        # the first pane not closed at this watermark: start + hop + grace > watermark
        hop = self.hop_ms
        first_open = pane_start(watermark_ms - hop - self.grace_ms, hop) + hop
        return first_open if floor_ms is None else max(first_open, floor_ms)

    def deadline(self, entry: WindowState) -> int | None:
        end = next_window_end(entry.panes, entry.floor_ms, self.hop_ms)
        due = phase_deadline(entry.phase, self.timing)
        candidates = []
        if end is not None:
            candidates.append(end + self.grace_ms)
        if due is not None:
            candidates.append(due + 1 + self.grace_ms)
        return min(candidates) if candidates else None

    def _run(self, entry: WindowState, now_ms: int, changes: list[Change]) -> WindowState:
        """Close the windows and apply the deadlines due at ``now_ms``, in event-time order."""
        phase, floor, panes = entry.phase, entry.floor_ms, entry.panes
        grace = self.grace_ms
        while True:
            end = next_window_end(panes, floor, self.hop_ms)
            end_due = end is not None and end + grace <= now_ms
            if phase is not None:
                due = phase_deadline(phase, self.timing)
                if (
                    due is not None
                    and due + 1 + grace <= now_ms
                    and (end is None or not end_due or due < end)
                ):
                    phase, change = apply_deadline(phase, self.timing)
                    changes.append(change)
                    continue
            if end is None or not end_due:
                break
            value = aggregate(window_panes(panes, end, self.size_ms), self.how)
            phase = self.observe(phase, end, value, changes)
            floor = end
            panes = tuple(p for p in panes if p.start_ms > end - self.size_ms)
        if phase is entry.phase and floor == entry.floor_ms and panes is entry.panes:
            return entry
        seen, seen_from = self.remember(entry, entry.watermark_ms, floor, None)
        return WindowState(
            self.name,
            self.hash,
            entry.subject,
            phase,
            entry.watermark_ms,
            floor,
            panes,
            seen,
            seen_from,
        )

    def on_record(
        self, key: str, entry: WindowState | None, record: Record, out: list[AlertTransition]
    ) -> WindowState | None:
        if not isinstance(record, Measurement):
            return entry
        ts = record.ts_ms
        if entry is None:
            entry = WindowState(self.name, self.hash, self.subject_of(record), None, ts)
        watermark = max(entry.watermark_ms, ts)
        changes: list[Change] = []
        entry = self._run(entry, watermark, changes)
        self.announce(key, entry.subject, changes, out)
        panes = add_to_panes(entry.panes, ts, record.value, self.hop_ms, self.sample_cap)
        seen, seen_from = self.remember(entry, watermark, entry.floor_ms, record)
        return WindowState(
            self.name,
            self.hash,
            entry.subject,
            entry.phase,
            watermark,
            entry.floor_ms,
            panes,
            seen,
            seen_from,
        )

    def expire(
        self, key: str, entry: WindowState, now_ms: int, out: list[AlertTransition]
    ) -> WindowState | None:
        changes: list[Change] = []
        new = self._run(entry, now_ms, changes)
        self.announce(key, new.subject, changes, out)
        return new


class _SlidingEvaluator(_WindowBase):
    """Sliding windows: a result at every record, over ``(watermark - size, watermark]``."""

    def __init__(self, rule: AggregateRule) -> None:
        super().__init__(rule, MAX_SLIDING_CELLS)

    def is_late(self, entry: WindowState, ts_ms: int) -> bool:
        if entry.floor_ms is not None and ts_ms < entry.floor_ms:
            return True
        if self.late_by_seen(entry, ts_ms):
            return True
        wm = entry.watermark_ms
        return ts_ms < wm - self.grace_ms or ts_ms <= wm - self.size_ms

    def keep_from(self, watermark_ms: int, floor_ms: int | None) -> int:
        keep = max(watermark_ms - self.grace_ms, watermark_ms - self.size_ms + 1)
        return keep if floor_ms is None else max(keep, floor_ms)

    def deadline(self, entry: WindowState) -> int | None:
        due = phase_deadline(entry.phase, self.timing)
        return None if due is None else due + 1 + self.grace_ms

    def on_record(
        self, key: str, entry: WindowState | None, record: Record, out: list[AlertTransition]
    ) -> WindowState | None:
        if not isinstance(record, Measurement):
            return entry
        ts = record.ts_ms
        if entry is None:
            entry = WindowState(self.name, self.hash, self.subject_of(record), None, ts)
        watermark = max(entry.watermark_ms, ts)
        changes: list[Change] = []
        phase, applied = catch_up(entry.phase, watermark, self.timing, changes)
        floor = entry.floor_ms if applied is None else _later(entry.floor_ms, applied + 1)
        cells = sliding_insert(
            entry.panes, ts, record.value, watermark, self.size_ms, self.sample_cap
        )
        phase = self.observe(phase, watermark, aggregate(cells, self.how), changes)
        self.announce(key, entry.subject, changes, out)
        seen, seen_from = self.remember(entry, watermark, floor, record)
        return WindowState(
            self.name,
            self.hash,
            entry.subject,
            phase,
            watermark,
            floor,
            cells,
            seen,
            seen_from,
        )

    def expire(
        self, key: str, entry: WindowState, now_ms: int, out: list[AlertTransition]
    ) -> WindowState | None:
        changes: list[Change] = []
        phase, applied = expire_due(entry.phase, now_ms, self.grace_ms, self.timing, changes)
        if applied is None:
            return entry
        self.announce(key, entry.subject, changes, out)
        floor = _later(entry.floor_ms, applied + 1)
        seen, seen_from = self.remember(entry, entry.watermark_ms, floor, None)
        return WindowState(
            self.name,
            self.hash,
            entry.subject,
            phase,
            entry.watermark_ms,
            floor,
            entry.panes,
            seen,
            seen_from,
        )


AnyEvaluator = Evaluator[AlertState] | Evaluator[WindowState] | Evaluator[AbsenceState]


def _aggregate_evaluator(rule: AggregateRule) -> AnyEvaluator:
    if isinstance(rule.window, SlidingWindow):
        return _SlidingEvaluator(rule)
    return _TumblingEvaluator(rule)


EVALUATORS: dict[type[Any], Callable[[Any], AnyEvaluator]] = {
    ThresholdRule: _ThresholdEvaluator,
    AggregateRule: _aggregate_evaluator,
    AbsenceRule: _AbsenceEvaluator,
    StateRule: _StateEvaluator,
}
"""Rule model -> evaluator factory: the registry of rule types."""


def make_evaluator(rule: Rule) -> AnyEvaluator:
    """The evaluator of ``rule``, from :data:`EVALUATORS`."""
    return EVALUATORS[type(rule)](rule)
