"""Notification templates: Jinja2 in a sandbox, one format per channel.

Formats and the templates shipped with the package (``pipeline/alerting/templates/``):

====================  =====================  ===========================================
format                body template          used for
====================  =====================  ===========================================
``text``              ``body.text.j2``       json://, console://, and anything plain
``markdown``          ``body.markdown.j2``   Slack, Telegram (apprise converts standard
                                             Markdown to each service's dialect)
``html``              ``body.html.j2``       email (autoescape on: a hostile entity name
                                             such as ``<script>`` arrives as text)
====================  =====================  ===========================================

The title (``title.j2``) is plain text in every format: it becomes an email subject, a Slack
attachment title, a bold first line on Telegram.

A channel may override ``title`` and ``body`` in ``channels.yaml`` (``templates:``); the
overrides are compiled and test-rendered at start-up (:func:`check_template`), and if one
still fails at run time the shipped template of the same format is used instead and a
warning names the channel: a broken or hostile template never reaches a notification.

What templates see (:func:`notification_context`): ``kind``, ``channel``, ``format``,
``alerts`` / ``firing`` / ``resolved`` (lists of alert views), ``alert`` (the first one),
``group_labels``, ``suppressed`` (count, for ``suppressed-summary``) with
``suppressed_kinds`` and ``suppressed_rules``, and in the body also ``title``. Each alert
view has ``rule, state, severity, entity, source, stream, metric, value, value_text,
ts_ms, time`` (ISO 8601 UTC), ``summary``, ``description``, ``labels``, ``annotations``
(the alert's annotations from its record, the rule's annotations, plus ``summary`` and
``description``) and ``why``: a link-free explanation with ``rule, type, condition,
threshold, aggregate, window, for, after, value`` and ``text`` (which ends with the alert's
annotations in brackets, e.g. ``[reason: Connection lost]``).

Filters: ``md`` (escape Markdown), ``duration`` (ms -> ``5m``), ``isotime`` (ms -> ISO 8601
UTC).

The sandbox is :class:`pipeline.sandbox.Sandbox` (an escape attempt is a start-up error);
the only global is ``range`` (bounded). Every render, at start-up, in the worker and in every
CLI command, runs under :data:`CHANNEL_BUDGET` (time, output, work: enforced while
rendering, see :mod:`pipeline.sandbox`): a custom template over budget is refused at
start-up when the sample render shows it, and at run time falls back to the shipped template
with a warning naming the channel.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from jinja2 import ChainableUndefined, PackageLoader, Template, TemplateSyntaxError
from jinja2.exceptions import SecurityError

from pipeline.models import AlertTransition
from pipeline.rules.duration import format_duration
from pipeline.sandbox import Budget, Sandbox, TemplateBudgetError

__all__ = [
    "CHANNEL_BUDGET",
    "FORMATS",
    "MAX_OUTPUT_CHARS",
    "ChannelTemplates",
    "Format",
    "Renderer",
    "TemplateCheckError",
    "check_template",
    "explain",
    "markdown_escape",
    "notification_context",
]

logger = logging.getLogger(__name__)

Format = Literal["text", "markdown", "html"]
FORMATS: tuple[Format, ...] = ("text", "markdown", "html")

MAX_OUTPUT_CHARS = 32_000
"""Longest title or body a template may produce (its output budget); rendering stops there
and the text is cut with a marker."""
CHANNEL_BUDGET = Budget(time_s=0.5, output_chars=MAX_OUTPUT_CHARS, work_chars=4_000_000)
"""What one render of a channel title or body may spend."""

TITLE_TEMPLATE = "title.j2"


def body_template_name(fmt: Format) -> str:
    """File name of the shipped body template of ``fmt``."""
    return f"body.{fmt}.j2"


_MD_SPECIAL = re.compile(r"([\\`*\[\]<>])")


def markdown_escape(value: Any) -> str:
    """Escape text for a Markdown body: backslash before ``\\ ` * [ ] < >``.

    Underscores are left alone: apprise escapes them for Telegram, and Slack shows a
    backslash literally.
    """
    return _MD_SPECIAL.sub(r"\\\1", "" if value is None else str(value))


def _duration_filter(value: Any) -> str:
    if isinstance(value, timedelta):
        return format_duration(value)
    if isinstance(value, int | float) and math.isfinite(value):
        return format_duration(timedelta(milliseconds=int(value)))
    return "" if value is None else str(value)


def _isotime(ms: Any) -> str:
    if not isinstance(ms, int | float):
        return ""
    return (
        datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
    )


def _environment(autoescape: bool) -> Sandbox:
    env = Sandbox(
        loader=PackageLoader("pipeline.alerting", "templates"),
        autoescape=autoescape,
        undefined=ChainableUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=False,
    )
    safe_range = env.globals["range"]
    env.globals.clear()
    env.globals["range"] = safe_range
    env.filters["md"] = markdown_escape
    env.filters["duration"] = _duration_filter
    env.filters["isotime"] = _isotime
    return env


_PLAIN_ENV = _environment(autoescape=False)
_HTML_ENV = _environment(autoescape=True)


def _env(fmt: Format) -> Sandbox:
    return _HTML_ENV if fmt == "html" else _PLAIN_ENV


class TemplateCheckError(ValueError):
    """A channel template does not compile or fails its test render.

    Attributes:
        message: what is wrong (never the rendered output).
        lineno: 1-based line in the template text, when known.
    """

    def __init__(self, message: str, lineno: int | None = None) -> None:
        self.message = message
        self.lineno = lineno
        where = f" (template line {lineno})" if lineno else ""
        super().__init__(f"{message}{where}")


# --- what templates see ---------------------------------------------------------------------


def _as_written(number: float) -> float | int:
    return int(number) if float(number).is_integer() else number


def _number(value: float) -> str:
    return f"{value:g}" if math.isfinite(value) else str(value)


def _value_text(value: float | str) -> str:
    return _number(value) if isinstance(value, float | int) else value


def _condition_facts(condition: Any, metric: str) -> tuple[str, str]:
    """``(condition text, threshold text)`` of a rule condition, tolerant of unknown kinds."""
    op = getattr(condition, "op", None)
    if op in ("between", "outside"):
        low, high = getattr(condition, "low", None), getattr(condition, "high", None)
        if isinstance(low, int | float) and isinstance(high, int | float):
            threshold = f"{_number(low)}..{_number(high)}"
            return f"{metric} {op} {_number(low)} and {_number(high)}", threshold
    value = getattr(condition, "value", None)
    if isinstance(op, str) and isinstance(value, int | float):
        return f"{metric} {op} {_number(value)}", _number(value)
    return "", ""


def _window_text(window: Any) -> str:
    """A rule's window, whatever shape it has (a duration, or an object with a size)."""
    if window is None:
        return ""
    if isinstance(window, timedelta):
        return format_duration(window)
    size = getattr(window, "size", None)
    if isinstance(size, timedelta):
        kind = getattr(window, "kind", None) or getattr(window, "type", None)
        text = f"{kind} {format_duration(size)}" if isinstance(kind, str) else format_duration(size)
        hop = getattr(window, "hop", None)
        return f"{text} every {format_duration(hop)}" if isinstance(hop, timedelta) else text
    return str(window)


def _aggregate_text(aggregate: Any) -> str:
    if aggregate is None:
        return ""
    if isinstance(aggregate, str):
        return aggregate
    percentile = getattr(aggregate, "percentile", None)
    if isinstance(percentile, int | float):
        return f"p{_number(percentile)}"
    return str(aggregate)


def _duration_text(value: Any) -> str:
    return format_duration(value) if isinstance(value, timedelta) and value else ""


def explain(alert: AlertTransition, rule: Any | None = None) -> dict[str, str]:
    """Why an alert fired (or resolved), without links: the rule, its condition and
    threshold, aggregate and window, ``for`` and absence time when the rule has them, and the
    value. Works for any rule type (fields it does not know are left empty).

    Args:
        alert: the transition.
        rule: the rule object (from :func:`pipeline.rules.loader.load_rules`), or None when
            it is unknown (then only the alert's own facts are used).

    Returns:
        ``rule, type, condition, threshold, aggregate, window, for, after, value, text``;
        empty strings for what is unknown.
    """
    value = _value_text(alert.value)
    kind = str(getattr(rule, "type", "") or "")
    aggregate = _aggregate_text(getattr(rule, "aggregate", None))
    measured = f"{aggregate} of {alert.metric}" if aggregate else alert.metric
    condition, threshold = _condition_facts(getattr(rule, "condition", None), measured)
    window = _window_text(getattr(rule, "window", None))
    for_text = _duration_text(getattr(rule, "for_", None))
    after = _duration_text(getattr(rule, "after", None))
    firing = alert.state == "firing"
    subject = f"{measured} of {alert.entity}"
    if kind == "absence":
        sentence = (
            f"no {alert.metric} from {alert.entity} for {after or 'too long'}"
            if firing
            else f"{alert.entity} sends {alert.metric} again"
        )
    elif kind == "state" or isinstance(alert.value, str):
        target = str(getattr(rule, "target", "") or "")
        changes = getattr(rule, "changes", None)
        sentence = f"{alert.metric} of {alert.entity} is {value!r}"
        if changes is not None and firing:
            sentence += f" (changed from {getattr(changes, 'from_', '?')!r})"
        elif target and not firing:
            sentence += f", no longer {target!r}"
        condition = condition or (f"{alert.metric} is {target!r}" if target else "")
    elif firing:
        sentence = f"{subject} was {value}"
        if condition:
            sentence += f", meeting the condition {condition}"
    else:
        sentence = f"{subject} is {value}"
        if condition:
            sentence += f", no longer meeting the condition {condition}"
    details = []
    if firing and for_text:
        details.append(f"held for {for_text}")
    if window:
        details.append(f"window {window}")
    if details:
        sentence += f" ({', '.join(details)})"
    if alert.annotations:  # the record's descriptive facts (a reason, a title...): issue 14
        notes = "; ".join(f"{k}: {_short(v)}" for k, v in sorted(alert.annotations.items()))
        sentence += f" [{notes}]"
    verb = "fired" if firing else "resolved"
    return {
        "rule": alert.rule,
        "type": kind,
        "condition": condition,
        "threshold": threshold,
        "aggregate": aggregate,
        "window": window,
        "for": for_text,
        "after": after,
        "value": value,
        "text": f"Rule {alert.rule} {verb}: {sentence}.",
    }


RuleLookup = Callable[[str], Any | None]


def _short(text: str, limit: int = 80) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _annotations(alert: AlertTransition, rule: Any | None) -> dict[str, str]:
    found = getattr(rule, "annotations", None) if rule is not None else None
    annotations = dict(alert.annotations)  # the record's; the rule's own win on a clash
    if isinstance(found, dict):
        annotations.update((str(k), str(v)) for k, v in found.items())
    annotations.setdefault("summary", alert.summary)
    annotations.setdefault("description", alert.description)
    return annotations


def alert_view(alert: AlertTransition, rule: Any | None = None) -> dict[str, Any]:
    """The template view of one alert (see the module docstring)."""
    return {
        "fingerprint": alert.fingerprint,
        "rule": alert.rule,
        "state": alert.state,
        "severity": alert.severity,
        "entity": alert.entity,
        "source": alert.source,
        "stream": alert.stream,
        "metric": alert.metric,
        "value": _as_written(alert.value) if isinstance(alert.value, float) else alert.value,
        "value_text": _value_text(alert.value),
        "ts_ms": alert.ts_ms,
        "time": _isotime(alert.ts_ms),
        "summary": alert.summary,
        "description": alert.description,
        "labels": dict(sorted(alert.labels.items())),
        "annotations": _annotations(alert, rule),
        "why": explain(alert, rule),
    }


def notification_context(
    *,
    kind: str,
    channel: str,
    fmt: Format,
    alerts: Sequence[AlertTransition],
    group_labels: Mapping[str, str] | None = None,
    suppressed: int = 0,
    suppressed_kinds: Mapping[str, int] | None = None,
    suppressed_rules: Mapping[str, int] | None = None,
    rule_lookup: RuleLookup | None = None,
) -> dict[str, Any]:
    """Everything a notification template may use."""
    views = [alert_view(a, rule_lookup(a.rule) if rule_lookup else None) for a in alerts]
    return {
        "kind": kind,
        "channel": channel,
        "format": fmt,
        "alerts": views,
        "alert": views[0] if views else {},
        "firing": [v for v in views if v["state"] == "firing"],
        "resolved": [v for v in views if v["state"] == "resolved"],
        "group_labels": {
            k: v for k, v in sorted((group_labels or {}).items()) if k != "fingerprint"
        },
        "suppressed": suppressed,
        "suppressed_kinds": dict(sorted((suppressed_kinds or {}).items())),
        "suppressed_rules": dict(sorted((suppressed_rules or {}).items())),
    }


# --- compiling, checking, rendering ---------------------------------------------------------


def _compile(source: str, fmt: Format) -> Template:
    try:
        return _env(fmt).from_string(source)
    except TemplateSyntaxError as exc:
        raise TemplateCheckError(
            f"template syntax error: {(exc.message or 'invalid template').rstrip('.')}",
            exc.lineno,
        ) from None


def _sample_contexts(fmt: Format) -> list[dict[str, Any]]:
    firing = AlertTransition(
        fingerprint="0000000000000000",
        rule="sample-rule",
        state="firing",
        entity="sample-entity",
        source="sample",
        stream="sample",
        metric="sample.metric",
        value=42.0,
        severity="warning",
        ts_ms=0,
        summary="sample summary",
        description="sample description",
        labels={"team": "sample"},
    )
    resolved = AlertTransition(**{**_fields(firing), "state": "resolved", "fingerprint": "1"})
    contexts = [
        notification_context(kind=k, channel="sample", fmt=fmt, alerts=a)
        for k, a in (
            ("firing", [firing]),
            ("resolved", [resolved]),
            ("repeat", [firing]),
            ("digest", [firing, resolved]),
            ("test", [firing]),
        )
    ]
    contexts.append(
        notification_context(
            kind="suppressed-summary",
            channel="sample",
            fmt=fmt,
            alerts=[],
            suppressed=3,
            suppressed_kinds={"firing": 3},
            suppressed_rules={"sample-rule": 3},
        )
    )
    for context in contexts:
        context["title"] = "sample title"
    return contexts


def _fields(alert: AlertTransition) -> dict[str, Any]:
    return {f: getattr(alert, f) for f in alert.__struct_fields__}


def check_template(source: str, fmt: Format) -> None:
    """Compile a channel template and render it against sample notifications of every kind.

    Raises:
        TemplateCheckError: a syntax error (with its line), a sandbox violation such as an
            unsafe attribute, or any other render failure; the message names the problem,
            never the output.
    """
    template = _compile(source, fmt)
    for context in _sample_contexts(fmt):
        try:
            _env(fmt).render_within(
                template, context, CHANNEL_BUDGET, truncate_with=TRUNCATION_MARKER
            )
        except TemplateBudgetError as exc:
            raise TemplateCheckError(
                f"exceeds its budget on a sample {context['kind']} notification: {exc.detail}"
            ) from None
        except SecurityError as exc:
            raise TemplateCheckError(f"refused by the template sandbox: {exc}") from None
        except Exception as exc:
            raise TemplateCheckError(
                f"fails to render a sample {context['kind']} notification: "
                f"{type(exc).__name__}: {exc}"
            ) from None


@dataclass(frozen=True)
class ChannelTemplates:
    """A channel's format and its template overrides (None: the shipped template)."""

    format: Format = "text"
    title: str | None = None
    body: str | None = None


TRUNCATION_MARKER = "\n[... truncated]"


def _cut(text: str) -> str:
    text = text.strip()
    if len(text) > MAX_OUTPUT_CHARS:
        return text[: MAX_OUTPUT_CHARS - 20].rstrip() + TRUNCATION_MARKER
    return text


def _error_name(exc: Exception) -> str:
    """How a render failure is named in the log: the budget, or the exception class."""
    if isinstance(exc, TemplateBudgetError):
        return f"{exc.what} budget exceeded"
    return type(exc).__name__


class Renderer:
    """Renders notifications for channels.

    Args:
        channels: templates per channel name; a channel not listed gets the ``text`` format
            and the shipped templates.
        rule_lookup: rule name -> rule object (for ``why`` and ``annotations``), or None.
    """

    def __init__(
        self,
        channels: Mapping[str, ChannelTemplates] | None = None,
        *,
        rule_lookup: RuleLookup | None = None,
    ) -> None:
        self._channels = dict(channels or {})
        self.rule_lookup = rule_lookup
        self._compiled: dict[tuple[str, str], tuple[Template, Template | None]] = {}
        for name, spec in self._channels.items():
            for part in ("title", "body"):
                source = getattr(spec, part)
                fmt: Format = "text" if part == "title" else spec.format
                custom = _compile(source, fmt) if source is not None else None
                default = _env(fmt).get_template(
                    TITLE_TEMPLATE if part == "title" else body_template_name(spec.format)
                )
                self._compiled[(name, part)] = (default, custom)

    def format_of(self, channel: str) -> Format:
        """The channel's body format."""
        spec = self._channels.get(channel)
        return spec.format if spec is not None else "text"

    def _templates(self, channel: str, part: str) -> tuple[Template, Template | None]:
        found = self._compiled.get((channel, part))
        if found is not None:
            return found
        fmt = self.format_of(channel)
        name = TITLE_TEMPLATE if part == "title" else body_template_name(fmt)
        # Kept: jinja's own cache checks the shipped file's mtime on every lookup.
        found = _env("text" if part == "title" else fmt).get_template(name), None
        self._compiled[(channel, part)] = found
        return found

    def _render_within(
        self, channel: str, part: str, template: Template, context: dict[str, Any]
    ) -> str:
        fmt: Format = "text" if part == "title" else self.format_of(channel)
        return _env(fmt).render_within(
            template, context, CHANNEL_BUDGET, truncate_with=TRUNCATION_MARKER
        )

    def _render_part(self, channel: str, part: str, context: dict[str, Any]) -> str:
        default, custom = self._templates(channel, part)
        if custom is not None:
            try:
                return _cut(self._render_within(channel, part, custom, context))
            except Exception as exc:
                logger.warning(
                    "channel template failed, using the default channel=%s part=%s error=%s",
                    channel,
                    part,
                    _error_name(exc),
                )
        try:
            return _cut(self._render_within(channel, part, default, context))
        except Exception as exc:  # a shipped template must never fail; stay deliverable
            logger.error(
                "default template failed channel=%s part=%s error=%s",
                channel,
                part,
                _error_name(exc),
            )
            return f"[{context['kind']}] {len(context['alerts'])} alert(s)"

    def render(
        self,
        channel: str,
        kind: str,
        alerts: Sequence[AlertTransition],
        *,
        group_labels: Mapping[str, str] | None = None,
        suppressed: int = 0,
        suppressed_kinds: Mapping[str, int] | None = None,
        suppressed_rules: Mapping[str, int] | None = None,
    ) -> tuple[str, str, Format]:
        """``(title, body, format)`` of one notification; never raises."""
        fmt = self.format_of(channel)
        context = notification_context(
            kind=kind,
            channel=channel,
            fmt=fmt,
            alerts=alerts,
            group_labels=group_labels,
            suppressed=suppressed,
            suppressed_kinds=suppressed_kinds,
            suppressed_rules=suppressed_rules,
            rule_lookup=self.rule_lookup,
        )
        title = " ".join(self._render_part(channel, "title", context).split())
        context["title"] = title
        body = self._render_part(channel, "body", context)
        return title, body, fmt
