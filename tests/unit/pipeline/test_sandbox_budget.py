"""Issue 16, defects 2 and 3: template budgets enforced while rendering.

Before the fix: two nested 10k loops rendered for 36 s, a self-doubling macro for minutes,
``{{ 'a'|center(2000000000) }}`` allocated 2 GB while being compiled, and a 2 MB summary
passed ``rules check`` and killed the worker with ``MessageSizeTooLargeError``."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from pipeline.alerting.templates import (
    ChannelTemplates,
    Renderer,
    TemplateCheckError,
    check_template,
)
from pipeline.errors import RuleError
from pipeline.rules.loader import load_rules
from pipeline.rules.templates import (
    MAX_TEXT_CHARS,
    RULE_TEXT_BUDGET,
    TRUNCATION_MARKER,
    check_template_budget,
    compile_template,
    fit_texts,
    render,
)
from tests.unit.pipeline.alerting.test_notify_templates import HOSTILE

pytestmark = pytest.mark.timeout(60)

CONTEXT = {"rule": "r1", "entity": "mp-1", "value": 41.25}
SLACK_S = 2.0  # the shared CI machine: a budget of 0.25 s may be checked a little late

WORST_CASES = {
    "nested loops": "{% for a in 'x'*10000 %}{% for b in 'x'*10000 %}{% endfor %}{% endfor %}",
    "doubling macro": (
        "{% macro m(n) %}{% if n %}{{ m(n-1) }}{{ m(n-1) }}{% endif %}{% endmacro %}{{ m(60) }}"
    ),
    "buffered output": (
        "{% set x %}{% for a in 'x'*10000 %}{% for b in 'x'*10000 %}{{ 'y'*10000 }}"
        "{% endfor %}{% endfor %}{% endset %}{{ x|length }}"
    ),
    "big output": "{% for a in 'x'*200 %}{{ 'y'*10000 }}{% endfor %}",
}


@pytest.mark.parametrize("name", sorted(WORST_CASES))
def test_worst_case_rule_texts_return_their_fallback_within_budget(name: str) -> None:
    template = compile_template(WORST_CASES[name])
    started = time.monotonic()
    text = render(template, CONTEXT)
    elapsed = time.monotonic() - started
    assert text.startswith("[template error in rule 'r1': ")
    assert "budget exceeded]" in text
    assert elapsed < RULE_TEXT_BUDGET.time_s + SLACK_S


@pytest.mark.parametrize(
    "source",
    [
        "{{ 'a'|center(2000000000) }}",
        "{{ 'a'.center(2000000000) }}",
        "{{ 'a'.ljust(2000000000) }}",
        "{{ '%2000000000d'|format(1) }}",
        "{{ '%*d' % (2000000000, 1) }}",
        "{{ '{:>2000000000}'.format(1) }}",
        "{{ ('x'*10000)|replace('x', 'y'*10000) }}",
        "{{ ('x'*10000)|list|join('y'*10000) }}",
        "{{ ('y'*10000).join('x'*10000) }}",
        "{{ ('\n'*10000)|indent('y'*10000) }}",
        "{{ ('\t'*10000).expandtabs(10000) }}",
        "{{ (9 ** 99) ** 99 }}",
        "{% macro m(n) %}{{ m(n * n) }}{% endmacro %}{{ m(9 ** 99) }}",
    ],
)
def test_size_bombs_are_refused_before_they_allocate(source: str) -> None:
    started = time.monotonic()
    template = compile_template(source)  # constant folding must not allocate either
    text = render(template, CONTEXT)
    assert text.startswith("[template error in rule 'r1': "), text[:200]
    assert time.monotonic() - started < SLACK_S


def test_ordinary_templates_still_render() -> None:
    source = (
        "{{ entity }} {{ '%.1f'|format(value) }} {{ 'a'|center(5) }}|{{ ['a','b']|join(', ') }}"
        "{% for c in 'abc' %}{{ c }}{% endfor %}{{ '{:>4}'.format(7) }}"
    )
    assert render(compile_template(source), CONTEXT) == "mp-1 41.2   a  |a, babc   7"


def test_rules_check_refuses_the_oversized_and_the_slow_template(tmp_path: Path) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text(
        "rules:\n"
        "  - name: big\n"
        "    type: threshold\n"
        "    match: {source: aliunid, metric: sys.kW}\n"
        "    condition: {op: '>', value: 40}\n"
        "    summary: \"{% for a in 'x'*200 %}{{ 'y'*10000 }}{% endfor %}\"\n"
        "    description: \"{{ 'a'|center(2000000000) }}\"\n"
        "  - name: slow\n"
        "    type: threshold\n"
        "    match: {source: aliunid, metric: sys.kW}\n"
        "    condition: {op: '>', value: 40}\n"
        f'    summary: "{WORST_CASES["nested loops"]}"\n',
        encoding="utf-8",
    )
    with pytest.raises(RuleError) as caught:
        load_rules([rules])
    message = str(caught.value)
    assert f"{rules}:6: rules[0].summary: template refused" in message
    assert f"output longer than {MAX_TEXT_CHARS} characters" in message
    assert f"{rules}:7: rules[0].description: template refused" in message
    assert "center would produce 2000000000 characters" in message
    slow = message[message.index(f"{rules}:12: rules[1].summary: template refused") :]
    # Which budget stops the nested loops first (time or work) depends on the CPU's speed
    # at that moment; either way the template is refused before it runs away.
    assert "rendering took longer than" in slow or "operations produced more than" in slow


def test_check_template_budget_passes_ordinary_text() -> None:
    check_template_budget("{{ entity }} draws {{ value }} kW")


def test_a_slow_channel_template_is_refused_at_start_up_and_falls_back_at_run_time() -> None:
    slow = "{% for a in range(100000) %}{% for b in range(100000) %}{% endfor %}{% endfor %}"
    with pytest.raises(TemplateCheckError, match="exceeds its budget on a sample"):
        check_template(slow, "text")
    renderer = Renderer({"c": ChannelTemplates("text", body=slow)})
    started = time.monotonic()
    _, body, _ = renderer.render("c", "firing", [HOSTILE])
    assert "Why: Rule power-high fired" in body  # the shipped template
    assert time.monotonic() - started < 0.5 + SLACK_S


def test_fit_texts_cuts_with_a_marker_to_the_byte_limit() -> None:
    summary, description = fit_texts("s" * 3000, "d" * 3000, other_bytes=1000, max_bytes=5000)
    assert len(summary.encode()) + len(description.encode()) <= 4000
    assert description.endswith(TRUNCATION_MARKER)
    assert summary == "s" * 3000
    assert fit_texts("a", "b", 0, 100) == ("a", "b")
    summary, description = fit_texts("é" * 3000, "", other_bytes=0, max_bytes=1000)
    assert len(summary.encode()) <= 1000 and summary.endswith(TRUNCATION_MARKER)
