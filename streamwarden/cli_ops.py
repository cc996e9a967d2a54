"""``streamwarden alerts``, ``notifications`` and ``status``: the operator's views from Kafka.

Every answer is read from Kafka (the ``alert_state`` changelog, ``alerts.v1``,
``notifications.v1`` and the stage groups' committed offsets), never from one worker, so it is
the same whichever worker runs and however many there are. The usual settings apply
(``STREAMWARDEN_KAFKA_BOOTSTRAP``, ``STREAMWARDEN_KAFKA_EMBEDDED``, ``STREAMWARDEN_APP_ID``,
``STREAMWARDEN_PARTITIONS``). ``--json`` prints one JSON document.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, NoReturn

import click
import msgspec

__all__ = ["alerts", "notifications", "status"]

READ_TIMEOUT = 60.0
"""Longest a view may take to read Kafka to its end."""


def _fail(message: str) -> NoReturn:
    click.echo(message, err=True)
    sys.exit(1)


def _settings() -> Any:
    from pipeline.settings import PipelineSettings

    settings = PipelineSettings()
    if not settings.kafka_bootstrap.strip():
        _fail(
            "configuration error: STREAMWARDEN_KAFKA_BOOTSTRAP is not set; "
            "set it to host:port of Kafka"
        )
    return settings


def _matchers(texts: Sequence[str]) -> list[Any]:
    from pipeline.alerting.matchers import MatcherError, parse_matcher

    try:
        return [parse_matcher(text) for text in texts]
    except MatcherError as exc:
        _fail(f"bad matcher: {exc}")


def _when(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S")


def _age(ms: int, now_ms: int) -> str:
    seconds = max((now_ms - ms) // 1000, 0)
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 7200:
        return f"{seconds // 60}m"
    return f"{seconds // 3600}h{(seconds % 3600) // 60:02d}m"


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [len(h) for h in headers]
    for row in rows:
        widths = [max(w, len(c)) for w, c in zip(widths, row, strict=True)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    lines += [
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in rows
    ]
    return "\n".join(lines)


def _fmt_value(value: float | str) -> str:
    return f"{value:g}" if isinstance(value, float | int) else str(value)


def _severity_lookup(settings: Any) -> Any:
    """Severity by rule name from the configured rules, when they load (pending alerts have
    no transition to take it from)."""
    from pipeline.errors import StreamWardenError
    from pipeline.rules.loader import load_rules

    try:
        rules = {rule.name: rule.severity for rule in load_rules([settings.rules_path])}
    except (StreamWardenError, OSError):
        rules = {}
    return rules.get


async def _read_view(settings: Any) -> Any:
    from pipeline.ops.cluster import ClusterView

    async with ClusterView(settings) as view:
        await view.refresh(read_timeout=READ_TIMEOUT)
    return view


def _run(coro: Any) -> Any:
    try:
        return asyncio.run(coro)
    except TimeoutError:
        _fail(
            f"Kafka did not answer within {READ_TIMEOUT:g}s; is STREAMWARDEN_KAFKA_BOOTSTRAP right?"
        )
    except Exception as exc:
        from aiokafka.errors import KafkaError

        if isinstance(exc, KafkaError):
            _fail(f"Kafka error: {exc}")
        raise


@click.command()
@click.argument("matchers", nargs=-1)
@click.option(
    "--state",
    type=click.Choice(["firing", "pending", "all"]),
    default="all",
    show_default=True,
    help="Which alerts.",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
def alerts(matchers: tuple[str, ...], state: str, as_json: bool) -> None:
    """Alerts in progress across all workers, filtered by MATCHERS (label=value, label!=value,
    label=~regex, label!~regex; labels: rule, alertname, severity, entity, source, stream,
    metric, state and the record's labels)."""
    from pipeline.ops.alerts import select_alerts

    parsed = _matchers(matchers)
    settings = _settings()
    view = _run(_read_view(settings))
    found = select_alerts(
        view.entries(),
        view.transitions,
        matchers=parsed,
        state=state,  # type: ignore[arg-type]
        severity_of=_severity_lookup(settings),
    )
    if as_json:
        click.echo(json.dumps(msgspec.to_builtins(found)))
        return
    if not found:
        click.echo("no alerts")
        return
    now = int(time.time() * 1000)
    rows = [
        (
            a.rule,
            a.state,
            a.severity,
            a.entity,
            _fmt_value(a.value),
            _age(a.since_ms, now),
            a.annotations.get("summary", ""),
        )
        for a in found
    ]
    click.echo(_table(("RULE", "STATE", "SEVERITY", "ENTITY", "VALUE", "SINCE", "SUMMARY"), rows))


@click.command()
@click.argument("matchers", nargs=-1)
@click.option("--since", default="1h", show_default=True, help="How far back (30s, 5m, 1h, 2d).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
def notifications(matchers: tuple[str, ...], since: str, as_json: bool) -> None:
    """Notifications delivered, failed or suppressed (the history topic notifications.v1),
    filtered by MATCHERS over the alert's labels plus channel, outcome and kind."""
    from pipeline.alerting.matchers import matches_all
    from pipeline.rules.duration import parse_duration

    parsed = _matchers(matchers)
    try:
        window = parse_duration(since)
    except ValueError as exc:
        _fail(f"--since: {exc}")
    settings = _settings()
    view = _run(_read_view(settings))
    now = int(time.time() * 1000)
    start = now - int(window.total_seconds() * 1000)
    found = [
        r
        for r in view.history
        if r.at_ms >= start
        and matches_all(
            parsed,
            {**r.labels, "channel": r.channel, "outcome": r.outcome, "kind": r.kind, "id": r.id},
        )
    ]
    if as_json:
        click.echo(json.dumps(msgspec.to_builtins(found)))
        return
    if not found:
        click.echo(f"no notifications in the last {since}")
        return
    rows = [
        (_when(r.at_ms), r.channel, r.outcome, r.kind, r.rule, r.entity, r.reason, r.id[:12])
        for r in found
    ]
    click.echo(
        _table(("TIME (UTC)", "CHANNEL", "OUTCOME", "KIND", "RULE", "ENTITY", "REASON", "ID"), rows)
    )


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
def status(as_json: bool) -> None:
    """Stages, their consumer groups, members and partitions, lag and committed offsets, and
    channels' last success and failure (from the notification history)."""
    from pipeline.ops.cluster import group_status

    settings = _settings()

    async def read() -> tuple[Any, Any]:
        groups = await group_status(settings, read_timeout=READ_TIMEOUT)
        view = await _read_view(settings)
        return groups, view

    groups, view = _run(read())
    channels: dict[str, dict[str, Any]] = {}
    for record in view.history:
        entry = channels.setdefault(
            record.channel, {"last_delivered_ms": None, "last_failed_ms": None, "last_reason": ""}
        )
        if record.outcome == "delivered":
            entry["last_delivered_ms"] = record.at_ms
        elif record.outcome == "failed":
            entry["last_failed_ms"] = record.at_ms
            entry["last_reason"] = record.reason
    document = {
        "app_id": settings.app_id,
        "stages": [g.to_json() for g in groups],
        "channels": channels,
    }
    if as_json:
        click.echo(json.dumps(document))
        return
    rows = []
    for g in groups:
        for p in g.partitions:
            rows.append(
                (
                    g.stage,
                    g.group,
                    f"{p.topic}:{p.partition}",
                    p.owner or "-",
                    str(p.end),
                    "-" if p.committed is None else str(p.committed),
                    "-" if p.lag is None else str(p.lag),
                )
            )
    click.echo(_table(("STAGE", "GROUP", "PARTITION", "OWNER", "END", "COMMITTED", "LAG"), rows))
    for g in groups:
        members = "unknown (the broker does not describe groups)" if g.members is None else ""
        click.echo(f"{g.stage}: members={members or len(g.members or [])} lag={g.lag}")
    click.echo("")
    if not channels:
        click.echo("no notification history yet")
        return
    crows = [
        (
            name,
            _when(c["last_delivered_ms"]) if c["last_delivered_ms"] else "-",
            _when(c["last_failed_ms"]) if c["last_failed_ms"] else "-",
            c["last_reason"],
        )
        for name, c in sorted(channels.items())
    ]
    click.echo(_table(("CHANNEL", "LAST DELIVERED (UTC)", "LAST FAILED (UTC)", "REASON"), crows))
