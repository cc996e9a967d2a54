"""Rule file schema: pydantic v2 models, every one strict and closed (``extra="forbid"``).

A rule file holds either a mapping ``{rules: [...]}`` or a bare list of rules. A rule is a
discriminated union on ``type``; adding a rule type means adding a model with its own
``type: Literal[...]`` (sharing ``_RuleBase``) to the :data:`Rule` union plus an evaluator in
:mod:`pipeline.rules.engine`; the loader and the JSON schema follow by themselves.

Rule types (every one also takes ``severity``, ``labels``, ``identity``, ``summary``,
``description``, ``channels`` and ``grace``)::

    - name: power-high                  # threshold: the value of each measurement
      type: threshold
      match: {source: aliunid, metric: sys.kW, entity: "mp-*", labels: {phase: R}}
      condition: {op: ">", value: 40}   # >, >=, <, <=, ==, != {value}; between, outside {low, high}
      for: 2s                           # held this long before firing (default 0s)
      clear: {condition: {op: "<", value: 35}, for: 1m}   # hysteresis, with its own for

    - name: hub-avg-power               # aggregate: a windowed aggregate of the values
      type: aggregate
      match: {source: aliunid, metric: sys.kW}
      window: {kind: tumbling, size: 10m}   # {kind: hopping, size: 10m, hop: 1m}
                                            # {kind: sliding, size: 5m}
      aggregate: avg                    # avg|min|max|sum|count|last|rate, or {percentile: 95}
      condition: {op: ">", value: 40}
      for: 0s
      clear: {condition: {op: "<", value: 35}, for: 1m}
      grace: 30s

    - name: sensor-silent               # absence: no measurement from an entity
      type: absence
      match: {source: element, metric: temperature, entity: "*"}
      after: 15m

    - name: connector-error             # state: a state event's value
      type: state
      match: {source: nobil, state: error, entity: "NOR_*/*"}
      equals: error                     # or: changes: {from: available, to: error}
      for: 5m
      clear: {for: 1m}                  # the value must differ this long to resolve

Meaning, in short (the engine module documents the details):

- ``match`` picks records: measurements by ``metric`` (threshold, aggregate, absence), state
  events by ``state``, the state's name (state rules); ``source`` exact, ``stream`` and
  ``entity`` shell globs, ``labels`` exact (identity labels only, never annotations). One
  alert per rule, entity and identity labels.
- ``identity``: which record labels tell a rule's alerts of one entity apart (default: all
  the record's identity labels, see ``docs/records.md``); ``[]`` gives one alert per
  entity; naming an annotation (``[alert_id]``) splits alerts by it. What it leaves out
  becomes an annotation of the alert.
- ``for`` counts event time from the first record (or window result) for which the
  condition holds; the condition is taken to hold until a record says otherwise, so a
  pending alert fires from a timer even if no further record arrives.
- ``clear``: without it an alert resolves when the condition is false; ``clear.condition``
  must then hold (while the firing condition does not) and ``clear.for`` is how long.
- ``window``: epoch-aligned ``[start, start + size)`` windows starting every ``hop``
  (tumbling: hop = size; ``size`` a multiple of ``hop``), evaluated when they close; sliding
  windows ``(t - size, t]`` evaluated at every record. See :mod:`pipeline.windows`.
- ``aggregate``: ``rate`` is change per second; ``{percentile: p}`` with 0 < p < 100,
  nearest rank over a bounded sample.
- ``after``: an absence alert fires ``after`` past the last record of an entity that has
  sent at least one, and resolves with its next record.
- ``equals``: fires while the state has this value; ``changes``: fires when the state goes
  from ``from`` to ``to`` and resolves when it leaves ``to``.
- ``grace``: how late (in event time) a record may be and still count; timers wait this
  long past their deadline. Default 5s.

Conditions are structured YAML (``{op: ">", value: 40}``), never expression strings.

Validation is strict (no silent coercion: ``value: "40"`` and ``labels: {phase: 1}`` are
errors) so what a rule says is what it does. Errors that involve more than one key are
raised as ``PydanticCustomError`` whose type starts with ``sw.value.`` (the loader puts the
offending value, as written, in front of the message) or ``sw.key.`` (used as is); a ``ctx``
entry ``at`` names the key the message is about. ``rules/schema.json`` is generated from these
models by ``python -m pipeline.rules.schema``; a test keeps it in step.
"""

from __future__ import annotations

import json
import math
from datetime import timedelta
from typing import Annotated, Any, Final, Literal, Union

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    TypeAdapter,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic.config import JsonDict
from pydantic_core import PydanticCustomError

from pipeline.rules.duration import Duration, format_duration
from pipeline.rules.templates import (
    TemplateCompileError,
    check_template_budget,
    compile_template,
)
from pipeline.windows import AGGREGATES, AggregateName

