"""The one Jinja2 sandbox every user-written template runs in (rule texts, channel templates).

Jinja2's ``ImmutableSandboxedEnvironment`` with these tightenings:

- an unsafe attribute (``__class__``, ``__globals__``, ``mro``...) raises ``SecurityError``
  at once instead of quietly rendering as empty text, so an escape attempt is an error a
  user sees (a start-up error for channel templates, the fallback text for rule texts);
- a dunder attribute or item is refused even on an undefined name: ``{{ lipsum.__globals__ }}``
  fails instead of rendering empty;
- printing ``self`` (the ``TemplateReference`` Jinja puts in every template's scope) is
  refused, so its internals never reach a message;
- every template runs under a :class:`Budget` (time, output, work), enforced *while* it
  renders (see below).

Budgets: why checkpoints, not a thread or a process
    Templates render inside the worker's one event loop, and a thread cannot be stopped
    from outside in CPython, so a budget must be enforced by the rendering code itself.
    Jinja compiles a template to Python; only three kinds of step in that code can take
    unbounded time or memory: (1) iterating (``for`` loops), (2) calling (macros,
    ``caller()``, methods, recursion), (3) a single operation whose result is much larger
    than its operands (``'x' * n``, ``center(n)``, ``replace``, ``join``, ``format``
    widths, big integers). Everything else is constant time on bounded operands. So:

    - *Checkpoints*: every loop iteration (each ``for`` iterable is wrapped when the template
      is compiled, :meth:`Sandbox._generate`), every call (:meth:`Sandbox.call`), every
      filter, every intercepted operator and every chunk of output checks the render's
      deadline. Between two checkpoints runs only a bounded amount of work.
    - *Sizes checked before allocating*: the multiplying operations are refused when their
      result would exceed :data:`MAX_VALUE_CHARS` (computed from the operands, before the
      operation runs), so ``{{ 'a'|center(2000000000) }}`` is refused in microseconds, also
      when Jinja tries to fold it to a constant at compile time (the folding sees the
      refusal and leaves the expression to render time, where it fails the render).
    - *Work*: every string, list or dict an operation produces counts towards the render's
      work budget (``Budget.work_chars``), and every buffer joined (``{% set %}`` blocks,
      macro bodies) is counted before it is joined, so the memory a render can hold is
      bounded even if it stays within its time.
    - *Output*: output is counted chunk by chunk as it is produced; the render stops as soon
      as ``Budget.output_chars`` is passed.

    A budget overrun raises :class:`TemplateBudgetError` (a ``SecurityError``) from inside
    the template; callers (:func:`pipeline.rules.templates.render`, the channel renderer)
    turn it into their fallback text and a per-rule / per-channel error. Outside
    :meth:`Sandbox.render_within` (e.g. compile-time folding) only the size limits apply.
"""

from __future__ import annotations

import contextvars
import functools
import operator
import re
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from jinja2 import Template, nodes, pass_context
from jinja2.exceptions import SecurityError
from jinja2.nodes import EvalContext
from jinja2.runtime import Context, TemplateReference
from jinja2.sandbox import ImmutableSandboxedEnvironment

from pipeline.template_filters import num

__all__ = [
    "MAX_INT_BITS",
    "MAX_POWER_EXPONENT",
    "MAX_SEQUENCE_REPEAT",
    "MAX_VALUE_CHARS",
    "Budget",
    "Sandbox",
    "TemplateBudgetError",
]

MAX_SEQUENCE_REPEAT = 10_000
"""Largest result length of ``sequence * int`` in a template."""
MAX_POWER_EXPONENT = 100
"""Largest exponent of ``**`` in a template."""
MAX_VALUE_CHARS = 100_000
"""Largest string, list or mapping one template operation may produce."""
MAX_INT_BITS = 16_384
"""Largest integer (in bits) ``*`` and ``**`` may produce: arithmetic on huge integers is
not constant time."""

_ITER_FILTER = "_sw_budget_iter"


@dataclass(frozen=True)
class Budget:
    """What one render may spend.

    Attributes:
        time_s: wall-clock seconds, checked at every loop iteration, call and output chunk.
        output_chars: characters of output.
        work_chars: characters (or items) of all values the template's operations produce,
            counted cumulatively: bounds memory.
    """

    time_s: float = 0.5
    output_chars: int = 32_000
    work_chars: int = 4_000_000


class TemplateBudgetError(SecurityError):
    """A template exceeded its budget or asked for a value beyond the size limits.

    Attributes:
        what: ``time``, ``output``, ``work`` or ``size``.
        detail: what was refused, in words (never the template's output).
    """

    def __init__(self, what: str, detail: str) -> None:
        self.what = what
        self.detail = detail
        super().__init__(f"template {what} budget exceeded: {detail}")


