"""``streamwarden notify`` (preview, test) and ``streamwarden silence`` (add, list, expire).

Thin wrappers over :mod:`pipeline.notify.tools` and :mod:`pipeline.alerting.silences`:
this module parses arguments, prints, and turns the library's errors into exit code 1 with
one ``error: ...`` line per problem on standard error (never a traceback). Malformed command
lines (a missing argument, a value of the wrong type) are click's usage errors, exit code 2,
as everywhere else in ``streamwarden``.

Nothing here prints a channel URL: previews need no URL, ``notify test`` reports a channel by
name and the library's errors never quote one. Times are printed in UTC ISO 8601
(``2024-05-01T10:00:00Z``); times given on the command line need a zone (``Z`` or an offset).

Heavy imports (apprise, the rule engine) happen inside the commands so that
``streamwarden --help`` stays fast.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, NoReturn, cast

import click

if TYPE_CHECKING:
    from pipeline.alerting.silences import Silence

CHANNELS_FILE_ENV = "STREAMWARDEN_CHANNELS_FILE"
RULES_PATH_ENV = "STREAMWARDEN_RULES_PATH"
SHORT_ID_LENGTH = 8
"""Shortest silence id prefix ``silence list`` shows (longer when needed to stay unique)."""

_TIME_FORMS = "2024-05-01T10:00:00Z, 2024-05-01T12:00+02:00"

_channels_file_option = click.option(
    "--channels-file",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help=f"Channels file (default: ${CHANNELS_FILE_ENV}).",
)


def _now_ms() -> int:
    """Wall-clock epoch ms (tests replace this)."""
    from producers.envelope import now_ms

    return now_ms()


def _fail(problems: str | Iterable[str]) -> NoReturn:
    """Print each problem as one ``error: ...`` line on standard error and exit 1."""
    lines = problems.splitlines() if isinstance(problems, str) else list(problems)
    for line in lines:
        if line.strip():
            click.echo(f"error: {line}", err=True)
    sys.exit(1)


def _channels_file(option: Path | None) -> Path | None:
    if option is not None:
        return option
    value = os.environ.get(CHANNELS_FILE_ENV, "").strip()
    return Path(value) if value else None


def _utc(ms: int) -> str:
    """``2024-05-01T10:00:00Z`` (seconds precision); a time a hand-edited file put outside
    what datetime can show is printed as epoch ms instead of a traceback."""
    try:
        return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    except (ValueError, OverflowError, OSError):
        return f"{ms} ms since 1970 (out of range)"


def _one_line(text: str) -> str:
    return " ".join(text.split())


# --- notify -----------------------------------------------------------------------------------


@click.group()
def notify() -> None:
    """Preview what channels would receive, and send test notifications."""


@notify.command("preview")
@click.option("--rule", "rule_name", required=True, help="Name of the rule to preview.")
@click.option(
    "--rules",
    "rules_paths",
    multiple=True,
    type=click.Path(path_type=Path),
    help=f"Rule file or folder; repeatable (default: ${RULES_PATH_ENV}, else rules).",
)
@_channels_file_option
@click.option(
    "--state",
    type=click.Choice(["firing", "resolved"]),
    default="firing",
    show_default=True,
    help="Which notification to render.",
)
@click.option(
    "--entity", default=None, help="Entity of the sample alert (default: one the rule matches)."
)
@click.option(
    "--value",
    type=float,
    default=None,
    help="Measured value of the sample alert (default: one that fires or clears the rule).",
)
def notify_preview(
    rule_name: str,
    rules_paths: tuple[Path, ...],
    channels_file: Path | None,
    state: str,
    entity: str | None,
    value: float | None,
) -> None:
    """Print what each channel would receive when a rule fires or resolves.

    Routing and channel templates apply (silences, grouping and rate limits do not: this
    shows content, not timing). No secret is needed and nothing is sent.
    """
    from pipeline.errors import ConfigError, RuleError
    from pipeline.notify.tools import preview

    paths = list(rules_paths) or [Path(os.environ.get(RULES_PATH_ENV, "").strip() or "rules")]
    missing = [p for p in paths if not p.exists()]
    if missing:
        _fail(
            f"rules path {str(p)!r} does not exist; pass --rules PATH or set {RULES_PATH_ENV}"
            for p in missing
        )
    try:
        rendered = preview(
            rule_name,
            rules_paths=paths,
            channels_file=_channels_file(channels_file),
            state=cast(Literal["firing", "resolved"], state),
            entity=entity,
            value=value,
        )
    except (ConfigError, RuleError) as exc:
        _fail(str(exc))
    if not rendered:
        click.echo(f"no channel receives the {state} notification of {rule_name}")
        return
    blocks = []
    for channel, title, body in rendered:
        lines = [f"== {channel} ==", f"title: {title}", "body:"]
        lines += [f"  {line}" if line else "" for line in body.splitlines()]
        blocks.append("\n".join(lines))
    click.echo("\n\n".join(blocks))


@notify.command("test")
@click.argument("channel")
@_channels_file_option
def notify_test(channel: str, channels_file: Path | None) -> None:
    """Send one real test notification to CHANNEL and report whether it was delivered.

    Retries once on a retryable failure. Exit code 0 when delivered, 1 otherwise with the
    reason (retryable or permanent); the channel's URL is never printed.
    """
    from pipeline.alerting.config import CONSOLE_CHANNEL
    from pipeline.errors import ConfigError, NotifyError
    from pipeline.notify.tools import send_test

    path = _channels_file(channels_file)
    if path is None and channel != CONSOLE_CHANNEL:
        _fail(
            f"unknown channel {channel!r}: no channels file given, so only the built-in "
            f"{CONSOLE_CHANNEL} channel exists; pass --channels-file or set {CHANNELS_FILE_ENV}"
        )
    try:
        send_test(channel, channels_file=path)
    except ConfigError as exc:
        _fail(str(exc))
    except NotifyError as exc:
        kind = "retryable" if exc.retryable else "permanent"
        _fail(f"not delivered to {channel}: {exc.reason} ({kind})")
    click.echo(f"delivered to {channel}")


# --- silence ----------------------------------------------------------------------------------


@click.group()
def silence() -> None:
    """Create, list and expire silences (kept in the file channels.yaml names).

    A silence stops notifications about alerts matching all its matchers (label=value,
    label!=value, label=~regex, label!~regex over labels plus rule, severity, entity, source,
    stream, metric) while it is active; the worker picks changes up within a second.
    """


def _silences_file(option: Path | None) -> Path:
    from pipeline.errors import ConfigError
    from pipeline.notify.tools import silences_path

    path = _channels_file(option)
    if path is None:
        _fail(
            f"no channels file given; pass --channels-file or set {CHANNELS_FILE_ENV} to a "
            "channels file with 'silences: {file: silences.json}'"
        )
    try:
        return silences_path(path)
    except ConfigError as exc:
        _fail(str(exc))


def _parse_time(option: str, text: str, problems: list[str]) -> int | None:
    """Epoch ms of an ISO 8601 time with a zone, or None with a problem added."""
    try:
        parsed = datetime.fromisoformat(text.strip())
    except ValueError:
        problems.append(f"{option} {text!r} is not an ISO 8601 time; use forms like {_TIME_FORMS}")
        return None
    if parsed.tzinfo is None or parsed.utcoffset() is None:
        problems.append(
            f"{option} {text!r} has no time zone; add Z for UTC or an offset like +02:00"
        )
        return None
    return int(parsed.timestamp() * 1000)


def _interval(
    duration: str | None, until: str | None, starts: str | None, now_ms: int
) -> tuple[int | None, int | None, list[str]]:
    """``(starts_at_ms, ends_at_ms, problems)`` from the time options."""
    from pipeline.rules.duration import parse_duration

    problems: list[str] = []
    starts_at_ms = now_ms if starts is None else _parse_time("--starts", starts, problems)
    length: timedelta | None = None
    ends_at_ms: int | None = None
    if duration is not None and until is not None:
        problems.append("give --duration or --until, not both")
    elif duration is None and until is None:
        problems.append("give --duration (such as 2h) or --until (an ISO 8601 time)")
    elif duration is not None:
        try:
            length = parse_duration(duration.strip())
        except ValueError as exc:
            problems.append(f"--duration {exc}")
    elif until is not None:
        ends_at_ms = _parse_time("--until", until, problems)
    if length is not None and starts_at_ms is not None:
        ends_at_ms = starts_at_ms + int(length.total_seconds() * 1000)
    return starts_at_ms, ends_at_ms, problems


_MATCHER_REQUIRED = "give at least one matcher, such as rule=ev-charger-offline"
_COMMENT_REQUIRED = "a comment is required: say why the alerts are silenced"
_AUTHOR_REQUIRED = "an author is required"
_END_BEFORE_START = "the end must be after the start"
""":func:`~pipeline.alerting.silences.add_silence`'s wording, completed with the option."""