__all__ = [
    "AGGREGATES",
    "COMPARISON_OPS",
    "DEFAULT_GRACE",
    "MAX_OPEN_PANES",
    "MAX_PANES_PER_WINDOW",
    "OPERATORS",
    "RANGE_OPS",
    "RULE_NAME_PATTERN",
    "RULE_TYPES",
    "SEVERITIES",
    "WINDOW_KINDS",
    "AbsenceRule",
    "Aggregate",
    "AggregateRule",
    "Changes",
    "Clear",
    "Comparison",
    "Condition",
    "Hint",
    "HoppingWindow",
    "Match",
    "Percentile",
    "Range",
    "Rule",
    "RuleFile",
    "SlidingWindow",
    "StateClear",
    "StateMatch",
    "StateRule",
    "ThresholdRule",
    "TumblingWindow",
    "Window",
    "rule_json_schema",
]

RULE_NAME_PATTERN: Final = r"^[a-z0-9][a-z0-9_.-]*$"
COMPARISON_OPS: Final = (">", ">=", "<", "<=", "==", "!=")
RANGE_OPS: Final = ("between", "outside")
OPERATORS: Final = COMPARISON_OPS + RANGE_OPS
SEVERITIES: Final = ("info", "warning", "critical")
RULE_TYPES: Final = ("threshold", "aggregate", "absence", "state")
WINDOW_KINDS: Final = ("tumbling", "hopping", "sliding")
DEFAULT_GRACE: Final = timedelta(seconds=5)
"""Grace of a rule that names none: covers the usual transport delay of live records."""
MAX_PANES_PER_WINDOW: Final = 100
"""Largest ``size / hop`` of a hopping window (each pane is one accumulator in state)."""
MAX_OPEN_PANES: Final = 200
"""Most panes one entity of a tumbling or hopping rule keeps: ``(size + grace) / hop + 1``."""

DEFAULT_SUMMARY: Final = "{{ rule }}: {{ entity }} {{ metric }} = {{ value }} {{ unit }}"
DEFAULT_AGGREGATE_SUMMARY: Final = (
    "{{ rule }}: {{ entity }} {{ aggregate }} of {{ metric }} = {{ value }} {{ unit }}"
)
DEFAULT_ABSENCE_SUMMARY: Final = (
    "{{ rule }}: {% if state == 'firing' %}no {{ metric }} from {{ entity }} for {{ after }}"
    "{% else %}{{ entity }} sends {{ metric }} again{% endif %}"
)
DEFAULT_STATE_SUMMARY: Final = "{{ rule }}: {{ entity }} {{ metric }} is {{ value }}"


def _value_error(kind: str, message: str, **ctx: Any) -> PydanticCustomError:
    """An error the loader words as ``<value as written> <message>``."""
    return PydanticCustomError(f"sw.value.{kind}", message, ctx)