class _Meter:
    """The running budget of one render."""

    __slots__ = ("budget", "deadline", "work")

    def __init__(self, budget: Budget) -> None:
        self.budget = budget
        self.deadline = time.monotonic() + budget.time_s
        self.work = 0

    def tick(self) -> None:
        if time.monotonic() > self.deadline:
            raise TemplateBudgetError(
                "time", f"rendering took longer than {self.budget.time_s:g} s"
            )

    def spend(self, size: int) -> None:
        self.work += size
        if self.work > self.budget.work_chars:
            raise TemplateBudgetError(
                "work", f"operations produced more than {self.budget.work_chars} characters"
            )
        self.tick()


_METER: contextvars.ContextVar[_Meter | None] = contextvars.ContextVar("_METER", default=None)


def _checkpoint() -> None:
    meter = _METER.get()
    if meter is not None:
        meter.tick()


def _refuse_size(size: int, what: str) -> None:
    if size > MAX_VALUE_CHARS:
        raise TemplateBudgetError(
            "size", f"{what} would produce {size} characters (limit {MAX_VALUE_CHARS})"
        )


def _produced(value: Any) -> Any:
    """Count a value an operation produced: refuse it if too large, charge it as work."""
    if isinstance(value, str | list | tuple | dict | set | frozenset | bytes):
        size = len(value)
        _refuse_size(size, "an expression")
        meter = _METER.get()
        if meter is not None:
            meter.spend(size)
    else:
        _checkpoint()
    return value


def _metered(iterable: Any) -> Iterator[Any]:
    """Iterate with a checkpoint per item (wraps every ``for`` loop's iterable)."""
    meter = _METER.get()
    for item in iterable:
        if meter is not None:
            meter.tick()
        yield item


@pass_context
def _budget_iter(context: Context, value: Any) -> Any:
    """The checkpointing wrapper of loop iterables. ``pass_context`` keeps Jinja from
    folding it away at compile time (it never folds context filters)."""
    return _metered(value) if _METER.get() is not None else value


def _refuse_template_reference(value: Any) -> Any:
    if isinstance(value, TemplateReference):
        raise SecurityError("printing 'self' (the template itself) is not allowed")
    return value


# --- size bounds of the operations whose result can dwarf their operands ---------------------

_FORMAT_WIDTH = re.compile(r"\d{6,}")
"""A width or precision of a million or more in a format spec (``%2000000000s``)."""


def _text_len(value: Any) -> int:
    return len(value) if isinstance(value, str) else len(str(value))


def _int_arg(value: Any, what: str) -> None:
    if isinstance(value, int) and not isinstance(value, bool):
        _refuse_size(value, what)


_ARG_WIDTH = re.compile(r"\*|\{[^{}]*\{")
"""A width taken from an argument: ``%*s`` or ``{:{}}``."""
_NUMBER = re.compile(r"\d+")


def _check_format(fmt: str, args: Iterable[Any], what: str) -> None:
    """``fmt`` applied to ``args`` (``%`` or ``str.format`` style) stays under the size limit.

    Bound: the format text, plus per placeholder the longest argument as text, plus every
    number written in the format (widths, precisions); widths of a million or more, and
    widths taken from arguments above :data:`MAX_VALUE_CHARS`, are refused outright.
    """
    values = list(args)
    if _FORMAT_WIDTH.search(fmt):
        raise TemplateBudgetError("size", f"{what}: a width of a million or more is refused")
    if _ARG_WIDTH.search(fmt):
        for value in values:
            _int_arg(value, what)
    longest = max((_text_len(v) for v in values), default=0)
    slots = fmt.count("%") + fmt.count("{")
    widths = sum(int(n) for n in _NUMBER.findall(fmt))
    _refuse_size(len(fmt) + slots * longest + widths, what)


def _arg(args: tuple[Any, ...], kwargs: Mapping[str, Any], index: int, name: str) -> Any:
    if len(args) > index:
        return args[index]
    return kwargs.get(name)


