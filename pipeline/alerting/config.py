"""``channels.yaml``: channels, routing, grouping, mute windows, inhibition, silences.

Everything is optional except ``channels`` entries' URL source::

    channels:
      ops-email:
        url_env: STREAMWARDEN_CHANNEL_OPS_EMAIL    # or url_file: /run/secrets/ops_email_url
        format: html                  # text | markdown | html (default: from the URL scheme)
        send_resolved: true           # resolve notifications (default true)
        rate_limit: {max: 20, per: 1h}
        templates:                    # Jinja2 overrides (sandboxed); body_file is relative
          title: "{{ alert.rule }} {{ alert.state }}"   # to this file
          body_file: templates/ops-email.html.j2
      team-slack:
        url_env: STREAMWARDEN_CHANNEL_TEAM_SLACK
      lab-hook:
        url_env: STREAMWARDEN_CHANNEL_LAB_HOOK   # a URL with verify=no (TLS checks off) is
        tls_insecure_acknowledged: true          # refused unless acknowledged here; logged

    defaults:                         # timing of channels named only by rules
      group_by: [fingerprint]         # labels; fingerprint = one group per alert
      group_wait: 0s
      group_interval: 1m
      repeat_interval: 4h
      mute_windows: []

    routes:                           # top to bottom; the first match stops unless continue
      - name: critical-to-slack
        match: ["severity=critical", "team=~energy|grid"]
        channels: [team-slack]
        group_by: [rule]              # timing keys override defaults for this route
        group_wait: 30s
        continue: true
      - match: ["severity=~warning|critical"]
        channels: [ops-email]
        mute_windows: [nights]

    mute_windows:
      nights:
        time_zone: Europe/Zurich
        days: [mon-fri]               # mon..sun, ranges; default every day
        hours: ["22:00-06:00"]        # HH:MM-HH:MM; default all day

    inhibit_rules:                    # a firing source alert mutes matching target alerts
      - source: ["severity=critical"]
        target: ["severity=warning"]
        equal: [entity]               # ... that have the same values of these labels

    silences:
      file: silences.json             # relative to this file; written by `silence add`

    watchdog:                         # always-firing heartbeat for a dead-man's switch
      channel: deadman
      interval: 1m

Matchers are ``label=value``, ``label!=value``, ``label=~regex``, ``label!~regex`` over an
alert's labels plus ``rule, severity, entity, source, stream, metric`` (see
:mod:`pipeline.alerting.matchers`).

Routing precedence (who gets an alert, and with which timing):

1. The channels the rule names (``channels:`` in the rule file) always get the alert: what
   a rule author asked for is never dropped by routing.
2. Routes add channels: they are tried top to bottom; every route whose matchers all match
   adds its channels; the first matching route stops the walk unless it says
   ``continue: true``.
3. Each channel gets an alert once. Its timing (``group_by``, ``group_wait``,
   ``group_interval``, ``repeat_interval``, ``mute_windows``) comes from the first matching
   route that names it, else from ``defaults``. Per-channel settings (``format``,
   ``send_resolved``, ``rate_limit``, ``templates``) come from the channel.

Validation follows the rule loader (:mod:`pipeline.rules.loader`, whose YAML reader and
error wording this module reuses): strict YAML, unknown keys rejected, and every problem of
the file reported at once, one line each, ``channels.yaml:12: routes[0].group_wait: '5
minutes' is not a duration; ...``; a second pass checks names (channels, mute windows) and
compiles and test-renders templates.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Mapping
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError
from pydantic import model_validator as _model_validator
from pydantic_core import PydanticCustomError
from yaml.nodes import MappingNode, ScalarNode

from pipeline.alerting.matchers import Matcher, MatcherError, parse_matcher
from pipeline.alerting.mute import MuteWindow, parse_days, parse_hours
from pipeline.alerting.templates import Format, TemplateCheckError, check_template
from pipeline.errors import ConfigError, RuleProblem
from pipeline.rules.duration import Duration
from pipeline.rules.loader import (  # the rule loader's line-aware YAML reader and wording
    MAX_FILE_BYTES,
    DataPath,
    _describe,
    _FileReader,
    _quote,
    _resolve,
    _reword,
    format_path,
)
from pipeline.settings import PipelineSettings
from producers.strict_yaml import StrictYAMLError, read_limited

__all__ = [
    "BUILTIN_CHANNELS",
    "CONSOLE_CHANNEL",
    "AlertingConfig",
    "ChannelSettings",
    "ChannelSpec",
    "ChannelsFile",
    "InhibitRule",
    "Route",
    "Timing",
    "load_config",
]

CONSOLE_CHANNEL = "console"
BUILTIN_CHANNELS = frozenset({CONSOLE_CHANNEL})

_LABEL_NAME = r"^[A-Za-z_][A-Za-z0-9_.\-]*$"
_CHANNEL_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$"


def _custom(kind: str, message: str) -> PydanticCustomError:
    return PydanticCustomError(f"sw_{kind}", "{message}", {"message": message})


def _check_matcher(text: str) -> str:
    try:
        parse_matcher(text)
    except MatcherError as exc:
        raise _custom("matcher", str(exc)) from None
    return text


def _check_zone(name: str) -> str:
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise _custom(
            "time_zone", f"{name!r} is not an IANA time zone; use names like Europe/Zurich, UTC"
        ) from None
    return name


def _check_day(text: str) -> str:
    try:
        parse_days([text])
    except ValueError as exc:
        raise _custom("day", f"{exc}; ranges like mon-fri are allowed") from None
    return text


def _check_hours(text: str) -> str:
    try:
        parse_hours(text)
    except ValueError as exc:
        raise _custom("hours", str(exc)) from None
    return text


MatcherText = Annotated[str, Field(min_length=1, max_length=512), AfterValidator(_check_matcher)]
LabelName = Annotated[str, Field(pattern=_LABEL_NAME, max_length=128)]
ChannelName = Annotated[str, Field(pattern=_CHANNEL_NAME, max_length=128)]
Day = Annotated[str, AfterValidator(_check_day)]
Hours = Annotated[str, AfterValidator(_check_hours)]
Zone = Annotated[str, AfterValidator(_check_zone)]
TemplateSource = Annotated[str, Field(min_length=1, max_length=20_000)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class RateLimitSpec(_Model):
    """At most ``max`` notifications per ``per`` (fixed windows); the rest are summed up."""

    max: int = Field(ge=1, le=1_000_000)
    per: Duration

    @_model_validator(mode="after")
    def _positive(self) -> RateLimitSpec:
        if self.per < timedelta(seconds=1):
            raise _custom("rate_per", "per must be at least 1s")
        return self


class TemplatesSpec(_Model):
    """Template overrides; ``body`` and ``body_file`` exclude each other."""

    title: TemplateSource | None = None
    body: TemplateSource | None = None
    body_file: str | None = None

    @_model_validator(mode="after")
    def _one_body(self) -> TemplatesSpec:
        if self.body is not None and self.body_file is not None:
            raise _custom("body_source", "set body or body_file, not both")
        return self


class ChannelSpec(_Model):
    """One channel: exactly one of ``url_env`` or ``url_file``, plus delivery settings.

    ``tls_insecure_acknowledged`` allows a URL that turns apprise's TLS certificate checks off
    (``verify=no``); without it such a URL is refused when channels are loaded.
    """

    url_env: Annotated[str, Field(min_length=1, max_length=256)] | None = None
    url_file: Annotated[str, Field(min_length=1, max_length=4096)] | None = None
    format: Literal["text", "markdown", "html"] | None = None
    send_resolved: bool = True
    rate_limit: RateLimitSpec | None = None
    templates: TemplatesSpec | None = None
    tls_insecure_acknowledged: bool = False

    @_model_validator(mode="after")
    def _one_source(self) -> ChannelSpec:
        if (self.url_env is None) == (self.url_file is None):
            raise _custom(
                "channel_source",
                "set exactly one of url_env (a variable name) or url_file (a path)",
            )
        return self


class DefaultsSpec(_Model):
    """Timing for channels that no matching route names."""

    group_by: list[LabelName] = Field(default_factory=lambda: ["fingerprint"], min_length=1)
    group_wait: Duration = timedelta(0)
    group_interval: Duration = timedelta(minutes=1)
    repeat_interval: Duration = timedelta(hours=4)
    mute_windows: list[str] = Field(default_factory=list)


class RouteSpec(_Model):
    """One route; timing keys left out come from ``defaults``."""

    name: Annotated[str, Field(min_length=1, max_length=128)] | None = None
    match: list[MatcherText] = Field(default_factory=list)
    channels: list[str] = Field(min_length=1)
    continue_: bool = Field(default=False, alias="continue")
    group_by: list[LabelName] | None = Field(default=None, min_length=1)
    group_wait: Duration | None = None
    group_interval: Duration | None = None
    repeat_interval: Duration | None = None
    mute_windows: list[str] | None = None


class MuteWindowSpec(_Model):
    """A recurring mute window (see :mod:`pipeline.alerting.mute`)."""

    time_zone: Zone
    days: list[Day] = Field(default_factory=list)
    hours: list[Hours] = Field(default_factory=list)


class InhibitSpec(_Model):
    """A firing alert matching ``source`` mutes alerts matching ``target`` that have the same
    values of the ``equal`` labels."""

    source: list[MatcherText] = Field(min_length=1)
    target: list[MatcherText] = Field(min_length=1)
    equal: list[LabelName] = Field(default_factory=list)


class SilencesSpec(_Model):
    """Where silences are kept (a JSON file, relative to channels.yaml)."""

    file: Annotated[str, Field(min_length=1, max_length=4096)]


class WatchdogSpec(_Model):
    """An always-firing heartbeat sent to ``channel`` every ``interval`` (Prometheus'
    Watchdog): an external dead-man's switch raises the alarm when it stops arriving."""

    channel: ChannelName
    interval: Duration = timedelta(minutes=1)


