"""Jinja2 templates of rule texts (``summary``, ``description``), sandboxed.

Templates are compiled once, when rules are loaded (:func:`compile_template` caches by source
text), and rendered per alert transition by :func:`render`, which never raises: an alert with a
broken text is still an alert.

The environment is :class:`pipeline.sandbox.Sandbox` (an escape attempt shows up as the
fallback text and in the log) with no globals; undefined names render as empty text, also in
chains (``{{ labels.nope.deeper }}``).

Autoescaping is off: the output is plain text, and each notifier escapes for its medium.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Mapping
from typing import Any

from jinja2 import ChainableUndefined, Template, TemplateSyntaxError

from pipeline.sandbox import Sandbox

__all__ = ["TemplateCompileError", "compile_template", "render"]

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
        rendering failed (sandbox violation, undefined operation, bad filter argument...).
        The first failure of each rule and exception class is logged as a warning, repeats at
        debug level, so a broken template cannot flood the log.
    """
    try:
        # Template.render() first copies the context into a new dict and adds the globals
        # (there are none); rendering happens per alert transition, so skip the copy.
        variables = context if isinstance(context, dict) else dict(context)
        rendered: str = _ENV.concat(
            template.root_render_func(template.new_context(variables, shared=True))
        )
        return rendered
    except Exception as exc:
        rule = str(context.get("rule", "?"))
        kind = type(exc).__name__
        key = (rule, kind)
        level = logging.DEBUG if key in _reported else logging.WARNING
        _reported.add(key)
        logger.log(level, "template render failed rule=%s error=%s detail=%s", rule, kind, exc)
        return f"[template error in rule {rule!r}: {kind}]"
