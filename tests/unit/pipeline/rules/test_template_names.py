"""``rules check`` refuses template names a rule cannot see, at their file and line."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from pipeline.rules import evaluators
from pipeline.rules.engine import EngineState, RuleEngine
from pipeline.rules.runtime import RuleRuntime
from pipeline.rules.template_names import check_template_names, known_names
from streamwarden.cli import main
from tests.unit.pipeline.rules.helpers import at, event, meas, rule

RULES = textwrap.dedent(
    """\
    rules:
      - name: hot
        type: threshold
        match: {source: aliunid, metric: sys.kW}
        condition: {op: ">", value: 40}
        summary: "{{ entity }} draws {{ valeu }}"
        description: |-
          {% set limit = threshold %}above {{ limit }}
          for {% for k in labels %}{{ k }}{% endfor %} {{ windw }}
        channels: [console]
      - name: err
        type: state
        match: {source: nobil, state: error}
        equals: error
        summary: "{{ previous }} -> {{ value }} ({{ expected }})"
        channels: [console]
    """
)


def test_rules_check_names_each_unknown_name_at_its_line(tmp_path: Path) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text(RULES, encoding="utf-8")
    result = CliRunner().invoke(main, ["rules", "check", str(path)])
    assert result.exit_code == 1, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 2
    assert lines[0].startswith(
        f"{path}:6: rules[0].summary: unknown name 'valeu'; a threshold rule's templates can "
        "use annotations, entity, labels, metric, op, rule,"
    )
    assert lines[1].startswith(f"{path}:9: rules[0].description: unknown name 'windw';")


def test_shipped_rules_use_only_known_names() -> None:
    rules_dir = Path(__file__).resolve().parents[4] / "rules"
    assert check_template_names([rules_dir]) == []


def _contexts(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    seen: list[dict[str, Any]] = []

    def recording_render(template: Any, context: dict[str, Any]) -> str:
        seen.append(dict(context))
        return ""

    monkeypatch.setattr(evaluators, "render", recording_render)
    return seen


@pytest.mark.parametrize(
    ("type_", "records", "advance_to"),
    [
        ("threshold", [meas(50, 0)], None),
        ("aggregate", [meas(50, 0), meas(50, 11)], at(25)),
        ("absence", [meas(1, 0, metric="temperature", source="element")], at(20 * 60)),
        ("state", [event("error", 0, previous="ok")], None),
    ],
)
def test_known_names_are_exactly_what_the_evaluator_renders_with(
    monkeypatch: pytest.MonkeyPatch, type_: str, records: list[Any], advance_to: int | None
) -> None:
    seen = _contexts(monkeypatch)
    the_rule = rule(type_)
    state: dict[str, EngineState] = {}
    runtime = RuleRuntime(RuleEngine([the_rule]), state)
    transitions = [t for r in records for t in runtime.process(r)]
    if advance_to is not None:
        transitions += runtime.advance(advance_to)
    assert transitions, "the records must make the rule fire"
    assert seen
    for context in seen:
        assert set(context) == known_names(the_rule)
