"""Rule evaluation: plain Python, one measurement at a time, event time only.

:class:`RuleEngine` turns validated rules into small compiled matchers, indexed by
``(source, metric)`` (plus a bucket per metric for rules without ``source``), so an event only
meets rules that could match it. :meth:`RuleEngine.evaluate` reads and updates alert state in
a caller-owned mapping (a dict in tests, a faust table in the worker) and returns the
transitions to announce.

Lifecycle of one alert (one rule, one entity, one set of record labels)::

    ok --condition true--> pending --held for `for`--> firing --clear held for clear.for--> ok
     ^                        |                                                    (resolved)
     +----condition false-----+

- ``for: 0s`` goes from ok straight to firing on the first true event.
- Time is the measurement's ``ts_ms``; nothing here reads a clock. An event older than the
  pending start does not count towards ``for``.
- ``ok`` is not stored: the entry is deleted, so state only holds alerts in progress.
- State is written only when it changes: a steady firing alert costs a read per event.
- Without ``clear``, a firing alert resolves when its condition is false (after
  ``clear.for`` if given). With ``clear.condition`` (hysteresis) it resolves when that is
  true and the firing condition is not.
- NaN values are ignored (they compare false with everything and would resolve alerts).
"""

from __future__ import annotations

import fnmatch
import hashlib
import operator
import re
from collections.abc import Callable, Iterable, MutableMapping
from dataclasses import dataclass
from typing import Any, Literal

import msgspec
from jinja2 import Template

from pipeline.models import AlertTransition, Measurement
from pipeline.rules.schema import Comparison, Condition, Range, Rule
from pipeline.rules.templates import compile_template, render

__all__ = ["AlertState", "RuleEngine", "alert_fingerprint"]


class AlertState(msgspec.Struct, frozen=True):
    """State of one alert in progress, stored under its fingerprint.

    Attributes:
        state: ``pending`` (condition true, waiting for ``for``) or ``firing``; ``ok`` is never
            stored by the engine (the entry is deleted) but is accepted when read.
        since_ms: event time the current state began (pending: when the condition first held;
            firing: when it fired).
        clear_since_ms: while firing, event time the clear condition began to hold; ``None``
            when it does not hold.
        last_value: the value of the measurement that caused the last change of this entry.
    """

    state: Literal["ok", "pending", "firing"]
    since_ms: int
    clear_since_ms: int | None = None
    last_value: float = 0.0


def alert_fingerprint(rule: str, entity: str, labels: dict[str, str]) -> str:
    """Stable identity of an alert: 16 hex digits of BLAKE2b over rule, entity, sorted labels."""
    parts = [rule, entity]
    for key in sorted(labels):
        parts.append(key)
        parts.append(labels[key])
    return hashlib.blake2b("\x1f".join(parts).encode(), digest_size=8).hexdigest()


Predicate = Callable[[float], bool]
StrMatcher = Callable[[str], bool] | None


def _predicate(condition: Condition) -> Predicate:
    if isinstance(condition, Comparison):
        compare = _COMPARE[condition.op]
        threshold = condition.value
        return lambda value: compare(value, threshold)
    low, high = condition.low, condition.high
    if condition.op == "between":
        return lambda value: low <= value <= high
    return lambda value: value < low or value > high


_COMPARE: dict[str, Callable[[float, float], bool]] = {
    ">": operator.gt,
    ">=": operator.ge,
    "<": operator.lt,
    "<=": operator.le,
    "==": operator.eq,
    "!=": operator.ne,
}


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


def _threshold_context(condition: Condition) -> dict[str, Any]:
    if isinstance(condition, Range):
        return {
            "op": condition.op,
            "threshold": f"{condition.low:g}..{condition.high:g}",
            "low": _as_written(condition.low),
            "high": _as_written(condition.high),
        }
    return {"op": condition.op, "threshold": _as_written(condition.value)}


@dataclass(frozen=True, slots=True)
class _Compiled:
    """One rule, prepared for the hot path."""

    rule: Rule
    name: str
    stream: StrMatcher
    entity: StrMatcher
    labels: tuple[tuple[str, str], ...]
    fires: Predicate
    clears: Predicate
    for_ms: int
    clear_for_ms: int
    summary: Template
    description: Template | None
    channels: tuple[str, ...]
    extra_context: dict[str, Any]

    def matches(self, m: Measurement) -> bool:
        if self.stream is not None and not self.stream(m.stream):
            return False
        if self.entity is not None and not self.entity(m.entity):
            return False
        if self.labels:
            record = m.labels
            for key, value in self.labels:
                if record.get(key) != value:
                    return False
        return True


