"""What the worker and the command line need around the dispatcher.

- :func:`build_dispatcher`: a :class:`~pipeline.alerting.dispatch.Dispatcher` from a loaded
  configuration and loaded channels (renderer, silences file, counters).
- :func:`preview`: what each channel would receive for a rule (``notify preview --rule R``);
  needs no secret: a channel's format comes from ``format:`` or, when its URL happens to be
  resolvable, from the URL's scheme, else ``text``.
- :func:`send_test` / :func:`send_test_async`: one real notification to one channel
  (``notify test CHANNEL``).
- :func:`silences_path`: the silences file named in ``channels.yaml``
  (``silence add|list|expire``; the operations are in :mod:`pipeline.alerting.silences`).
"""

from __future__ import annotations

import asyncio
import fnmatch
import os
from collections.abc import Mapping, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any, Literal

from pipeline.alerting.config import AlertingConfig, format_for_url, load_config
from pipeline.alerting.dispatch import Dispatcher
from pipeline.alerting.model import Notification, notification_id
from pipeline.alerting.silences import SilenceFileStore, SilenceSource
from pipeline.alerting.stats import ChannelStats
from pipeline.alerting.templates import ChannelTemplates, Format, Renderer, RuleLookup
from pipeline.errors import ConfigError
from pipeline.models import AlertTransition, Measurement
from pipeline.notify.channels import (
    Channel,
    channel_templates,
    load_channels_from,
    resolve_url,
)
from pipeline.notify.sender import Delivery, Notifier, RetryPolicy
from pipeline.rules.engine import RuleEngine, alert_fingerprint
from pipeline.rules.loader import load_rules
from pipeline.rules.templates import compile_template, render
from producers.envelope import now_ms as wall_ms

__all__ = [
    "SAMPLE_TS_MS",
    "build_dispatcher",
    "preview",
    "sample_alert",
    "send_test",
    "send_test_async",
    "silences_path",
]

SAMPLE_TS_MS = 1_700_000_000_000
"""Event time of preview samples (2023-11-14T22:13:20Z), so previews are reproducible."""

TEST_RETRY = RetryPolicy(attempts=2, initial_delay=1.0, max_delay=1.0, send_timeout=15.0)
"""``notify test`` retries once: a person is waiting for the answer."""


def build_dispatcher(
    config: AlertingConfig,
    channels: Mapping[str, Channel],
    *,
    rule_lookup: RuleLookup | None = None,
    silences: SilenceSource | None = None,
    stats: ChannelStats | None = None,
) -> Dispatcher:
    """A dispatcher for the worker.

    Args:
        config: from :func:`~pipeline.alerting.config.load_config`.
        channels: from :func:`~pipeline.notify.channels.load_channels_from` (formats and
            template overrides are taken from them).
        rule_lookup: rule name -> rule, for ``why`` and annotations in templates.
        silences: defaults to the configured silences file (none if not configured).
        stats: counters shared with the notifier.
    """
    if silences is None and config.silences_file is not None:
        silences = SilenceFileStore(config.silences_file)
    renderer = Renderer(channel_templates(channels), rule_lookup=rule_lookup)
    return Dispatcher(config, renderer, silences=silences, stats=stats)


def silences_path(channels_file: Path | None) -> Path:
    """The silences file configured in ``channels.yaml``.

    Raises:
        ConfigError: no channels file, an invalid one, or no ``silences: {file: ...}`` in it.
    """
    config = load_config(channels_file)
    if config.silences_file is None:
        where = str(channels_file) if channels_file is not None else "no channels file given"
        raise ConfigError(
            f"{where}: no silences file configured; add 'silences: {{file: silences.json}}'"
        )
    return config.silences_file


# --- samples ----------------------------------------------------------------------------------


def _glob_sample(pattern: str, fallback: str) -> str:
    """A text matching a shell glob (``mp-*`` -> ``mp-1``)."""
    if pattern == "*":
        return fallback
    out, i = "", 0
    while i < len(pattern):
        char = pattern[i]
        if char == "*":
            out += "1"
        elif char == "?":
            out += "x"
        elif char == "[":
            end = pattern.find("]", i + 1)
            if end == -1:
                out += char
            else:
                choices = pattern[i + 1 : end].lstrip("!^")
                out += choices[:1] or "x"
                i = end
        else:
            out += char
        i += 1
    return out if fnmatch.fnmatchcase(out, pattern) else fallback


def _firing_value(condition: Any) -> float:
    op = getattr(condition, "op", None)
    if op in ("between", "outside"):
        low, high = float(condition.low), float(condition.high)
        return (low + high) / 2 if op == "between" else high + max(abs(high - low) / 10, 1.0)
    threshold = float(getattr(condition, "value", 0.0))
    step = max(abs(threshold) / 10, 1.0)
    return {">": threshold + step, "<": threshold - step, "!=": threshold + step}.get(
        str(op), threshold
    )


