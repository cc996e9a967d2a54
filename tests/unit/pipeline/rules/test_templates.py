"""Sandboxed rule templates: compile once, render never raises, escapes yield the fallback."""

from __future__ import annotations

import logging

import pytest

from pipeline.rules.templates import TemplateCompileError, compile_template, render

CONTEXT = {"rule": "r1", "entity": "mp-1", "value": 41.25, "labels": {"phase": "R"}}


def test_renders_context_values() -> None:
    text = render(compile_template("{{ entity }} {{ value }} {{ labels.phase }}"), CONTEXT)

    assert text == "mp-1 41.25 R"


def test_output_is_not_html_escaped() -> None:
    assert render(compile_template("{{ x }}"), {"x": "<a & b>"}) == "<a & b>"


def test_undefined_names_render_empty_even_in_chains() -> None:
    text = render(compile_template("[{{ nope }}|{{ labels.missing.deeper }}]"), CONTEXT)

    assert text == "[|]"


def test_same_text_compiles_once() -> None:
    assert compile_template("{{ value }} once") is compile_template("{{ value }} once")


def test_syntax_error_names_template_line() -> None:
    with pytest.raises(TemplateCompileError) as caught:
        compile_template("fine\n{{ value }")

    assert caught.value.lineno == 2
    assert "unexpected '}'" in caught.value.message


SECRETISH = [
    "{{ ''.__class__.__mro__ }}",
    "{{ ''.__class__ }}",
    "{{ cycler.__init__.__globals__ }}",
    "{{ lipsum.__globals__['os'] }}",
    "{{ value.__class__.__subclasses__() }}",
    "{{ labels.__class__.__init__.__globals__ }}",
    "{{ labels.update({'phase': 'X'}) }}",
    "{{ 'x' * 100000000 }}",
    "{{ [1] * 100000000 }}",
    "{{ 2 ** 100000 }}",
]


@pytest.mark.parametrize("source", SECRETISH)
def test_escape_attempts_render_the_fallback(source: str) -> None:
    labels = {"phase": "R"}
    text = render(compile_template(source), {**CONTEXT, "labels": labels})

    assert text.startswith("[template error in rule 'r1': ")
    assert text.endswith("Error]")
    assert "class" not in text
    assert "function" not in text
    assert labels == {"phase": "R"}  # immutable sandbox: no mutation of context values


def test_fallback_names_the_exception_class() -> None:
    assert render(compile_template("{{ ''.__class__ }}"), CONTEXT) == (
        "[template error in rule 'r1': SecurityError]"
    )
    assert render(compile_template("{{ 1 / 0 }}"), CONTEXT) == (
        "[template error in rule 'r1': ZeroDivisionError]"
    )


def test_render_failure_is_logged_once_per_rule_and_class(
    caplog: pytest.LogCaptureFixture,
) -> None:
    template = compile_template("{{ value / 0 }}")
    context = {**CONTEXT, "rule": "log-once"}

    with caplog.at_level(logging.DEBUG, logger="pipeline.rules.templates"):
        render(template, context)
        render(template, context)

    levels = [r.levelno for r in caplog.records if "rule=log-once" in r.getMessage()]
    assert levels == [logging.WARNING, logging.DEBUG]


def test_small_repetition_is_allowed() -> None:
    assert render(compile_template("{{ '-' * 3 }}{{ 2 ** 3 }}"), CONTEXT) == "---8"