def _argument_problems(matchers: Sequence[str], comment: str, author: str) -> list[str]:
    """What :func:`~pipeline.alerting.silences.add_silence` would also report, for when the
    time options are wrong and it cannot be called: every problem is reported at once."""
    from pipeline.alerting.matchers import MatcherError, parse_matcher

    problems = [] if matchers else [_MATCHER_REQUIRED]
    for text in matchers:
        try:
            parse_matcher(text)
        except MatcherError as exc:
            problems.append(str(exc))
    if not comment.strip():
        problems.append(_COMMENT_REQUIRED)
    if not author.strip():
        problems.append(_AUTHOR_REQUIRED)
    return problems


@silence.command("add")
@click.argument("matchers", nargs=-1, metavar="MATCHER...")
@click.option(
    "--duration", default=None, help="How long it lasts from its start, e.g. 30m, 2h, 1d."
)
@click.option(
    "--until", default=None, help="When it ends, ISO 8601 with a zone, e.g. 2024-05-01T18:00Z."
)
@click.option("--starts", default=None, help="When it starts, ISO 8601 with a zone (default: now).")
@click.option("--comment", default="", help="Why the alerts are silenced (required).")
@click.option("--author", default=None, help="Who silences them (default: $USER).")
@_channels_file_option
def silence_add(
    matchers: tuple[str, ...],
    duration: str | None,
    until: str | None,
    starts: str | None,
    comment: str,
    author: str | None,
    channels_file: Path | None,
) -> None:
    """Silence alerts matching every MATCHER (e.g. rule=hub-power-high entity=~mp-.*).

    Give the length with --duration or the end with --until. Prints the new silence's id on
    standard output (and a summary on standard error).
    """
    from pipeline.alerting.silences import SilenceError, add_silence

    path = _silences_file(channels_file)
    who = author if author is not None else os.environ.get("USER", "")
    now_ms = _now_ms()
    starts_at_ms, ends_at_ms, problems = _interval(duration, until, starts, now_ms)
    hints = {
        _COMMENT_REQUIRED: f"{_COMMENT_REQUIRED} (--comment TEXT)",
        _AUTHOR_REQUIRED: f"{_AUTHOR_REQUIRED}; pass --author NAME"
        + (" ($USER is not set)" if author is None else ""),
    }
    if starts is None:
        hints[_END_BEFORE_START] = f"{_END_BEFORE_START} (now: no --starts given)"
    if problems or starts_at_ms is None or ends_at_ms is None:
        problems += _argument_problems(matchers, comment, who)
        _fail(hints.get(line, line) for line in problems)
    try:
        created = add_silence(
            path,
            list(matchers),
            starts_at_ms=starts_at_ms,
            ends_at_ms=ends_at_ms,
            comment=comment,
            author=who,
            now_ms=now_ms,
        )
    except SilenceError as exc:
        _fail(hints.get(line, line) for line in str(exc).splitlines())
    click.echo(created.id)
    click.echo(
        f"silence {created.state(now_ms)} from {_utc(created.starts_at_ms)} "
        f"until {_utc(created.ends_at_ms)}: {', '.join(created.matchers)}",
        err=True,
    )