def _clearing_value(rule: Any) -> float:
    clear = getattr(rule, "clear", None)
    condition = getattr(clear, "condition", None) if clear is not None else None
    if condition is not None:
        return _firing_value(condition)
    firing: Any = getattr(rule, "condition", None)
    op = getattr(firing, "op", None)
    if op in ("between", "outside"):
        low, high = float(firing.low), float(firing.high)
        return high + max(abs(high - low), 1.0) if op == "between" else (low + high) / 2
    threshold = float(getattr(firing, "value", 0.0))
    step = max(abs(threshold) / 10, 1.0)
    return {">": threshold - step, ">=": threshold - step, "!=": threshold}.get(
        str(op), threshold + step
    )


def _ms(value: Any) -> int:
    return int(value.total_seconds() * 1000) if isinstance(value, timedelta) else 0


def _from_engine(
    rule: Any,
    state: str,
    source: str,
    stream: str,
    entity: str,
    fire_value: float,
    clear_value: float,
) -> AlertTransition | None:
    """Run the real rule engine over sample measurements; None when it yields nothing (rule
    types that need windows to close or time to pass)."""
    match = rule.match

    def measure(at_ms: int, reading: float) -> Measurement:
        return Measurement(
            source=source,
            stream=stream,
            entity=entity,
            metric=match.metric,
            value=reading,
            unit="",
            ts_ms=at_ms,
            labels=dict(match.labels),
        )

    engine = RuleEngine([rule])
    engine_state: dict[str, Any] = {}
    fired_at = SAMPLE_TS_MS + _ms(getattr(rule, "for_", None))
    steps = [(SAMPLE_TS_MS, fire_value), (fired_at, fire_value)]
    if state == "resolved":
        clear_for = _ms(getattr(getattr(rule, "clear", None), "for_", None))
        steps += [(fired_at + 1000, clear_value), (fired_at + 1000 + clear_for, clear_value)]
    found: list[AlertTransition] = []
    for at_ms, reading in steps:
        found += [t for t in engine.evaluate(engine_state, measure(at_ms, reading))]
    matching = [t for t in found if t.state == state]
    return matching[-1] if matching else None


def sample_alert(
    rule: Any,
    state: Literal["firing", "resolved"] = "firing",
    *,
    entity: str | None = None,
    value: float | None = None,
) -> AlertTransition:
    """A realistic transition of ``rule``.

    Threshold rules go through the real rule engine with sample measurements, so summaries
    and descriptions render exactly as in production. Other rule types (windows, absence,
    states) get a transition built here, with the rule's summary and description rendered
    from the same names the engine provides.

    Args:
        rule: a loaded rule.
        state: which transition.
        entity: entity name; by default one matching the rule's entity glob.
        value: the measured value; by default one that meets (firing) or clears (resolved)
            the rule's condition.
    """
    match = rule.match
    entity = entity or _glob_sample(match.entity, "example-entity")
    stream = _glob_sample(match.stream, "example-stream")
    source = match.source or "example"
    fire_value = (
        value
        if value is not None and state == "firing"
        else _firing_value(getattr(rule, "condition", None))
    )
    clear_value = value if value is not None and state == "resolved" else _clearing_value(rule)
    try:
        found = _from_engine(rule, state, source, stream, entity, fire_value, clear_value)
    except Exception:  # the engine may not accept this rule type that way; build it here
        found = None
    if found is not None:
        return found
    metric = getattr(match, "metric", None) or getattr(match, "state", None) or "value"
    reading: float | str = fire_value if state == "firing" else clear_value
    if getattr(rule, "type", None) == "state":
        target = str(getattr(rule, "target", "") or "state")
        reading = target if state == "firing" else f"not-{target}"
    labels = {**dict(match.labels), **dict(rule.labels)}
    context: dict[str, Any] = {
        "rule": rule.name,
        "entity": entity,
        "source": source,
        "stream": stream,
        "metric": metric,
        "value": reading,
        "unit": "",
        "labels": labels,
        "state": state,
        "ts_ms": SAMPLE_TS_MS,
        "severity": rule.severity,
    }
    condition = getattr(rule, "condition", None)
    if condition is not None:
        context["op"] = condition.op
        context["threshold"] = getattr(condition, "value", None)
    return AlertTransition(
        fingerprint=alert_fingerprint(rule.name, entity, dict(match.labels)),
        rule=rule.name,
        state=state,
        entity=entity,
        source=source,
        stream=stream,
        metric=metric,
        value=reading,
        severity=rule.severity,
        ts_ms=SAMPLE_TS_MS,
        summary=render(compile_template(rule.summary), context),
        description=render(compile_template(rule.description), context) if rule.description else "",
        channels=tuple(rule.channels),
        labels=labels,
    )