def _key_error(kind: str, message: str, **ctx: Any) -> PydanticCustomError:
    """An error the loader words as ``<message>``; ``at`` in ``ctx`` names the key."""
    return PydanticCustomError(f"sw.key.{kind}", message, ctx)


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
    try:
        check_template_budget(text)  # one render on sample data, under the live budget
    except TemplateCompileError as exc:
        raise PydanticCustomError(
            "template_budget",
            "template refused on sample data: {problem}",
            {"problem": exc.message},
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
_GRACE_DEFAULT: Final[JsonDict] = {"default": format_duration(DEFAULT_GRACE)}


def _positive(value: timedelta) -> timedelta:
    if value <= _NO_WAIT:
        raise _value_error(
            "not_positive", "is zero; use a duration longer than 0s, such as 30s or 5m"
        )
    return value


PositiveDuration = Annotated[Duration, AfterValidator(_positive)]
"""A duration longer than zero."""


def _ms(value: timedelta) -> int:
    return (value.days * 86_400 + value.seconds) * 1000 + value.microseconds // 1000


class _MatchBase(_Model):
    source: NonEmpty | None = Field(
        default=None, description="Upstream family (aliunid, nobil...); any when absent."
    )
    stream: Glob = Field(default="*", description="Glob over the configured stream name.")
    entity: Glob = Field(default="*", description="Glob over the entity (meter, connector...).")
    labels: dict[str, str] = Field(
        default_factory=dict, description="Record labels that must be equal."
    )


class Match(_MatchBase):
    """Which measurements a threshold, aggregate or absence rule looks at."""

    metric: NonEmpty = Field(description="Exact metric name, e.g. sys.kW.")


class StateMatch(_MatchBase):
    """Which state events a state rule looks at."""

    state: NonEmpty = Field(description="Exact state name, e.g. error or status.")


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


class StateClear(_Model):
    """When a firing state alert resolves: once the state has differed for ``for``."""

    for_: Duration = Field(
        default=_NO_WAIT,
        alias="for",
        description="How long the state must differ before resolving.",
        json_schema_extra=_FOR_DEFAULT,
    )


class TumblingWindow(_Model):
    """Back-to-back windows ``[k*size, (k+1)*size)``, aligned to the epoch."""

    kind: Literal["tumbling"]
    size: PositiveDuration


_NICE_HOPS: Final = tuple(
    timedelta(seconds=s)
    for s in (1, 2, 5, 10, 15, 20, 30, 60, 120, 300, 600, 900, 1200, 1800, 3600, 7200, 10800)
)


class HoppingWindow(_Model):
    """Windows of ``size`` starting every ``hop``: ``[k*hop, k*hop + size)``; they overlap."""

    kind: Literal["hopping"]
    size: PositiveDuration
    hop: PositiveDuration = Field(description="A divisor of size, at most size.")

    @field_validator("hop")
    @classmethod
    def _hop_fits_size(cls, hop: timedelta, info: ValidationInfo) -> timedelta:
        size = info.data.get("size")
        if not isinstance(size, timedelta):
            return hop
        size_ms, hop_ms = _ms(size), _ms(hop)
        shown = format_duration(size)
        if hop_ms > size_ms:
            raise _value_error(
                "hop_too_long",
                "is longer than the window size {size}; use a hop no longer than the size",
                size=shown,
            )
        if size_ms % hop_ms:
            nice = [h for h in _NICE_HOPS if h <= hop and size_ms % _ms(h) == 0]
            example = f", such as {format_duration(nice[-1])}" if nice else ""
            raise _value_error(
                "hop_not_divisor",
                "does not divide the window size {size} evenly; use a hop that does{example}",
                size=shown,
                example=example,
            )
        if size_ms // hop_ms > MAX_PANES_PER_WINDOW:
            least = timedelta(milliseconds=math.ceil(size_ms / MAX_PANES_PER_WINDOW))
            raise _value_error(
                "hop_too_short",
                "splits the {size} window into {panes} panes; use a hop of at least {least} "
                "(at most {most} panes per window)",
                size=shown,
                panes=size_ms // hop_ms,
                least=format_duration(least),
                most=MAX_PANES_PER_WINDOW,
            )
        return hop


class SlidingWindow(_Model):
    """The window ``(t - size, t]`` ending at each record's event time ``t``."""

    kind: Literal["sliding"]
    size: PositiveDuration


Window = Annotated[
    Union[TumblingWindow, HoppingWindow, SlidingWindow],  # noqa: UP007
    Field(discriminator="kind"),
    Hint("write a mapping such as {kind: tumbling, size: 10m}"),
]
"""A window, discriminated on ``kind``."""


class Percentile(_Model):
    """The ``percentile``-th percentile (nearest rank) of the values in the window."""

    percentile: FiniteNumber = Field(
        description="Above 0 and below 100, e.g. 95 or 99.9.",
        json_schema_extra={"exclusiveMinimum": 0, "exclusiveMaximum": 100},
    )

    @field_validator("percentile")
    @classmethod
    def _in_range(cls, value: float) -> float:
        if not 0 < value < 100:
            raise _value_error(
                "percentile_range",
                "is out of range; use a number above 0 and below 100, such as 95 or 99.9",
            )
        return value


def _aggregate_tag(value: Any) -> str:
    return "percentile" if isinstance(value, dict | Percentile) else "name"


Aggregate = Annotated[
    Union[  # noqa: UP007
        Annotated[AggregateName, Tag("name"), Hint("a mapping such as {percentile: 95}")],
        Annotated[Percentile, Tag("percentile")],
    ],
    Discriminator(_aggregate_tag),
]
"""An aggregate name, or ``{percentile: p}``."""


class _RuleBase(_Model):
    """Fields every rule type has."""

    name: RuleName = Field(description="Unique across all rule files.")
    description: TemplateText = Field(default="", description="Jinja2 template.")
    severity: Literal["info", "warning", "critical"] = "warning"
    labels: dict[str, str] = Field(
        default_factory=dict, description="Added to every alert of the rule."
    )
    identity: list[NonEmpty] | None = Field(
        default=None,
        description="Record labels (or annotations) that tell this rule's alerts of one "
        "entity apart; [] for one alert per entity. Default: the record's identity labels.",
    )
    summary: TemplateText = Field(default=DEFAULT_SUMMARY, description="Jinja2 template.")
    channels: list[NonEmpty] = Field(
        default_factory=lambda: ["console"],
        min_length=1,
        description="Channel names; console always exists.",
    )
    grace: Duration = Field(
        default=DEFAULT_GRACE,
        description="How late a record may be and still count; timers wait this long.",
        json_schema_extra=_GRACE_DEFAULT,
    )


class ThresholdRule(_RuleBase):
    """Fires when each measurement's value meets the condition for ``for`` on one entity."""

    type: Literal["threshold"]
    match: Match
    condition: Condition
    for_: Duration = Field(
        default=_NO_WAIT,
        alias="for",
        description="How long the condition must hold before firing.",
        json_schema_extra=_FOR_DEFAULT,
    )
    clear: Clear | None = Field(default=None, description="Hysteresis; see Clear.")


class AggregateRule(_RuleBase):
    """Fires when a windowed aggregate of one entity's values meets the condition."""

    type: Literal["aggregate"]
    match: Match
    window: Window
    aggregate: Aggregate = Field(
        description="avg, min, max, sum, count, last, rate, or {percentile: 95}."
    )
    condition: Condition
    for_: Duration = Field(
        default=_NO_WAIT,
        alias="for",
        description="How long the condition must hold (over window results) before firing.",
        json_schema_extra=_FOR_DEFAULT,
    )
    clear: Clear | None = Field(default=None, description="Hysteresis; see Clear.")
    summary: TemplateText = Field(default=DEFAULT_AGGREGATE_SUMMARY, description="Jinja2 template.")

    @model_validator(mode="after")
    def _panes_bounded(self) -> AggregateRule:
        window = self.window
        if isinstance(window, SlidingWindow):
            return self
        pane = window.hop if isinstance(window, HoppingWindow) else window.size
        pane_ms = _ms(pane)
        count = math.ceil((_ms(window.size) + _ms(self.grace)) / pane_ms) + 1
        if count > MAX_OPEN_PANES:
            most = (MAX_OPEN_PANES - 1) * pane_ms - _ms(window.size)
            fix = (
                f"use a grace of at most {format_duration(timedelta(milliseconds=most))}"
                if most >= 0
                else "use a longer hop"
            )
            raise _key_error(
                "too_many_panes",
                "a grace of {grace} keeps up to {count} panes of {pane} open per entity; "
                "{fix} (at most {limit} panes)",
                at="grace",
                grace=format_duration(self.grace),
                count=count,
                pane=format_duration(pane),
                fix=fix,
                limit=MAX_OPEN_PANES,
            )
        return self


class AbsenceRule(_RuleBase):
    """Fires when an entity that has sent a matching measurement sends none for ``after``."""

    type: Literal["absence"]
    match: Match
    after: PositiveDuration = Field(description="Silence that fires the alert, e.g. 15m.")
    summary: TemplateText = Field(default=DEFAULT_ABSENCE_SUMMARY, description="Jinja2 template.")


class Changes(_Model):
    """A change of state: the previous value was ``from`` and the new one is ``to``."""

    from_: NonEmpty = Field(alias="from")
    to: NonEmpty

    @model_validator(mode="after")
    def _differ(self) -> Changes:
        if self.from_ == self.to:
            raise _key_error(
                "same_states",
                "from and to are both {state}; a change needs two different states",
                state=repr(self.to),
            )
        return self


class StateRule(_RuleBase):
    """Fires while an entity's state equals a value, or after it changed from one to another."""

    type: Literal["state"]
    match: StateMatch
    equals: NonEmpty | None = Field(default=None, description="Fire while the state is this.")
    changes: Changes | None = Field(
        default=None, description="Fire when the state changes from -> to; stay while it is to."
    )
    for_: Duration = Field(
        default=_NO_WAIT,
        alias="for",
        description="How long the state must hold before firing.",
        json_schema_extra=_FOR_DEFAULT,
    )
    clear: StateClear | None = Field(default=None, description="How long to wait to resolve.")
    summary: TemplateText = Field(default=DEFAULT_STATE_SUMMARY, description="Jinja2 template.")

    @model_validator(mode="after")
    def _equals_or_changes(self) -> StateRule:
        if self.equals is not None and self.changes is not None:
            raise _key_error(
                "state_both",
                "not allowed together with equals; write either equals or changes",
                at="changes",
            )
        if self.equals is None and self.changes is None:
            raise _key_error(
                "state_neither",
                "required key is missing; write equals: <state>, "
                "or changes: {from: <state>, to: <state>}",
                at="equals",
            )
        return self

    @property
    def target(self) -> str:
        """The state value the alert is about (``equals`` or ``changes.to``)."""
        if self.changes is not None:
            return self.changes.to
        assert self.equals is not None  # guaranteed by validation
        return self.equals


Rule = Annotated[
    Union[ThresholdRule, AggregateRule, AbsenceRule, StateRule],  # noqa: UP007
    Field(discriminator="type"),
    Hint("write each rule as a mapping with at least name, type and match"),
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
