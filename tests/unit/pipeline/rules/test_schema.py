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
from pipeline.rules.schema import Comparison, Range, Rule, ThresholdRule, rule_json_schema

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
        ({"type": "aggregate"}, "union_tag_invalid"),
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