def _compile(rule: Rule) -> _Compiled:
    fires = _predicate(rule.condition)
    clear = rule.clear
    clears: Predicate
    if clear is not None and clear.condition is not None:
        clear_condition = _predicate(clear.condition)

        def clears(value: float) -> bool:
            return clear_condition(value) and not fires(value)

    else:

        def clears(value: float) -> bool:
            return not fires(value)

    return _Compiled(
        rule=rule,
        name=rule.name,
        stream=_glob(rule.match.stream),
        entity=_glob(rule.match.entity),
        labels=tuple(sorted(rule.match.labels.items())),
        fires=fires,
        clears=clears,
        for_ms=_ms(rule.for_),
        clear_for_ms=_ms(clear.for_) if clear is not None else 0,
        summary=compile_template(rule.summary),
        description=compile_template(rule.description) if rule.description else None,
        channels=tuple(rule.channels),
        extra_context=_threshold_context(rule.condition),
    )


def _ms(duration: Any) -> int:
    return int(duration.total_seconds() * 1000)


class RuleEngine:
    """Evaluates measurements against rules.

    Args:
        rules: validated rules (from :func:`pipeline.rules.loader.load_rules`). Templates
            are compiled here, once.
    """

    def __init__(self, rules: Iterable[Rule]) -> None:
        self._rules: list[_Compiled] = [_compile(rule) for rule in rules]
        self._by_source: dict[tuple[str, str], list[_Compiled]] = {}
        self._any_source: dict[str, list[_Compiled]] = {}
        for compiled in self._rules:
            source = compiled.rule.match.source
            metric = compiled.rule.match.metric
            if source is None:
                self._any_source.setdefault(metric, []).append(compiled)
            else:
                self._by_source.setdefault((source, metric), []).append(compiled)

    @property
    def rules(self) -> list[Rule]:
        """The rules, in the order given."""
        return [compiled.rule for compiled in self._rules]

    def candidates(self, m: Measurement) -> list[str]:
        """Names of the rules the index hands to ``m`` before globs and labels are checked."""
        return [
            c.name
            for c in (
                *self._by_source.get((m.source, m.metric), ()),
                *self._any_source.get(m.metric, ()),
            )
        ]

    def evaluate(
        self, state: MutableMapping[str, AlertState], m: Measurement
    ) -> list[AlertTransition]:
        """Evaluate one measurement against the rules that can match it.

        Args:
            state: alert state by fingerprint; read, and written only on change.
            m: the measurement; ``m.ts_ms`` is the time used for ``for`` and ``clear.for``.

        Returns:
            The transitions (``firing`` / ``resolved``) this measurement caused, in rule
            order; usually empty.
        """
        out: list[AlertTransition] = []
        value = m.value
        if value != value:  # NaN
            return out
        specific = self._by_source.get((m.source, m.metric))
        if specific is not None:
            for compiled in specific:
                if compiled.matches(m):
                    self._step(compiled, state, m, out)
        generic = self._any_source.get(m.metric)
        if generic is not None:
            for compiled in generic:
                if compiled.matches(m):
                    self._step(compiled, state, m, out)
        return out

    def _step(
        self,
        c: _Compiled,
        state: MutableMapping[str, AlertState],
        m: Measurement,
        out: list[AlertTransition],
    ) -> None:
        value = m.value
        ts_ms = m.ts_ms
        key = alert_fingerprint(c.name, m.entity, m.labels)
        current = state.get(key)

        if current is not None and current.state == "firing":
            if not c.clears(value):
                if current.clear_since_ms is not None:  # clearing was interrupted
                    state[key] = AlertState("firing", current.since_ms, None, current.last_value)
                return
            clear_since = current.clear_since_ms
            if clear_since is None:
                clear_since = ts_ms
            if ts_ms - clear_since >= c.clear_for_ms:
                del state[key]
                out.append(self._transition(c, m, key, "resolved"))
            elif current.clear_since_ms is None:
                state[key] = AlertState("firing", current.since_ms, ts_ms, current.last_value)
            return

        if not c.fires(value):
            if current is not None:
                del state[key]  # pending (or a stored ok) falls back to ok, silently
            return
        pending = current is not None and current.state == "pending"
        since = current.since_ms if pending and current is not None else ts_ms
        if ts_ms - since >= c.for_ms:
            state[key] = AlertState("firing", ts_ms, None, value)
            out.append(self._transition(c, m, key, "firing"))
        elif not pending:
            state[key] = AlertState("pending", ts_ms, None, value)

    def _transition(
        self,
        c: _Compiled,
        m: Measurement,
        fingerprint: str,
        new_state: Literal["firing", "resolved"],
    ) -> AlertTransition:
        rule = c.rule
        labels = {**m.labels, **rule.labels}
        context: dict[str, Any] = {
            "rule": c.name,
            "entity": m.entity,
            "source": m.source,
            "stream": m.stream,
            "metric": m.metric,
            "value": m.value,
            "unit": m.unit,
            "labels": labels,
            "state": new_state,
            "ts_ms": m.ts_ms,
            "severity": rule.severity,
            **c.extra_context,
        }
        return AlertTransition(
            fingerprint=fingerprint,
            rule=c.name,
            state=new_state,
            entity=m.entity,
            source=m.source,
            stream=m.stream,
            metric=m.metric,
            value=m.value,
            severity=rule.severity,
            ts_ms=m.ts_ms,
            summary=render(c.summary, context),
            description=render(c.description, context) if c.description is not None else "",
            channels=c.channels,
            labels=labels,
        )