class ChannelsFile(_Model):
    """The whole file."""

    channels: dict[ChannelName, ChannelSpec] = Field(default_factory=dict)
    defaults: DefaultsSpec = Field(default_factory=DefaultsSpec)
    routes: list[RouteSpec] = Field(default_factory=list)
    mute_windows: dict[ChannelName, MuteWindowSpec] = Field(default_factory=dict)
    inhibit_rules: list[InhibitSpec] = Field(default_factory=list)
    silences: SilencesSpec | None = None
    watchdog: WatchdogSpec | None = None


# --- compiled configuration -------------------------------------------------------------------


def _ms(value: timedelta) -> int:
    return int(value.total_seconds() * 1000)


@dataclasses.dataclass(frozen=True)
class Timing:
    """Grouping and repeat timing, in ms."""

    group_by: tuple[str, ...] = ("fingerprint",)
    group_wait_ms: int = 0
    group_interval_ms: int = 60_000
    repeat_interval_ms: int = 4 * 3_600_000
    mute_windows: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True)
class Route:
    """A compiled route. ``name`` defaults to ``routes[<index>]``."""

    name: str
    matchers: tuple[Matcher, ...]
    channels: tuple[str, ...]
    continue_: bool
    timing: Timing


@dataclasses.dataclass(frozen=True)
class InhibitRule:
    """A compiled inhibit rule; ``index`` is its position (used in state keys)."""

    index: int
    source: tuple[Matcher, ...]
    target: tuple[Matcher, ...]
    equal: tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class ChannelSettings:
    """A channel's delivery settings (no URL: that is resolved by ``load_channels``).

    Attributes:
        format: explicit format, or None to derive it from the URL scheme.
        rate_limit: ``(max, per_ms)`` or None.
        title_template, body_template: override sources, or None.
    """

    name: str
    format: Format | None = None
    send_resolved: bool = True
    rate_limit: tuple[int, int] | None = None
    title_template: str | None = None
    body_template: str | None = None


