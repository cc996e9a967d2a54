"""Builders shared by the rule engine and runtime tests (explicit timestamps everywhere)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from pydantic import TypeAdapter

from pipeline.models import AlertTransition, Measurement, StateEvent
from pipeline.rules.engine import EngineState, RuleEngine
from pipeline.rules.schema import Rule

ADAPTER: TypeAdapter[Any] = TypeAdapter(Rule)
T0 = 1_699_999_200_000
"""An epoch time aligned to the hour, so windows start at T0."""

BASES: dict[str, dict[str, Any]] = {
    "threshold": {
        "match": {"source": "aliunid", "metric": "sys.kW"},
        "condition": {"op": ">", "value": 40},
    },
    "aggregate": {
        "match": {"source": "aliunid", "metric": "sys.kW"},
        "window": {"kind": "tumbling", "size": "10s"},
        "aggregate": "avg",
        "condition": {"op": ">", "value": 40},
    },
    "absence": {"match": {"source": "element", "metric": "temperature"}, "after": "15m"},
    "state": {"match": {"source": "nobil", "state": "error"}, "equals": "error"},
}


def rule(type_: str = "threshold", **fields: Any) -> Any:
    """A validated rule of ``type_``; ``for`` may be passed as ``for_``; grace defaults to 0s."""
    if "for_" in fields:
        fields["for"] = fields.pop("for_")
    base = dict(BASES[type_])
    if "changes" in fields:
        base.pop("equals", None)
    data = {"name": f"r-{type_}", "type": type_, "grace": "0s", **base, **fields}
    return ADAPTER.validate_python(data)


def at(seconds: float) -> int:
    """Epoch ms ``seconds`` after :data:`T0`."""
    return T0 + round(seconds * 1000)


def meas(
    value: float,
    seconds: float,
    *,
    entity: str = "mp-1",
    metric: str = "sys.kW",
    source: str = "aliunid",
    stream: str = "ev-hub",
    unit: str = "kW",
    labels: dict[str, str] | None = None,
) -> Measurement:
    return Measurement(
        source, stream, entity, metric, float(value), unit, at(seconds), labels or {}
    )


def event(
    value: str,
    seconds: float,
    *,
    previous: str | None = None,
    entity: str = "NOR_01333/0",
    name: str = "error",
    source: str = "nobil",
    stream: str = "nobil-no",
    labels: dict[str, str] | None = None,
) -> StateEvent:
    return StateEvent(source, stream, entity, name, value, previous, at(seconds), labels or {})


def brief(transitions: Iterable[AlertTransition]) -> list[tuple[str, str, float, float | str]]:
    """``(rule, state, seconds after T0, value)`` of each transition."""
    return [(t.rule, t.state, (t.ts_ms - T0) / 1000, t.value) for t in transitions]


def feed(
    engine: RuleEngine, state: dict[str, EngineState], records: Sequence[Any]
) -> list[tuple[str, str, float, float | str]]:
    """Evaluate records in order (engine only, no timers); brief of every transition."""
    out: list[AlertTransition] = []
    for record in records:
        out.extend(engine.evaluate(state, record))
    return brief(out)


class RecordingState(dict[str, EngineState]):
    """A dict that records every write, to check the engine writes only on change."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[tuple[str, str]] = []

    def __setitem__(self, key: str, value: EngineState) -> None:
        self.writes.append(("set", key))
        super().__setitem__(key, value)

    def __delitem__(self, key: str) -> None:
        self.writes.append(("del", key))
        super().__delitem__(key)
