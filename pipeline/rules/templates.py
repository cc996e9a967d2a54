"""Jinja2 templates of rule texts (``summary``, ``description``), sandboxed.

Templates are compiled once, when rules are loaded (:func:`compile_template` caches by source
text), and rendered per alert transition by :func:`render`, which never raises: an alert with a
broken text is still an alert.

The environment is :class:`pipeline.sandbox.Sandbox` (an escape attempt shows up as the
fallback text and in the log) with no globals; undefined names render as empty text, also in
chains (``{{ labels.nope.deeper }}``).

Autoescaping is off: the output is plain text, and each notifier escapes for its medium.

Budgets: every render runs under :data:`RULE_TEXT_BUDGET` (time, output and work, enforced
while rendering: see :mod:`pipeline.sandbox`); a template over budget renders as its fallback
text, which names the rule and the budget. ``rules check`` and every rule load render each
template once on sample data under the same budget (:func:`check_template_budget`) and refuse
one that exceeds it. Together with :data:`MAX_TEXT_CHARS` this bounds the size of an alert
record: :func:`fit_texts` cuts texts with a marker if labels or names push a record past a
byte limit.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Mapping
from typing import Any

from jinja2 import ChainableUndefined, Template, TemplateSyntaxError

from pipeline.sandbox import Budget, Sandbox, TemplateBudgetError

__all__ = [
    "MAX_ALERT_TEXT_BYTES",
    "MAX_TEXT_CHARS",
    "RULE_TEXT_BUDGET",
    "TRUNCATION_MARKER",
    "TemplateCompileError",
    "check_template_budget",
    "compile_template",
    "fit_texts",
    "render",
]

MAX_TEXT_CHARS = 4_000
"""Longest rendered ``summary`` or ``description``."""
RULE_TEXT_BUDGET = Budget(time_s=0.25, output_chars=MAX_TEXT_CHARS, work_chars=2_000_000)
"""What one render of a rule text may spend: a quarter second, 4000 characters, 2M
characters of intermediate values."""
TRUNCATION_MARKER = " [... truncated]"
MAX_ALERT_TEXT_BYTES = 256 * 1024
"""Most bytes an alert record may take for its texts plus its other fields (4 bytes a
character, as UTF-8 at worst): well under Kafka's default 1 MiB message size, with room for
the JSON around them."""

logger = logging.getLogger(__name__)


class TemplateCompileError(ValueError):
    """A template does not compile.

    Attributes:
        message: Jinja2's description of the problem.
        lineno: 1-based line inside the template text.
    """

    def __init__(self, message: str, lineno: int) -> None:
        self.message = message
        self.lineno = lineno
        super().__init__(f"{message} (template line {lineno})")


_ENV = Sandbox(autoescape=False, undefined=ChainableUndefined, keep_trailing_newline=False)
_ENV.globals.clear()  # no cycler, joiner, lipsum, namespace, range, dict: rules need none


@functools.lru_cache(maxsize=4096)
def compile_template(source: str) -> Template:
    """Compile template text once; the same text returns the same compiled template.

    Raises:
        TemplateCompileError: the text is not a valid Jinja2 template.
    """
    try:
        return _ENV.from_string(source)
    except TemplateSyntaxError as exc:
        raise TemplateCompileError(exc.message or "invalid template", exc.lineno) from None


_reported: set[tuple[str, str]] = set()


def render(template: Template, context: Mapping[str, Any]) -> str:
    """Render a compiled template; never raises.

    Args:
        template: from :func:`compile_template`.
        context: the names the template may use; ``context["rule"]`` names the rule in the
            fallback text and the log.

    Returns:
        The rendered text, or ``[template error in rule '<rule>': <ExceptionClass>]`` when
        rendering failed (sandbox violation, undefined operation, bad filter argument...),
        or ``[template error in rule '<rule>': <time|output|work|size> budget exceeded]``.
        The first failure of each rule and exception class is logged as a warning, repeats at
        debug level, so a broken template cannot flood the log.
    """
    try:
        return _ENV.render_within(template, context, RULE_TEXT_BUDGET)
    except Exception as exc:
        rule = str(context.get("rule", "?"))
        kind = (
            f"{exc.what} budget exceeded"
            if isinstance(exc, TemplateBudgetError)
            else (type(exc).__name__)
        )
        key = (rule, kind)
        level = logging.DEBUG if key in _reported else logging.WARNING
        _reported.add(key)
        logger.log(level, "template render failed rule=%s error=%s detail=%s", rule, kind, exc)
        return f"[template error in rule {rule!r}: {kind}]"


_SAMPLE_CONTEXT: dict[str, Any] = {
    "rule": "sample-rule",
    "type": "threshold",
    "entity": "sample-entity",
    "source": "aliunid",
    "stream": "sample-stream",
    "metric": "sys.kW",
    "value": 42.5,
    "unit": "kW",
    "labels": {"team": "sample"},
    "state": "firing",
    "ts_ms": 1_700_000_000_000,
    "severity": "warning",
    "threshold": 40,
    "op": ">",
    "previous": "available",
    "expected": "error",
    "after": "15m",
}


@functools.lru_cache(maxsize=4096)
def check_template_budget(source: str) -> None:
    """Render ``source`` once on sample data under :data:`RULE_TEXT_BUDGET`.

    Only budget overruns (and runaway recursion) are refused: they make every alert of the
    rule cost the full budget. Other failures, sandbox violations included, are left to run
    time, where the fallback text shows them (an alert with a broken text is still an
    alert).

    Raises:
        TemplateCompileError: the text does not compile, or exceeds a budget (``lineno``
            0).
    """
    template = compile_template(source)
    try:
        _ENV.render_within(template, dict(_SAMPLE_CONTEXT), RULE_TEXT_BUDGET)
    except TemplateBudgetError as exc:
        raise TemplateCompileError(exc.detail, 0) from None
    except RecursionError:
        raise TemplateCompileError("recursion too deep (a macro calling itself)", 0) from None
    except Exception:  # noqa: S110 - data-dependent failures show as the fallback text
        pass


def _cut_to_bytes(text: str, max_bytes: int) -> str:
    if len(text.encode()) <= max_bytes:
        return text
    keep = max(0, max_bytes - len(TRUNCATION_MARKER.encode()))
    return text.encode()[:keep].decode(errors="ignore") + TRUNCATION_MARKER


def fit_texts(summary: str, description: str, other_bytes: int, max_bytes: int) -> tuple[str, str]:
    """Cut ``summary`` and ``description`` (description first) with
    :data:`TRUNCATION_MARKER` so a record whose other fields take ``other_bytes`` stays
    within ``max_bytes``. Texts are never cut below the marker itself."""
    room = max_bytes - other_bytes
    size_s, size_d = len(summary.encode()), len(description.encode())
    if size_s + size_d <= room:
        return summary, description
    description = _cut_to_bytes(description, max(len(TRUNCATION_MARKER), room - size_s))
    return _cut_to_bytes(
        summary, max(len(TRUNCATION_MARKER), room - len(description.encode()))
    ), description