def _check_text_op(
    name: str, subject: Any, args: tuple[Any, ...], kwargs: Mapping[str, Any]
) -> None:
    """Refuse a string filter or method whose result would exceed :data:`MAX_VALUE_CHARS`.

    ``args`` are the arguments after the subject (the filtered value or the method's
    string). Only the operations that can multiply their input's size are listed.
    """
    if name in ("center", "ljust", "rjust", "zfill"):
        _int_arg(_arg(args, kwargs, 0, "width"), name)
    elif name == "expandtabs":
        tabsize = _arg(args, kwargs, 0, "tabsize")
        if isinstance(tabsize, int):
            _refuse_size(_text_len(subject) * max(1, tabsize), name)
    elif name == "indent":
        width = _arg(args, kwargs, 0, "width")
        per_line = (
            _text_len(width) if isinstance(width, str) else (width if isinstance(width, int) else 4)
        )
        _int_arg(per_line, name)
        text = str(subject)
        _refuse_size(len(text) + (text.count("\n") + 1) * per_line, name)
    elif name == "wordwrap":
        wrap = _arg(args, kwargs, 2, "wrapstring")
        _refuse_size(_text_len(subject) * (1 + (_text_len(wrap) if wrap is not None else 1)), name)
    elif name == "replace":
        text = str(subject)
        old = _arg(args, kwargs, 0, "old")
        new = _arg(args, kwargs, 1, "new")
        if isinstance(old, str) and new is not None:
            hits = text.count(old) if old else len(text) + 1
            _refuse_size(len(text) + hits * _text_len(new), name)
    elif name == "translate":
        raise TemplateBudgetError("size", "str.translate is not available in templates")
    elif name in ("tojson", "pprint"):
        _int_arg(_arg(args, kwargs, 0, "indent") if name == "tojson" else 0, name)
        indent = _arg(args, kwargs, 0, "indent")
        if isinstance(indent, int) and indent > 16:
            raise TemplateBudgetError("size", "tojson: an indent above 16 is refused")
    elif name == "slice":
        _int_arg(_arg(args, kwargs, 0, "slices"), name)
    elif name == "format" and isinstance(subject, str):
        _check_format(subject, (*args, *kwargs.values()), name)


def _check_join(separator: Any, items: list[Any], what: str) -> None:
    total = sum(_text_len(i) for i in items) + _text_len(separator) * max(0, len(items) - 1)
    _refuse_size(total, what)


def _check_sum(items: list[Any], start: Any) -> None:
    if isinstance(start, list | tuple) or any(isinstance(i, list | tuple | str) for i in items):
        _refuse_size(sum(len(i) for i in items if isinstance(i, list | tuple | str)), "sum")


_ENV_ARGS = (Context, EvalContext, ImmutableSandboxedEnvironment)


def _guard_filter(name: str, func: Callable[..., Any]) -> Callable[..., Any]:
    """``func`` with a checkpoint, the size check of its operation and of its result."""
    if getattr(func, "_sw_guarded", False) or name == _ITER_FILTER:
        return func

    @functools.wraps(func)
    def guarded(*args: Any, **kwargs: Any) -> Any:
        lead = 0
        while lead < len(args) and isinstance(args[lead], _ENV_ARGS):
            lead += 1
        if lead < len(args):
            subject, rest = args[lead], args[lead + 1 :]
            if name == "join" and not isinstance(subject, str):
                items = list(subject)
                _check_join(_arg(rest, kwargs, 0, "d") or "", items, name)
                args = (*args[:lead], items, *rest)
            elif name == "sum" and not isinstance(subject, str):
                items = list(subject)
                _check_sum(items, _arg(rest, kwargs, 1, "start"))
                args = (*args[:lead], items, *rest)
            else:
                _check_text_op(name, subject, rest, kwargs)
        return _produced(func(*args, **kwargs))

    guarded._sw_guarded = True  # type: ignore[attr-defined]
    return guarded


class _GuardedFilters(dict[str, Callable[..., Any]]):
    """The filter table; every filter put in is wrapped by :func:`_guard_filter`."""

    def __setitem__(self, name: str, func: Callable[..., Any]) -> None:
        super().__setitem__(name, _guard_filter(name, func))

    def update(self, *args: Any, **kwargs: Any) -> None:
        for name, func in dict(*args, **kwargs).items():
            self[name] = func


def _wrap_loops(node: nodes.Node) -> None:
    """Wrap the iterable of every ``for`` under ``node`` in the checkpointing filter."""
    for loop in node.find_all(nodes.For):
        if not (isinstance(loop.iter, nodes.Filter) and loop.iter.name == _ITER_FILTER):
            loop.iter = nodes.Filter(
                loop.iter, _ITER_FILTER, [], [], None, None, lineno=loop.iter.lineno
            )


