"""``rules check``: every name a rule's template uses must be one the rule can see.

At run time an unknown name renders as empty text (``{{ valeu }}`` -> ``""``: templates never
fail an alert), so a typo would only show as a gap in a real notification. This check finds
them before that: :func:`jinja2.meta.find_undeclared_variables` lists the names a template
reads, and :func:`known_names` lists the names the rule's evaluator puts in the render context
(the common ones of every transition plus its type's own: ``threshold``, ``aggregate``,
``after``, ``previous``...). Names the template defines itself (``{% set %}``, loop
variables) are not undeclared, so they pass.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import yaml
from jinja2 import meta, nodes
from jinja2.sandbox import ImmutableSandboxedEnvironment

from pipeline.errors import RuleProblem
from pipeline.rules.evaluators import make_evaluator
from pipeline.rules.loader import load_rules
from pipeline.rules.schema import AbsenceRule, AggregateRule, Rule

__all__ = ["COMMON_NAMES", "check_template_names", "known_names", "unknown_names"]

COMMON_NAMES = frozenset(
    {
        "rule",
        "entity",
        "source",
        "stream",
        "metric",
        "value",
        "unit",
        "labels",
        "annotations",
        "state",
        "ts_ms",
        "severity",
    }
)
"""Names every transition's context holds (``Evaluator.transition`` in evaluators.py)."""

PER_TRANSITION_NAMES: dict[type[Any], frozenset[str]] = {
    AggregateRule: frozenset({"window_start_ms", "window_end_ms"}),
    AbsenceRule: frozenset({"last_seen_ms"}),
}
"""Names an evaluator adds to each transition's context on top of its fixed ones."""

TEMPLATE_FIELDS = ("summary", "description")

_PARSER = ImmutableSandboxedEnvironment()  # parsing only: nothing is rendered here


def known_names(rule: Rule) -> frozenset[str]:
    """The names ``rule``'s templates can use."""
    evaluator: Any = make_evaluator(rule)
    context_of = getattr(evaluator, "context_of", None)
    extra = context_of(None) if context_of is not None else None
    per_transition = PER_TRANSITION_NAMES.get(type(rule), frozenset())
    return COMMON_NAMES | frozenset(evaluator.context) | frozenset(extra or ()) | per_transition


def unknown_names(rule: Rule) -> Iterator[tuple[str, str, int]]:
    """``(field, name, template line)`` for each name a template of ``rule`` reads that it
    cannot see (the line is 1-based inside the template text)."""
    known = known_names(rule)
    for field in TEMPLATE_FIELDS:
        text = getattr(rule, field, "") or ""
        tree = _PARSER.parse(text)
        unknown = meta.find_undeclared_variables(tree) - known
        first_use: dict[str, int] = {}
        for node in tree.find_all(nodes.Name):
            if node.name in unknown:
                first_use.setdefault(node.name, node.lineno)
        for name in sorted(unknown):
            yield field, name, first_use.get(name, 1)


def _rule_files(paths: Sequence[Path]) -> Iterator[Path]:
    """The files :func:`~pipeline.rules.loader.load_rules` reads, in its order."""
    for path in paths:
        if path.is_dir():
            yield from sorted(
                p for p in path.iterdir() if p.suffix in (".yaml", ".yml") and p.is_file()
            )
        elif path.is_file():
            yield path


def _first_line(node: yaml.Node) -> int:
    """The file line of the first line of a scalar's text (block scalars start one below)."""
    style = getattr(node, "style", None)
    return node.start_mark.line + (2 if style in ("|", ">") else 1)


def _field_lines(text: str) -> list[dict[str, int]]:
    """Per rule entry of a rule file, the line where each key's value text starts."""
    root = yaml.compose(text, Loader=yaml.SafeLoader)
    if not isinstance(root, yaml.MappingNode):
        return []
    for key, value in root.value:
        if key.value == "rules" and isinstance(value, yaml.SequenceNode):
            return [
                {k.value: _first_line(v) for k, v in entry.value}
                if isinstance(entry, yaml.MappingNode)
                else {}
                for entry in value.value
            ]
    return []


def check_template_names(paths: Sequence[Path]) -> list[RuleProblem]:
    """Every unknown template name in rule files that load, as ``file:line: key: message``.

    Call after :func:`~pipeline.rules.loader.load_rules` accepted ``paths``.
    """
    problems: list[RuleProblem] = []
    for file in _rule_files(paths):
        rules = load_rules([file])
        lines = _field_lines(file.read_text(encoding="utf-8"))
        for index, rule in enumerate(rules):
            where = lines[index] if index < len(lines) else {}
            for field, name, template_line in unknown_names(rule):
                known = ", ".join(sorted(known_names(rule)))
                start = where.get(field)
                problems.append(
                    RuleProblem(
                        str(file),
                        start + template_line - 1 if start else 0,
                        f"rules[{index}].{field}",
                        f"unknown name {name!r}; a {rule.type} rule's templates can use {known}",
                    )
                )
    return problems