@dataclasses.dataclass(frozen=True)
class AlertingConfig:
    """Everything in ``channels.yaml`` except secrets, validated.

    Attributes:
        path: the file, or None for the built-in configuration (console only).
        spec: the parsed file (URL sources are read from here by ``load_channels``).
        channels: settings by channel name, ``console`` included.
        lines: line of each channel entry (for messages about a channel).
    """

    path: Path | None
    spec: ChannelsFile
    channels: dict[str, ChannelSettings]
    defaults: Timing
    routes: tuple[Route, ...]
    inhibit_rules: tuple[InhibitRule, ...]
    mute_windows: dict[str, MuteWindow]
    silences_file: Path | None
    lines: dict[str, int] = dataclasses.field(default_factory=dict)

    @classmethod
    def builtin(cls) -> AlertingConfig:
        """Only the console channel, default timing, no routes."""
        return _compile(None, ChannelsFile(), {}, {})

    def channel(self, name: str) -> ChannelSettings:
        """Settings of ``name`` (defaults for a channel the file does not list)."""
        return self.channels.get(name) or ChannelSettings(name)


def _timing(route: RouteSpec | None, defaults: DefaultsSpec) -> Timing:
    def pick(value: Any, fallback: Any) -> Any:
        return fallback if value is None else value

    return Timing(
        group_by=tuple(pick(route and route.group_by, defaults.group_by)),
        group_wait_ms=_ms(pick(route and route.group_wait, defaults.group_wait)),
        group_interval_ms=_ms(pick(route and route.group_interval, defaults.group_interval)),
        repeat_interval_ms=_ms(pick(route and route.repeat_interval, defaults.repeat_interval)),
        mute_windows=tuple(pick(route and route.mute_windows, defaults.mute_windows)),
    )