class Sandbox(ImmutableSandboxedEnvironment):
    """See the module docstring; takes Jinja2's ``Environment`` arguments (not ``finalize``)."""

    intercepted_binops = frozenset({"*", "**", "+", "%"})

    def __init__(self, **options: Any) -> None:
        super().__init__(finalize=_refuse_template_reference, **options)
        filters = _GuardedFilters()
        filters.update(self.filters)
        filters[_ITER_FILTER] = _budget_iter
        filters["num"] = num  # pipeline/template_filters.py
        self.filters = filters

    # -- budgets ---------------------------------------------------------------------------

    def render_within(
        self,
        template: Template,
        context: Mapping[str, Any],
        budget: Budget,
        *,
        truncate_with: str | None = None,
    ) -> str:
        """Render ``template`` under ``budget``.

        Args:
            template: compiled by this environment.
            context: the template's variables.
            budget: what the render may spend.
            truncate_with: None: passing the output budget is an error; else rendering stops
                there and the output is cut to the budget and ends with this marker.

        Raises:
            TemplateBudgetError: time, output, work or size budget exceeded.
            Exception: anything else the template raises (undefined operations...).
        """
        meter = _Meter(budget)
        token = _METER.set(meter)
        try:
            variables = context if isinstance(context, dict) else dict(context)
            parts: list[str] = []
            size = 0
            # shared: no copy of the variables when there are no globals to add (rule texts)
            shared = not template.globals
            context_ = template.new_context(variables, shared=shared)
            for chunk in template.root_render_func(context_):
                size += len(chunk)
                if size > budget.output_chars:
                    if truncate_with is None:
                        raise TemplateBudgetError(
                            "output", f"output longer than {budget.output_chars} characters"
                        )
                    parts.append(chunk)
                    text = "".join(parts)[: max(0, budget.output_chars - len(truncate_with))]
                    return text.rstrip() + truncate_with
                parts.append(chunk)
                meter.tick()
            return "".join(parts)
        finally:
            _METER.reset(token)

    def _generate(
        self,
        source: nodes.Template,
        name: str | None,
        filename: str | None,
        defer_init: bool = False,
    ) -> str:
        _wrap_loops(source)
        return super()._generate(source, name, filename, defer_init)

    def concat(self, parts: Iterable[str]) -> str:
        """Join a buffer (``{% set %}`` block, macro body), counted before it is joined."""
        items = list(parts)
        size = sum(len(p) for p in items)
        _refuse_size(size, "a block")
        meter = _METER.get()
        if meter is not None:
            meter.spend(size)
        return "".join(items)

    # -- tightened sandbox -----------------------------------------------------------------

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

    def wrap_str_format(self, value: Any) -> Callable[..., str] | None:
        wrapped = super().wrap_str_format(value)
        if wrapped is None:
            return None
        fmt: str = value.__self__
        inner = wrapped

        def checked(*args: Any, **kwargs: Any) -> str:
            values = list(args[0].values()) if value.__name__ == "format_map" and args else []
            _check_format(fmt, (*args, *kwargs.values(), *values), "str.format")
            result: str = _produced(inner(*args, **kwargs))
            return result

        return checked

    def call(__self, __context: Context, __obj: Any, *args: Any, **kwargs: Any) -> Any:  # noqa: N805
        _checkpoint()
        owner = getattr(__obj, "__self__", None)
        if isinstance(owner, str):
            method = getattr(__obj, "__name__", "")
            if method == "join" and args:
                items = list(args[0])
                _check_join(owner, items, "str.join")
                args = (items, *args[1:])
            else:
                _check_text_op(method, owner, args, kwargs)
        return _produced(super().call(__context, __obj, *args, **kwargs))

    def call_binop(self, context: Any, operator_: str, left: Any, right: Any) -> Any:
        _checkpoint()
        if operator_ == "**":
            if isinstance(right, int | float) and abs(right) > MAX_POWER_EXPONENT:
                raise SecurityError(f"exponent above {MAX_POWER_EXPONENT} refused")
            if (
                isinstance(left, int)
                and isinstance(right, int)
                and abs(left).bit_length() * max(1, right) > MAX_INT_BITS
            ):
                raise TemplateBudgetError("size", f"integers above {MAX_INT_BITS} bits refused")
            return _produced(operator.pow(left, right))
        if operator_ == "+":
            return _produced(operator.add(left, right))
        if operator_ == "%":
            if isinstance(left, str):
                values = right if isinstance(right, tuple) else (right,)
                if isinstance(right, Mapping):
                    values = tuple(right.values())
                _check_format(left, values, "% formatting")
            return _produced(operator.mod(left, right))
        for seq, count in ((left, right), (right, left)):
            if (
                isinstance(seq, str | list | tuple)
                and isinstance(count, int)
                and len(seq) * count > MAX_SEQUENCE_REPEAT
            ):
                raise SecurityError(f"repeating a sequence beyond {MAX_SEQUENCE_REPEAT} refused")
        if (
            isinstance(left, int)
            and isinstance(right, int)
            and abs(left).bit_length() + abs(right).bit_length() > MAX_INT_BITS
        ):
            raise TemplateBudgetError("size", f"integers above {MAX_INT_BITS} bits refused")
        return _produced(operator.mul(left, right))
