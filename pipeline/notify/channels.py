"""Named notification channels and where their (secret) apprise URLs come from.

Rules name channels; a channel's URL carries tokens and passwords, so it is never written in a
rule file, never logged and never put in an error. It comes from an environment variable or a
secret file named in ``channels.yaml``::

    channels:
      ops-email:
        url_env: STREAMWARDEN_CHANNEL_OPS_EMAIL      # an apprise URL, e.g. mailtos://...
      team-slack:
        url_file: /run/secrets/team_slack_url

The built-in ``console`` channel (``console://``) prints to the worker's standard output.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import apprise
import yaml
from pydantic import BaseModel, ConfigDict, ValidationError, model_validator

from pipeline.errors import ConfigError
from pipeline.notify import console
from producers.redact import SecretFilter, install_secret_filter

CONSOLE_CHANNEL = "console"

# apprise and urllib3 log the URLs they call at DEBUG (a Slack webhook path *is* its token).
_LIBRARY_LOGGERS = ("apprise", "urllib3", "urllib3.connectionpool")
_library_filter = SecretFilter(redact_credentials=True)


def url_secrets(url: str) -> list[str]:
    """The parts of an apprise URL that may be credentials: the URL itself, its password, and
    every path segment and query value (webhook tokens, bot tokens, chat ids)."""
    from urllib.parse import parse_qsl, urlsplit

    parts = urlsplit(url)
    pieces = [url, parts.password or ""]
    pieces += [segment for segment in parts.path.split("/") if segment]
    pieces += [value for _key, value in parse_qsl(parts.query)]
    host = parts.netloc.rsplit("@", 1)[-1]
    if "." not in host:
        # apprise URLs put tokens where a host would be (tgram://BOTTOKEN/CHAT).
        pieces.append(host)
    return [p for p in pieces if p and p != "localhost" and not p.replace(".", "").isdigit()]


def guard_logs(urls: list[str]) -> None:
    """Mask these channel URLs' secrets in library loggers and in every root handler."""
    secrets = [s for url in urls for s in url_secrets(url)]
    _library_filter.add(secrets)
    for name in _LIBRARY_LOGGERS:
        library_logger = logging.getLogger(name)
        if _library_filter not in library_logger.filters:
            library_logger.addFilter(_library_filter)
    install_secret_filter(secrets)


class ChannelSpec(BaseModel):
    """One channel entry of ``channels.yaml``: exactly one of ``url_env`` or ``url_file``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    url_env: str | None = None
    url_file: Path | None = None

    @model_validator(mode="after")
    def _one_source(self) -> ChannelSpec:
        if (self.url_env is None) == (self.url_file is None):
            raise ValueError("set exactly one of url_env (a variable name) or url_file (a path)")
        return self


class ChannelsFile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    channels: dict[str, ChannelSpec]


@dataclass(frozen=True)
class Channel:
    """A loaded channel. ``url`` is secret: use :attr:`name` in every message."""

    name: str
    url: str = field(repr=False)
    apprise: apprise.Apprise = field(repr=False, compare=False)


def _load_apprise(name: str, url: str) -> apprise.Apprise:
    console.register()
    target = apprise.Apprise()
    if not target.add(url):
        raise ConfigError(
            f"channel {name!r}: apprise cannot load its URL (unknown scheme or malformed); "
            "check the URL held by its variable or file (the URL itself is not shown: it may "
            "carry a token)"
        )
    return target


def _resolve_url(name: str, spec: ChannelSpec, env: Mapping[str, str]) -> str:
    if spec.url_env is not None:
        value = env.get(spec.url_env, "").strip()
        if not value:
            raise ConfigError(
                f"channel {name!r}: environment variable {spec.url_env} is not set; "
                "set it to the channel's apprise URL"
            )
        return value
    assert spec.url_file is not None
    try:
        value = spec.url_file.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ConfigError(
            f"channel {name!r}: cannot read url_file {spec.url_file}: {exc.strerror}"
        ) from None
    if not value:
        raise ConfigError(f"channel {name!r}: url_file {spec.url_file} is empty")
    return value


def _parse_channels_file(path: Path) -> ChannelsFile:
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read channels file: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f":{mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{path}{line}: not valid YAML") from None
    try:
        return ChannelsFile.model_validate(raw)
    except ValidationError as exc:
        lines = [
            f"{path}: {'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in exc.errors()
        ]
        raise ConfigError("\n".join(lines)) from None


def channel_names(path: Path | None) -> set[str]:
    """Names of the channels a rule may use, without resolving any secret URL."""
    names = {CONSOLE_CHANNEL}
    if path is not None:
        names |= set(_parse_channels_file(path).channels)
    return names


def load_channels(path: Path | None, env: Mapping[str, str] | None = None) -> dict[str, Channel]:
    """Load the channels file (or only the built-in console channel when ``path`` is None).

    Raises:
        ConfigError: every problem found, one per line, naming the channel and the variable.
    """
    env = os.environ if env is None else env
    channels = {
        CONSOLE_CHANNEL: Channel(
            CONSOLE_CHANNEL, "console://", _load_apprise(CONSOLE_CHANNEL, "console://")
        )
    }
    if path is None:
        return channels
    parsed = _parse_channels_file(path)
    problems: list[str] = []
    for name, spec in parsed.channels.items():
        if name == CONSOLE_CHANNEL:
            problems.append(f"{path}: channel {name!r} is built in; choose another name")
            continue
        try:
            url = _resolve_url(name, spec, env)
            guard_logs([url])  # before apprise parses it: its parser logs too
            channels[name] = Channel(name, url, _load_apprise(name, url))
        except ConfigError as exc:
            problems.append(f"{path}: {exc}")
    if problems:
        raise ConfigError("\n".join(problems))
    guard_logs([c.url for c in channels.values()])
    return channels
