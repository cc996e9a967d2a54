"""Rule file schema: pydantic v2 models, every one strict and closed (``extra="forbid"``).

A rule file holds either a mapping ``{rules: [...]}`` or a bare list of rules. A rule is a
discriminated union on ``type``; only ``threshold`` exists now. Adding a rule type means
adding a model with its own ``type: Literal[...]`` (sharing ``_RuleBase``) to the :data:`Rule`
union, plus an evaluator in the engine; the loader and the JSON schema follow by themselves.

Conditions are structured YAML (``{op: ">", value: 40}``), never expression strings.

Validation is strict (no silent coercion: ``value: "40"`` and ``labels: {phase: 1}`` are
errors) so what a rule says is what it does. ``rules/schema.json`` is generated from these
models by ``python -m pipeline.rules.schema``; a test keeps it in step.
"""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Annotated, Any, Final, Literal, Union

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, TypeAdapter, model_validator
from pydantic.config import JsonDict
from pydantic_core import PydanticCustomError

from pipeline.rules.duration import Duration
from pipeline.rules.templates import TemplateCompileError, compile_template

__all__ = [
    "COMPARISON_OPS",
    "OPERATORS",
    "RANGE_OPS",
    "RULE_NAME_PATTERN",
    "SEVERITIES",
    "Clear",
    "Comparison",
    "Condition",
    "Hint",
    "Match",
    "Range",
    "Rule",
    "RuleFile",
    "ThresholdRule",
    "rule_json_schema",
]

RULE_NAME_PATTERN: Final = r"^[a-z0-9][a-z0-9_.-]*$"
COMPARISON_OPS: Final = (">", ">=", "<", "<=", "==", "!=")
RANGE_OPS: Final = ("between", "outside")
OPERATORS: Final = COMPARISON_OPS + RANGE_OPS
SEVERITIES: Final = ("info", "warning", "critical")

DEFAULT_SUMMARY: Final = "{{ rule }}: {{ entity }} {{ metric }} = {{ value }} {{ unit }}"


class Hint:
    """Annotated metadata: how to write a value right, quoted by the loader after an error."""

    def __init__(self, text: str) -> None:
        self.text = text

    def __repr__(self) -> str:
        return f"Hint({self.text!r})"


def _check_template(text: str) -> str:
    try:
        compile_template(text)
    except TemplateCompileError as exc:
        raise PydanticCustomError(
            "template_syntax",
            "template syntax error: {problem} (template line {lineno})",
            {"problem": exc.message, "lineno": exc.lineno},
        ) from None
    return text


TemplateText = Annotated[
    str,
    AfterValidator(_check_template),
    Field(max_length=4000, json_schema_extra={"format": "jinja2-template"}),
]
"""Jinja2 template text, checked to compile when the rule is loaded."""

RuleName = Annotated[
    str,
    Field(min_length=1, max_length=128, pattern=RULE_NAME_PATTERN),
    Hint("use lowercase letters, digits, '_', '.' and '-', starting with a letter or digit"),
]
NonEmpty = Annotated[str, Field(min_length=1, max_length=256)]
FiniteNumber = Annotated[float, Field(allow_inf_nan=False)]
Glob = Annotated[
    str,
    Field(min_length=1, max_length=256, description="Shell-style glob: *, ?, [abc]."),
]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class Comparison(_Model):
    """Compare the value with a threshold: {op: ">", value: 40}."""

    op: Literal[">", ">=", "<", "<=", "==", "!="]
    value: FiniteNumber


class Range(_Model):
    """between: low <= value <= high; outside: value < low or value > high. low < high."""

    op: Literal["between", "outside"]
    low: FiniteNumber
    high: FiniteNumber

    @model_validator(mode="after")
    def _low_below_high(self) -> Range:
        if not self.low < self.high:
            raise PydanticCustomError(
                "range_order",
                "low ({low}) must be less than high ({high})",
                {"low": self.low, "high": self.high},
            )
        return self


Condition = Annotated[
    Union[Comparison, Range],  # noqa: UP007
    Field(discriminator="op"),
    Hint('write a mapping such as {op: ">", value: 40} or {op: between, low: 1, high: 2}'),
]
"""A structured condition, discriminated on ``op``."""

_NO_WAIT: Final = timedelta(0)
_FOR_DEFAULT: Final[JsonDict] = {"default": "0s"}  # the schema shows YAML's form, not ISO 8601


class Match(_Model):
    """Which measurements a rule looks at."""

    source: NonEmpty | None = Field(
        default=None, description="Upstream family (aliunid...); any when absent."
    )
    stream: Glob = Field(default="*", description="Glob over the configured stream name.")
    entity: Glob = Field(default="*", description="Glob over the entity (meter, sensor...).")
    metric: NonEmpty = Field(description="Exact metric name, e.g. sys.kW.")
    labels: dict[str, str] = Field(
        default_factory=dict, description="Record labels that must be equal."
    )


class Clear(_Model):
    """When a firing alert resolves; without a condition, when the rule's condition is false.

    A clear condition only counts while the rule's condition is false, so overlapping
    conditions cannot resolve an alert that should still fire.
    """

    condition: Condition | None = None
    for_: Duration = Field(
        default=_NO_WAIT,
        alias="for",
        description="How long the clear condition must hold before resolving.",
        json_schema_extra=_FOR_DEFAULT,
    )


class _RuleBase(_Model):
    """Fields every rule type has."""

    name: RuleName = Field(description="Unique across all rule files.")
    description: TemplateText = Field(default="", description="Jinja2 template.")
    match: Match
    severity: Literal["info", "warning", "critical"] = "warning"
    labels: dict[str, str] = Field(
        default_factory=dict, description="Added to every alert of the rule."
    )
    summary: TemplateText = Field(default=DEFAULT_SUMMARY, description="Jinja2 template.")
    channels: list[NonEmpty] = Field(
        default_factory=lambda: ["console"],
        min_length=1,
        description="Channel names; console always exists.",
    )


class ThresholdRule(_RuleBase):
    """Fires when the condition has held for `for` (event time) on one entity."""

    type: Literal["threshold"]
    condition: Condition
    for_: Duration = Field(
        default=_NO_WAIT,
        alias="for",
        description="How long the condition must hold before firing.",
        json_schema_extra=_FOR_DEFAULT,
    )
    clear: Clear | None = Field(default=None, description="Hysteresis; see Clear.")


Rule = Annotated[
    Union[ThresholdRule],  # noqa: UP007
    Field(discriminator="type"),
    Hint("write each rule as a mapping with at least name, type, match and condition"),
]
"""Any rule, discriminated on ``type``. A new rule type is a new model in this union (and an
evaluator in :mod:`pipeline.rules.engine`)."""


class RuleFile(_Model):
    """A rule file written as a mapping."""

    rules: list[Rule]


_FILE_ADAPTER: TypeAdapter[RuleFile | list[Rule]] = TypeAdapter(RuleFile | list[Rule])


def rule_json_schema() -> dict[str, Any]:
    """JSON Schema of a rule file (mapping or list form), for editors."""
    schema = _FILE_ADAPTER.json_schema(by_alias=True)
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "StreamWarden rule file",
        "description": "Generated by `python -m pipeline.rules.schema`; do not edit.",
        **schema,
    }


def main() -> None:
    """Print the JSON Schema (``python -m pipeline.rules.schema > rules/schema.json``)."""
    print(json.dumps(rule_json_schema(), indent=2, sort_keys=False))


if __name__ == "__main__":
    main()
