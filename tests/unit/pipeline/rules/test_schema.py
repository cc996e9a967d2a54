"""Rule schema: closed strict models, structured conditions, committed JSON schema in step."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel, TypeAdapter, ValidationError

from pipeline.rules import schema
from pipeline.rules.schema import (
    AbsenceRule,
    AggregateRule,
    Comparison,
    HoppingWindow,
    Percentile,
    Range,
    Rule,
    SlidingWindow,
    StateRule,
    ThresholdRule,
    TumblingWindow,
    rule_json_schema,
)

ROOT = Path(__file__).parents[4]
ADAPTER: TypeAdapter[ThresholdRule] = TypeAdapter(Rule)


def rule(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "name": "power-high",
        "type": "threshold",
        "match": {"metric": "sys.kW"},
        "condition": {"op": ">", "value": 40},
    }
    return {**base, **overrides}


def test_committed_schema_equals_generated() -> None:
    committed = json.loads((ROOT / "rules" / "schema.json").read_text(encoding="utf-8"))

    assert committed == rule_json_schema(), (
        "run: python -m pipeline.rules.schema > rules/schema.json"
    )


def test_schema_entry_point_prints_the_schema() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "pipeline.rules.schema"],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
        timeout=60,
    )

    assert json.loads(done.stdout) == rule_json_schema()


def test_schema_discriminates_rules_on_type_and_conditions_on_op() -> None:
    text = json.dumps(rule_json_schema())

    assert '"propertyName": "type"' in text
    assert '"propertyName": "op"' in text
    assert '"propertyName": "kind"' in text


def test_every_model_is_closed_and_strict() -> None:
    models = [
        value
        for value in vars(schema).values()
        if isinstance(value, type) and issubclass(value, BaseModel) and value is not BaseModel
    ]

    assert len(models) >= 6
    for model in models:
        assert model.model_config.get("extra") == "forbid", model
        assert model.model_config.get("strict") is True, model


def test_minimal_rule_gets_defaults() -> None:
    parsed = ADAPTER.validate_python(rule())

    assert parsed.for_ == timedelta(0)
    assert parsed.grace == timedelta(seconds=5)
    assert parsed.clear is None
    assert parsed.severity == "warning"
    assert parsed.channels == ["console"]
    assert parsed.match.entity == "*"
    assert parsed.match.source is None
    assert parsed.condition == Comparison(op=">", value=40.0)


def test_full_rule_parses() -> None:
    parsed = ADAPTER.validate_python(
        rule(
            description="d {{ value }}",
            match={
                "source": "aliunid",
                "stream": "*",
                "entity": "mp-*",
                "metric": "l1.V",
                "labels": {"phase": "R"},
            },
            condition={"op": "outside", "low": 210, "high": 250},
            **{"for": "10s"},
            clear={"condition": {"op": "between", "low": 215, "high": 245}, "for": "5s"},
            severity="critical",
            labels={"team": "energy"},
            summary="{{ entity }}",
            channels=["console", "email"],
        )
    )

    assert parsed.condition == Range(op="outside", low=210.0, high=250.0)
    assert parsed.for_ == timedelta(seconds=10)
    assert parsed.clear is not None
    assert parsed.clear.for_ == timedelta(seconds=5)
    assert parsed.match.labels == {"phase": "R"}


@pytest.mark.parametrize(
    ("overrides", "error_type"),
    [
        ({"condition": "sys.kW > 40"}, "model_attributes_type"),
        ({"condition": {"op": ">", "value": "40"}}, "float_type"),
        ({"condition": {"op": ">", "value": True}}, "float_type"),
        ({"condition": {"op": ">", "value": float("nan")}}, "finite_number"),
        ({"condition": {"op": "between", "low": 2, "high": 2}}, "range_order"),
        ({"condition": {"op": "=~", "value": 1}}, "union_tag_invalid"),
        ({"condition": {"op": ">", "value": 1, "extra": 1}}, "extra_forbidden"),
        ({"type": "aggregat"}, "union_tag_invalid"),
        ({"grace": "soon"}, "duration"),
        ({"name": "Power High"}, "string_pattern_mismatch"),
        ({"labels": {"n": 1}}, "string_type"),
        ({"channels": []}, "too_short"),
        ({"summary": "{{ x"}, "template_syntax"),
        ({"for": 5}, "duration"),
    ],
)
def test_invalid_rules_are_refused(overrides: dict[str, Any], error_type: str) -> None:
    with pytest.raises(ValidationError) as caught:
        ADAPTER.validate_python(rule(**overrides))

    assert [e["type"] for e in caught.value.errors()] == [error_type]


AGGREGATE: dict[str, Any] = {
    "name": "hub-avg-power",
    "type": "aggregate",
    "match": {"source": "aliunid", "metric": "sys.kW"},
    "window": {"kind": "tumbling", "size": "10m"},
    "aggregate": "avg",
    "condition": {"op": ">", "value": 40},
}


@pytest.mark.parametrize(
    ("window", "expected"),
    [
        (
            {"kind": "tumbling", "size": "10m"},
            TumblingWindow(kind="tumbling", size=timedelta(minutes=10)),
        ),
        (
            {"kind": "hopping", "size": "10m", "hop": "1m"},
            HoppingWindow(kind="hopping", size=timedelta(minutes=10), hop=timedelta(minutes=1)),
        ),
        (
            {"kind": "hopping", "size": "10m", "hop": "10m"},
            HoppingWindow(kind="hopping", size=timedelta(minutes=10), hop=timedelta(minutes=10)),
        ),
        (
            {"kind": "sliding", "size": "5m"},
            SlidingWindow(kind="sliding", size=timedelta(minutes=5)),
        ),
    ],
)
def test_window_kinds_parse(window: dict[str, Any], expected: BaseModel) -> None:
    parsed = ADAPTER.validate_python({**AGGREGATE, "window": window})

    assert isinstance(parsed, AggregateRule)
    assert parsed.window == expected


@pytest.mark.parametrize(
    ("aggregate", "expected"),
    [
        *[(name, name) for name in ("avg", "min", "max", "sum", "count", "last", "rate")],
        ({"percentile": 95}, Percentile(percentile=95.0)),
        ({"percentile": 99.9}, Percentile(percentile=99.9)),
    ],
)
def test_aggregates_parse(aggregate: Any, expected: Any) -> None:
    parsed = ADAPTER.validate_python({**AGGREGATE, "aggregate": aggregate})

    assert isinstance(parsed, AggregateRule)
    assert parsed.aggregate == expected


def test_absence_and_state_rules_parse() -> None:
    absence = ADAPTER.validate_python(
        {"name": "silent", "type": "absence", "match": {"metric": "temperature"}, "after": "15m"}
    )
    equals = ADAPTER.validate_python(
        {
            "name": "err",
            "type": "state",
            "match": {"state": "error", "entity": "NOR_*/*"},
            "equals": "error",
            "for": "5m",
            "clear": {"for": "1m"},
        }
    )
    changes = ADAPTER.validate_python(
        {
            "name": "off",
            "type": "state",
            "match": {"state": "status"},
            "changes": {"from": "online", "to": "offline"},
        }
    )

    assert isinstance(absence, AbsenceRule)
    assert absence.after == timedelta(minutes=15)
    assert isinstance(equals, StateRule) and isinstance(changes, StateRule)
    assert (equals.target, equals.for_, equals.clear and equals.clear.for_) == (
        "error",
        timedelta(minutes=5),
        timedelta(minutes=1),
    )
    assert changes.changes is not None
    assert (changes.changes.from_, changes.target) == ("online", "offline")


@pytest.mark.parametrize(
    ("overrides", "error_type"),
    [
        ({"window": {"kind": "rolling", "size": "1m"}}, "union_tag_invalid"),
        ({"window": {"kind": "tumbling", "size": "0s"}}, "sw.value.not_positive"),
        ({"window": {"kind": "hopping", "size": "10m", "hop": "15m"}}, "sw.value.hop_too_long"),
        ({"window": {"kind": "hopping", "size": "10m", "hop": "3m"}}, "sw.value.hop_not_divisor"),
        ({"window": {"kind": "hopping", "size": "10m", "hop": "1s"}}, "sw.value.hop_too_short"),
        ({"window": {"kind": "sliding", "size": "1m", "hop": "1s"}}, "extra_forbidden"),
        ({"aggregate": {"percentile": 100}}, "sw.value.percentile_range"),
        ({"aggregate": {"percentile": 0}}, "sw.value.percentile_range"),
        ({"aggregate": "median"}, "literal_error"),
        (
            {"grace": "1d", "window": {"kind": "hopping", "size": "10m", "hop": "1m"}},
            "sw.key.too_many_panes",
        ),
    ],
)
def test_invalid_aggregate_rules_are_refused(overrides: dict[str, Any], error_type: str) -> None:
    with pytest.raises(ValidationError) as caught:
        ADAPTER.validate_python({**AGGREGATE, **overrides})

    assert [e["type"] for e in caught.value.errors()] == [error_type]


@pytest.mark.parametrize(
    ("fields", "error_type"),
    [
        ({"equals": "error", "changes": {"from": "ok", "to": "error"}}, "sw.key.state_both"),
        ({}, "sw.key.state_neither"),
        ({"changes": {"from": "error", "to": "error"}}, "sw.key.same_states"),
    ],
)
def test_invalid_state_rules_are_refused(fields: dict[str, Any], error_type: str) -> None:
    with pytest.raises(ValidationError) as caught:
        ADAPTER.validate_python(
            {"name": "s", "type": "state", "match": {"state": "error"}, **fields}
        )

    assert [e["type"] for e in caught.value.errors()] == [error_type]