def _short_ids(ids: Iterable[str]) -> dict[str, str]:
    """Each id's shortest prefix of at least :data:`SHORT_ID_LENGTH` characters that no
    other id shares (what ``silence expire`` accepts)."""

    def common(a: str, b: str) -> int:
        n = 0
        while n < min(len(a), len(b)) and a[n] == b[n]:
            n += 1
        return n

    ordered = sorted(set(ids))
    out = {}
    for i, current in enumerate(ordered):
        length = SHORT_ID_LENGTH
        for j in (i - 1, i + 1):
            if 0 <= j < len(ordered):
                length = max(length, common(current, ordered[j]) + 1)
        out[current] = current[:length]
    return out


def _as_json(item: Silence, state: str) -> dict[str, Any]:
    return {
        "id": item.id,
        "state": state,
        "matchers": list(item.matchers),
        "starts_at": _utc(item.starts_at_ms),
        "ends_at": _utc(item.ends_at_ms),
        "starts_at_ms": item.starts_at_ms,
        "ends_at_ms": item.ends_at_ms,
        "author": item.author,
        "comment": item.comment,
        "created_at_ms": item.created_at_ms,
        "updated_at_ms": item.updated_at_ms,
    }


def _table(rows: list[list[str]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in rows
    )


@silence.command("list")
@click.option("--all", "include_expired", is_flag=True, help="Include expired silences.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array instead of a table.")
@_channels_file_option
def silence_list(include_expired: bool, as_json: bool, channels_file: Path | None) -> None:
    """List active and pending silences (with --all, expired ones too), oldest start first.

    The table shows the shortest unique id prefix (what `silence expire` accepts); --json
    gives full ids and times both as UTC ISO 8601 and epoch ms.
    """
    from pipeline.alerting.silences import SilenceError, list_silences

    path = _silences_file(channels_file)
    try:
        listed = list_silences(path, now_ms=_now_ms(), include_expired=True)
    except SilenceError as exc:
        _fail(str(exc))
    short = _short_ids(item.id for item, _state in listed)
    shown = [(item, state) for item, state in listed if include_expired or state != "expired"]
    if as_json:
        click.echo(json.dumps([_as_json(item, state) for item, state in shown], indent=2))
        return
    if not shown:
        click.echo("no silences" if include_expired else "no active or pending silences")
        return
    rows = [["ID", "STATE", "MATCHERS", "STARTS", "ENDS", "AUTHOR", "COMMENT"]]
    rows += [
        [
            short[item.id],
            state,
            ", ".join(item.matchers),
            _utc(item.starts_at_ms),
            _utc(item.ends_at_ms),
            _one_line(item.author),
            _one_line(item.comment),
        ]
        for item, state in shown
    ]
    click.echo(_table(rows))


@silence.command("expire")
@click.argument("silence_id", metavar="ID_OR_PREFIX")
@_channels_file_option
def silence_expire(silence_id: str, channels_file: Path | None) -> None:
    """End a silence now (an unstarted one never starts); give its id or a unique prefix of
    at least 4 characters."""
    from pipeline.alerting.silences import SilenceError, expire_silence

    path = _silences_file(channels_file)
    try:
        expired = expire_silence(path, silence_id, now_ms=_now_ms())
    except SilenceError as exc:
        _fail(str(exc))
    click.echo(f"expired silence {expired.id}")