# --- preview ----------------------------------------------------------------------------------


def _preview_format(config: AlertingConfig, name: str, env: Mapping[str, str]) -> Format:
    settings = config.channel(name)
    if settings.format is not None:
        return settings.format
    spec = config.spec.channels.get(name)
    if spec is None:
        return "text"
    base = config.path.parent if config.path is not None else None
    try:
        return format_for_url(resolve_url(name, spec, env, base))
    except ConfigError:
        return "text"


def preview(
    rule_name: str,
    *,
    rules_paths: Sequence[Path],
    channels_file: Path | None,
    state: Literal["firing", "resolved"] = "firing",
    entity: str | None = None,
    value: float | None = None,
    env: Mapping[str, str] | None = None,
) -> list[tuple[str, str, str]]:
    """What each channel would receive when ``rule_name`` fires (or resolves).

    Routing is applied (rule channels, then routes); a channel with ``send_resolved: false``
    is left out of a resolved preview. Silences, mute windows, grouping and rate limits are
    not: the preview shows content, not timing.

    Returns:
        ``(channel, title, body)`` per channel, in routing order.

    Raises:
        ConfigError: invalid channels file or unknown rule.
        RuleError: invalid rule files.
    """
    env = os.environ if env is None else env
    config = load_config(channels_file)
    rules = {r.name: r for r in load_rules(list(rules_paths), known_channels=set(config.channels))}
    rule = rules.get(rule_name)
    if rule is None:
        known = ", ".join(sorted(rules)) or "(none)"
        raise ConfigError(f"no rule named {rule_name!r}; known rules are {known}")
    alert = sample_alert(rule, state, entity=entity, value=value)
    templates = {
        name: ChannelTemplates(
            format=_preview_format(config, name, env),
            title=settings.title_template,
            body=settings.body_template,
        )
        for name, settings in config.channels.items()
    }
    dispatcher = Dispatcher(config, Renderer(templates, rule_lookup=rules.get))
    out: list[tuple[str, str, str]] = []
    for target in dispatcher.route(alert):
        if state == "resolved" and not config.channel(target.channel).send_resolved:
            continue
        title, body, _fmt = dispatcher.renderer.render(target.channel, state, [alert])
        out.append((target.channel, title, body))
    return out


# --- notify test ------------------------------------------------------------------------------


def _test_alert() -> AlertTransition:
    return AlertTransition(
        fingerprint="0000000000000000",
        rule="streamwarden-test",
        state="firing",
        entity="test-entity",
        source="streamwarden",
        stream="test",
        metric="test.value",
        value=42.0,
        severity="info",
        ts_ms=SAMPLE_TS_MS,
        summary="This is what an alert summary looks like.",
        description="Sent by `streamwarden notify test`; nothing is wrong.",
        labels={"purpose": "test"},
    )


async def send_test_async(
    channel: str,
    *,
    channels_file: Path | None,
    env: Mapping[str, str] | None = None,
    policy: RetryPolicy = TEST_RETRY,
) -> Delivery:
    """Send one real ``test`` notification to ``channel``, rendered with its templates.

    Raises:
        ConfigError: invalid channels file, unknown channel, or its URL cannot be loaded.
        NotifyError: the channel did not accept it; ``reason`` says why (never the URL).
    """
    config = load_config(channels_file)
    if channel not in config.channels:
        known = ", ".join(sorted(config.channels))
        raise ConfigError(f"unknown channel {channel!r}; known channels are {known}")
    channels = load_channels_from(config, env, only={channel})
    renderer = Renderer(channel_templates(channels))
    alert = _test_alert()
    title, body, fmt = renderer.render(channel, "test", [alert])
    created = wall_ms()
    notification = Notification(
        id=notification_id(channel, "test", [alert], str(created)),
        channel=channel,
        kind="test",
        alerts=(alert,),
        title=title,
        body=body,
        format=fmt,
        notify_type="info",
        created_ms=created,
    )
    notifier = Notifier({channel: channels[channel]}, policy=policy)
    return await notifier.send_checked(notification)


def send_test(
    channel: str,
    *,
    channels_file: Path | None,
    env: Mapping[str, str] | None = None,
    policy: RetryPolicy = TEST_RETRY,
) -> Delivery:
    """Synchronous :func:`send_test_async` for the command line (runs its own event loop).

    Raises:
        ConfigError, NotifyError: see :func:`send_test_async`.
    """
    return asyncio.run(
        send_test_async(channel, channels_file=channels_file, env=env, policy=policy)
    )