def _compile(
    path: Path | None,
    spec: ChannelsFile,
    bodies: Mapping[str, str],
    lines: Mapping[str, int],
) -> AlertingConfig:
    channels = {CONSOLE_CHANNEL: ChannelSettings(CONSOLE_CHANNEL, format="text")}
    for name, channel in spec.channels.items():
        templates = channel.templates
        rate = channel.rate_limit
        channels[name] = ChannelSettings(
            name=name,
            format=channel.format,
            send_resolved=channel.send_resolved,
            rate_limit=(rate.max, _ms(rate.per)) if rate is not None else None,
            title_template=templates.title if templates is not None else None,
            body_template=bodies.get(name) or (templates.body if templates is not None else None),
        )
    routes = tuple(
        Route(
            name=route.name or f"routes[{i}]",
            matchers=tuple(parse_matcher(m) for m in route.match),
            channels=tuple(dict.fromkeys(route.channels)),
            continue_=route.continue_,
            timing=_timing(route, spec.defaults),
        )
        for i, route in enumerate(spec.routes)
    )
    inhibit = tuple(
        InhibitRule(
            index=i,
            source=tuple(parse_matcher(m) for m in rule.source),
            target=tuple(parse_matcher(m) for m in rule.target),
            equal=tuple(rule.equal),
        )
        for i, rule in enumerate(spec.inhibit_rules)
    )
    windows = {
        name: MuteWindow.build(name, window.time_zone, window.days, window.hours)
        for name, window in spec.mute_windows.items()
    }
    silences = None
    if spec.silences is not None:
        silences = Path(spec.silences.file)
        if not silences.is_absolute() and path is not None:
            silences = path.parent / silences
    return AlertingConfig(
        path=path,
        spec=spec,
        channels=channels,
        defaults=_timing(None, spec.defaults),
        routes=routes,
        inhibit_rules=inhibit,
        mute_windows=windows,
        silences_file=silences,
        lines=dict(lines),
    )


