"""Alerts as operators see them (firing and pending, with labels, annotations, since, value),
derived from rule engine state: the worker's API, its page and ``streamwarden alerts`` all
build them here, from the same bytes (the ``alert_state`` changelog), so they agree.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Literal

import msgspec

from pipeline.alerting.matchers import Matcher, matches_all
from pipeline.models import AlertTransition
from pipeline.rules.state import AbsenceState, EngineState

__all__ = ["AlertView", "StateFilter", "alert_view", "select_alerts"]

StateFilter = Literal["firing", "pending", "all"]


class AlertView(msgspec.Struct, frozen=True):
    """One alert in progress.

    Attributes:
        fingerprint: the alert's identity (the rule state key).
        rule, state: the rule's name; ``pending`` or ``firing``.
        since_ms: pending: when the condition began to hold; firing: when it fired.
        value: the value that started the phase.
        severity: from the last firing transition, else from the rule (empty if unknown).
        labels: record labels plus ``rule``, ``alertname``, ``severity``, ``entity``,
            ``source``, ``stream``, ``metric`` (what matchers see).
        annotations: ``summary`` and ``description`` of the last firing transition.
    """

    fingerprint: str
    rule: str
    state: Literal["pending", "firing"]
    since_ms: int
    value: float | str
    severity: str
    entity: str
    source: str
    metric: str
    labels: dict[str, str]
    annotations: dict[str, str]


def alert_view(
    fingerprint: str,
    entry: EngineState,
    transition: AlertTransition | None = None,
    severity_of: Callable[[str], str | None] = lambda _rule: None,
) -> AlertView | None:
    """The alert ``entry`` stands for, or None when nothing is in progress."""
    if isinstance(entry, AbsenceState):
        if entry.firing_since_ms is None:
            return None
        state: Literal["pending", "firing"] = "firing"
        since_ms: int = entry.firing_since_ms
        value: float | str = entry.value
    else:
        if entry.phase is None:
            return None
        state, since_ms, value = entry.phase.state, entry.phase.since_ms, entry.phase.value
    firing = transition if transition is not None and transition.state == "firing" else None
    severity = (firing.severity if firing else None) or severity_of(entry.rule) or ""
    subject = entry.subject
    labels = {
        **subject.labels,
        **(firing.labels if firing else {}),
        "rule": entry.rule,
        "alertname": entry.rule,
        "severity": severity,
        "entity": subject.entity,
        "source": subject.source,
        "stream": subject.stream,
        "metric": subject.metric,
    }
    annotations = {}
    if firing is not None:
        annotations = {"summary": firing.summary, "description": firing.description}
    return AlertView(
        fingerprint=fingerprint,
        rule=entry.rule,
        state=state,
        since_ms=since_ms,
        value=value,
        severity=severity,
        entity=subject.entity,
        source=subject.source,
        metric=subject.metric,
        labels=labels,
        annotations={k: v for k, v in annotations.items() if v},
    )


def select_alerts(
    entries: Iterable[tuple[str, EngineState]],
    transitions: Mapping[str, AlertTransition],
    *,
    matchers: Sequence[Matcher] = (),
    state: StateFilter = "all",
    severity_of: Callable[[str], str | None] = lambda _rule: None,
) -> list[AlertView]:
    """Alerts in progress matching ``matchers`` and ``state``, oldest first."""
    out: list[AlertView] = []
    for fingerprint, entry in entries:
        view = alert_view(fingerprint, entry, transitions.get(fingerprint), severity_of)
        if view is None or (state != "all" and view.state != state):
            continue
        if matches_all(matchers, {**view.labels, "state": view.state}):
            out.append(view)
    out.sort(key=lambda v: (v.since_ms, v.rule, v.entity, v.fingerprint))
    return out


def to_jsonable(value: Any) -> Any:
    """Plain JSON types of a msgspec struct (or list of them)."""
    return msgspec.to_builtins(value)
