"""The ``num`` filter: floats print without their binary noise, in every sandboxed template."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.rules.loader import load_rules
from pipeline.rules.templates import compile_template, render
from pipeline.template_filters import num

ROOT = Path(__file__).resolve().parents[3]


@pytest.mark.parametrize(
    ("value", "digits", "shown"),
    [
        (32.029999999999994, 1, "32.0"),
        (49.707, 2, "49.71"),
        (-1.26, 1, "-1.3"),
        (-0.04, 1, "0.0"),
        (40, 1, "40"),
        (2.5, 0, "2"),
        (1 / 3, 99, "0.333333333333"),
        ("ok", 1, "ok"),
        (None, 1, None),
        (True, 1, True),
    ],
)
def test_num(value: object, digits: int, shown: object) -> None:
    assert num(value, digits) == shown


def test_num_is_available_to_rule_templates() -> None:
    template = compile_template("{{ value|num(1) }} {{ value|num }}")
    assert render(template, {"value": 32.029999999999994}) == "32.0 32.03"


def test_the_shipped_average_rule_prints_a_rounded_value() -> None:
    (rule,) = [r for r in load_rules([ROOT / "rules" / "valtronics.yaml"]) if r.type == "aggregate"]
    context = {"state": "firing", "entity": "1", "value": 32.029999999999994}
    summary = render(compile_template(rule.summary), context)
    assert summary == "Device 1 averaged 32.0 °C over 10 s"