# --- loading ------------------------------------------------------------------------------------


_NAME_HINTS = {
    "label": "use letters, digits, '_', '.' and '-', starting with a letter or '_'",
    "channel": "use letters, digits, '_', '.' and '-', starting with a letter or digit",
}


def _message(error: Any, resolved: Any, reader: _FileReader) -> tuple[DataPath, int, str]:
    """``(key path, line, message)`` of one pydantic error: this file's own checks are worded
    here, everything else as the rule loader words it."""
    kind = str(error["type"])
    path: DataPath = resolved.path
    line = reader.where(path).line
    if kind.startswith("sw_"):
        return path, line, str(error["msg"])
    at = reader.index.get(path)
    what = _describe(at.node if at is not None else None, error.get("input"))
    ctx: dict[str, Any] = error.get("ctx") or {}
    if kind in ("bool_type", "bool_parsing"):
        return path, line, f"{what} is not true or false; write true or false"
    if kind == "greater_than_equal":
        return path, line, f"{what} is too small; use at least {ctx.get('ge')}"
    if kind == "less_than_equal":
        return path, line, f"{what} is too large; use at most {ctx.get('le')}"
    if kind == "string_pattern_mismatch":
        noun = "channel" if ctx.get("pattern") == _CHANNEL_NAME else "label"
        if path and path[-1] == "[key]":
            path = path[:-1]
            line = reader.where(path).line
            what = _quote(str(path[-1]))
        return path, line, f"{what} is not a {noun} name; {_NAME_HINTS[noun]}"
    return _reword(error, resolved, reader)


def _validate(reader: _FileReader, data: Any) -> ChannelsFile | None:
    try:
        return ChannelsFile.model_validate(data)
    except ValidationError as exc:
        for error in exc.errors(include_url=False):
            resolved = _resolve(ChannelsFile, error["loc"])
            if reader.is_suppressed(resolved.path):
                continue
            key_path, line, message = _message(error, resolved, reader)
            reader.problem(line, key_path, message)
        return None


def _strings(value: Any) -> list[tuple[int, str]]:
    """``(index, text)`` of the text items of a list (raw data may hold anything)."""
    return (
        [(i, v) for i, v in enumerate(value) if isinstance(v, str)]
        if isinstance(value, list)
        else []
    )


