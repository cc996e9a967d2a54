"""The one Jinja2 sandbox every user-written template runs in (rule texts, channel templates).

Jinja2's ``ImmutableSandboxedEnvironment`` with four tightenings:

- an unsafe attribute (``__class__``, ``__globals__``, ``mro``...) raises ``SecurityError``
  at once instead of quietly rendering as empty text, so an escape attempt is an error a
  user sees (a start-up error for channel templates, the fallback text for rule texts);
- a dunder attribute or item is refused even on an undefined name: ``{{ lipsum.__globals__ }}``
  fails instead of rendering empty;
- printing ``self`` (the ``TemplateReference`` Jinja puts in every template's scope) is
  refused, so its internals never reach a message;
- ``*`` and ``**`` refuse results that would be huge (``'x' * 10**9``, ``9 ** 9 ** 9``).
"""

from __future__ import annotations

import operator
from typing import Any

from jinja2.exceptions import SecurityError
from jinja2.runtime import TemplateReference
from jinja2.sandbox import ImmutableSandboxedEnvironment

from pipeline.template_filters import num

__all__ = ["MAX_POWER_EXPONENT", "MAX_SEQUENCE_REPEAT", "Sandbox"]

MAX_SEQUENCE_REPEAT = 10_000
"""Largest result length of ``sequence * int`` in a template."""
MAX_POWER_EXPONENT = 100
"""Largest exponent of ``**`` in a template."""


def _refuse_template_reference(value: Any) -> Any:
    if isinstance(value, TemplateReference):
        raise SecurityError("printing 'self' (the template itself) is not allowed")
    return value


class Sandbox(ImmutableSandboxedEnvironment):
    """See the module docstring; takes Jinja2's ``Environment`` arguments (not ``finalize``)."""

    intercepted_binops = frozenset({"*", "**"})

    def __init__(self, **options: Any) -> None:
        super().__init__(finalize=_refuse_template_reference, **options)
        self.filters["num"] = num  # pipeline/template_filters.py

    def unsafe_undefined(self, obj: Any, attribute: str) -> Any:
        raise SecurityError(
            f"access to attribute {attribute!r} of {type(obj).__name__!r} object is unsafe"
        )

    def getattr(self, obj: Any, attribute: str) -> Any:
        if attribute.startswith("__"):
            return self.unsafe_undefined(obj, attribute)
        return super().getattr(obj, attribute)

    def getitem(self, obj: Any, argument: Any) -> Any:
        if isinstance(argument, str) and argument.startswith("__"):
            return self.unsafe_undefined(obj, argument)
        return super().getitem(obj, argument)

    def call_binop(self, context: Any, operator_: str, left: Any, right: Any) -> Any:
        if operator_ == "**":
            if isinstance(right, int | float) and abs(right) > MAX_POWER_EXPONENT:
                raise SecurityError(f"exponent above {MAX_POWER_EXPONENT} refused")
            return operator.pow(left, right)
        for seq, count in ((left, right), (right, left)):
            if (
                isinstance(seq, str | list | tuple)
                and isinstance(count, int)
                and len(seq) * count > MAX_SEQUENCE_REPEAT
            ):
                raise SecurityError(f"repeating a sequence beyond {MAX_SEQUENCE_REPEAT} refused")
        return operator.mul(left, right)