def _mapping(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _cross_check(
    reader: _FileReader, data: dict[str, Any], base: Path | None, bodies: dict[str, str]
) -> None:
    """Checks across keys, run on the raw data so they report even when other keys are
    invalid: built-in channel names, unknown channels and mute windows, templates."""
    channels = _mapping(data.get("channels"))
    windows = set(_mapping(data.get("mute_windows")))
    known = BUILTIN_CHANNELS | set(channels)

    def at(path: DataPath) -> int:
        return reader.where(path).line

    for name in channels:
        if name in BUILTIN_CHANNELS:
            reader.problem(
                at(("channels", name)),
                ("channels", name),
                f"the {name} channel is built in; choose another name",
            )
    silences = _mapping(data.get("silences")).get("file")
    if isinstance(silences, str) and silences:
        _check_silences_file(reader, ("silences", "file"), silences, base)
    routes = data.get("routes")
    for i, route in enumerate(routes if isinstance(routes, list) else []):
        route = _mapping(route)
        for j, channel in _strings(route.get("channels")):
            if channel not in known:
                path: DataPath = ("routes", i, "channels", j)
                reader.problem(
                    at(path),
                    path,
                    f"unknown channel {_quote(channel)}; known channels are "
                    + ", ".join(sorted(known)),
                )
        for j, window in _strings(route.get("mute_windows")):
            if window not in windows:
                path = ("routes", i, "mute_windows", j)
                reader.problem(at(path), path, _unknown_window(window, windows))
    watchdog = _mapping(data.get("watchdog")).get("channel")
    if isinstance(watchdog, str) and watchdog not in known:
        reader.problem(
            at(("watchdog", "channel")),
            ("watchdog", "channel"),
            f"unknown channel {_quote(watchdog)}; known channels are " + ", ".join(sorted(known)),
        )
    for j, window in _strings(_mapping(data.get("defaults")).get("mute_windows")):
        if window not in windows:
            path = ("defaults", "mute_windows", j)
            reader.problem(at(path), path, _unknown_window(window, windows))
    for name, raw_channel in channels.items():
        entry = _mapping(raw_channel)
        templates = _mapping(entry.get("templates"))
        fmt = entry.get("format")
        body_format: Format = fmt if fmt in ("text", "markdown", "html") else "text"
        prefix: DataPath = ("channels", name, "templates")
        if isinstance(templates.get("title"), str):
            _check(reader, (*prefix, "title"), templates["title"], "text")
        if isinstance(templates.get("body"), str):
            _check(reader, (*prefix, "body"), templates["body"], body_format)
        if isinstance(templates.get("body_file"), str):
            path = (*prefix, "body_file")
            source = _read_body_file(reader, path, templates["body_file"], base)
            if source is not None and _check(reader, path, source, body_format):
                bodies[name] = source


def _unknown_window(name: str, known: set[str]) -> str:
    listed = ", ".join(sorted(known)) if known else "(none defined under mute_windows)"
    return f"unknown mute window '{name}'; known mute windows are {listed}"


def _check(reader: _FileReader, path: DataPath, source: str, fmt: Format) -> bool:
    try:
        check_template(source, fmt)
    except TemplateCheckError as exc:
        reader.problem(reader.where(path).line, path, f"{exc}; fix the template")
        return False
    return True


def _check_silences_file(reader: _FileReader, path: DataPath, name: str, base: Path | None) -> None:
    """``silences.file`` must stay under the channels file's folder or the worker's data
    directory (``STREAMWARDEN_DATA_DIR``, where a deployment keeps what it writes, e.g. a
    volume beside a read-only channels file) and be a regular file if it exists: the worker
    and ``silence add`` write it (as root, ``/dev/null`` or ``/etc/...`` would be overwritten
    or make silences vanish)."""
    folder = (base or Path.cwd()).resolve()
    default_dir: Path = PipelineSettings.model_fields["data_dir"].default
    data_dir = Path(os.environ.get("STREAMWARDEN_DATA_DIR") or default_dir).resolve()
    file = Path(name)
    if not file.is_absolute():
        file = folder / file
    resolved = file.resolve()
    if not (resolved.is_relative_to(folder) or resolved.is_relative_to(data_dir)):
        reader.problem(
            reader.where(path).line,
            path,
            f"{name!r} is outside the channels file's folder {folder} and the data directory "
            f"{data_dir} (STREAMWARDEN_DATA_DIR); keep the silences file in one of them",
        )
    elif resolved.exists() and not resolved.is_file():
        reader.problem(
            reader.where(path).line, path, f"{name!r} is not a regular file; name a JSON file"
        )


def _read_body_file(
    reader: _FileReader, path: DataPath, name: str, base: Path | None
) -> str | None:
    """The text of a ``body_file``: a regular file under the channels file's folder, at most
    :data:`MAX_BODY_FILE_BYTES` bytes. Anything else is refused without being read, so a
    channel cannot pull ``/proc/self/environ`` (secrets) or ``/dev/zero`` into a message."""
    folder = (base or Path.cwd()).resolve()
    file = Path(name)
    if not file.is_absolute():
        file = folder / file
    line = reader.where(path).line
    try:
        resolved = file.resolve(strict=True)
    except (OSError, RuntimeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else "not found"
        reader.problem(line, path, f"cannot read {file}: {reason}")
        return None
    if not resolved.is_relative_to(folder):
        reader.problem(
            line,
            path,
            f"{name!r} is outside the channels file's folder {folder}; keep templates next "
            "to channels.yaml",
        )
        return None
    if not resolved.is_file():
        reader.problem(line, path, f"{name!r} is not a regular file; point it at a template")
        return None
    try:
        return read_limited(resolved, MAX_BODY_FILE_BYTES).decode("utf-8")
    except StrictYAMLError:
        reader.problem(line, path, f"{name!r} is larger than {MAX_BODY_FILE_BYTES} bytes")
        return None
    except (OSError, UnicodeDecodeError) as exc:
        reason = (exc.strerror or "error") if isinstance(exc, OSError) else "not UTF-8 text"
        reader.problem(line, path, f"cannot read {file}: {reason}")
        return None


MAX_BODY_FILE_BYTES = 256_000
"""Largest ``templates.body_file``."""


def _channel_lines(reader: _FileReader, spec: ChannelsFile) -> dict[str, int]:
    return {name: reader.where(("channels", name)).line for name in spec.channels}


def load_config(path: Path | None) -> AlertingConfig:
    """Read and validate ``channels.yaml`` (no secret is read: URLs stay where they are).

    Args:
        path: the file, or None for the built-in configuration (console only).

    Raises:
        ConfigError: every problem of the file, one per line, ``<file>:<line>: <key>:
            <what is wrong; what to write>``.
    """
    if path is None:
        return AlertingConfig.builtin()
    display = str(path)
    problems: list[RuleProblem] = []
    try:
        raw = read_limited(path, MAX_FILE_BYTES)  # never reads more than the limit
    except OSError as exc:
        raise ConfigError(f"{display}: cannot read channels file: {exc.strerror}") from None
    except StrictYAMLError:
        raise ConfigError(f"{display}: file is larger than {MAX_FILE_BYTES} bytes") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise ConfigError(f"{display}:{line}: not UTF-8 text; save the file as UTF-8") from None
    reader = _FileReader(display, problems)
    root = reader.compose(text)
    spec: ChannelsFile | None = None
    data: Any = None
    if root is None or (isinstance(root, ScalarNode) and not root.value):
        if not problems:
            spec = ChannelsFile()  # an empty file: console only
    elif not isinstance(root, MappingNode):
        reader.problem(root.start_mark.line + 1, (), "expected a mapping with a 'channels' key")
    else:
        ok, data = reader.build(root, (), root.start_mark.line + 1)
        if ok:
            spec = _validate(reader, data)
    bodies: dict[str, str] = {}
    if isinstance(data, dict):
        _cross_check(reader, data, path.parent, bodies)
    if problems or spec is None:
        problems.sort(key=lambda p: p.line)
        raise ConfigError("\n".join(str(p) for p in problems))
    return _compile(path, spec, bodies, _channel_lines(reader, spec))


def key_of(*path: str | int) -> str:
    """``key_of("channels", "a", "url_env")`` -> ``channels.a.url_env`` (message keys)."""
    return format_path(path)


_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]*)://")

FORMAT_BY_SCHEME: dict[str, Format] = {
    "mailto": "html",
    "mailtos": "html",
    "slack": "markdown",
    "tgram": "markdown",
    "discord": "markdown",
    "mmost": "markdown",
    "mmosts": "markdown",
    "rocket": "markdown",
    "rockets": "markdown",
    "matrix": "markdown",
    "matrixs": "markdown",
}
"""Default body format by apprise URL scheme; anything else is ``text``."""


def format_for_url(url: str) -> Format:
    """The default body format for an apprise URL (only its scheme is looked at)."""
    match = _SCHEME.match(url)
    return FORMAT_BY_SCHEME.get(match.group(1).lower(), "text") if match else "text"
