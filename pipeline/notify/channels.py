"""Named notification channels and where their (secret) apprise URLs come from.

Rules name channels; a channel's URL carries tokens and passwords, so it is never written in a
rule file, never logged and never put in an error. It comes from an environment variable or a
secret file named in ``channels.yaml``::

    channels:
      ops-email:
        url_env: STREAMWARDEN_CHANNEL_OPS_EMAIL      # an apprise URL, e.g. mailtos://...
        format: html                                  # optional; default from the scheme
      team-slack:
        url_file: /run/secrets/team_slack_url

The rest of the file (routes, grouping, mute windows, inhibition, silences, templates) is
described and validated in :mod:`pipeline.alerting.config`.

The built-in ``console`` channel (``console://``) prints to the worker's standard output.

TLS: apprise verifies certificates unless a URL says ``verify=no`` (or ``false``, ``0``...).
Such a URL is refused at load time unless its channel entry says
``tls_insecure_acknowledged: true``; then every load logs a WARNING naming the channel. A URL
using the clear-text variant of a service that has a TLS one (``mailto://``, ``json://``,
``ntfy://``... to another host) loads with a WARNING too (:func:`clear_text_schemes`).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import apprise

from pipeline.alerting.config import (
    CONSOLE_CHANNEL,
    AlertingConfig,
    ChannelSettings,
    ChannelsFile,
    ChannelSpec,
    format_for_url,
    load_config,
)
from pipeline.alerting.templates import ChannelTemplates, Format
from pipeline.errors import ConfigError
from pipeline.notify import console
from producers.redact import CREDENTIAL_PARAMS, SecretFilter, basic_auth, install_secret_filter

__all__ = [
    "CONSOLE_CHANNEL",
    "Channel",
    "ChannelSpec",
    "ChannelsFile",
    "channel_names",
    "channel_templates",
    "guard_logs",
    "load_channels",
    "load_channels_from",
    "resolve_url",
    "url_secrets",
    "verifies_tls",
]

logger = logging.getLogger(__name__)

# apprise and urllib3 log the URLs they call at DEBUG (a Slack webhook path *is* its token).
_LIBRARY_LOGGERS = ("apprise", "urllib3", "urllib3.connectionpool")
_library_filter = SecretFilter(redact_credentials=True)


def _token_like(piece: str) -> bool:
    """Whether a URL piece looks like a credential: long, or mixing in digits. Ordinary words
    (``hooks``, ``services``, ``lab-hook``) are not: masking them would mangle every log line
    that names a host or channel (``hooks.slack.com`` -> ``***s.slack.com``)."""
    if len(piece) >= 16:
        return True
    return len(piece) >= 6 and any(c.isdigit() for c in piece) and not piece.isdigit()


def url_secrets(url: str) -> list[str]:
    """The parts of an apprise URL that are credentials: the URL itself, its password (and
    the ``Authorization: Basic`` form of user and password), the values of credential query
    parameters, and token-like path segments, query values and token-in-host parts (webhook
    tokens, bot tokens). :class:`~producers.redact.SecretFilter` masks each in every
    spelling (percent-encoded or decoded, JSON-escaped)."""
    from urllib.parse import parse_qsl, unquote, urlsplit

    parts = urlsplit(url)
    pieces = [url]
    if parts.password:
        pieces.append(parts.password)
        user = unquote(parts.username or "")
        password = unquote(parts.password)
        pieces += [basic_auth(user, password), basic_auth(parts.username or "", parts.password)]
    candidates = [segment for segment in parts.path.split("/") if segment]
    for key, value in parse_qsl(parts.query):
        if key.lower() in CREDENTIAL_PARAMS:
            pieces.append(value)
        else:
            candidates.append(value)
    host = parts.netloc.rsplit("@", 1)[-1]
    if parts.path.strip("/"):
        # the address as libraries log it under another scheme (json:// is logged as http://)
        pieces.append(f"{host}{parts.path}")
    if "." not in host:
        # apprise URLs put tokens where a host would be (tgram://BOTTOKEN/CHAT).
        candidates.append(host)
    pieces += [c for c in candidates if _token_like(c)]
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


@dataclass(frozen=True)
class Channel:
    """A loaded channel. ``url`` is secret: use :attr:`name` in every message.

    Attributes:
        name: channel name.
        url: the apprise URL (secret).
        apprise: an apprise instance holding only this URL.
        format: body format (explicit in channels.yaml, else from the URL scheme).
        settings: delivery settings from channels.yaml.
    """

    name: str
    url: str = field(repr=False)
    apprise: apprise.Apprise = field(repr=False, compare=False)
    format: Format = "text"
    settings: ChannelSettings | None = field(default=None, compare=False)


def _load_apprise(
    name: str, url: str, *, tls_insecure_acknowledged: bool = False
) -> apprise.Apprise:
    console.register()
    # Sequential: the notifier calls apprise from its own threads, one lane's notifications
    # after another (see Notifier.send_in_order); apprise's default hands every call to a
    # thread pool of its own, a second hop per notification.
    target = apprise.Apprise(asset=apprise.AppriseAsset(async_mode=False))
    if not target.add(url):
        raise ConfigError(
            f"channel {name!r}: apprise cannot load its URL (unknown scheme or malformed); "
            "check the URL held by its variable or file (the URL itself is not shown: it may "
            "carry a token)"
        )
    for scheme in clear_text_schemes(target, url):
        logger.warning(
            "channel sends in clear text, without TLS; use %ss:// if the receiver supports it "
            "channel=%s scheme=%s",
            scheme,
            name,
            scheme,
        )
    if not verifies_tls(target):
        if not tls_insecure_acknowledged:
            raise ConfigError(
                f"channel {name!r}: its URL turns TLS certificate verification off (verify=no); "
                "remove that option, or set tls_insecure_acknowledged: true on the channel if "
                "you really mean it"
            )
        logger.warning(
            "TLS certificate verification is OFF; the receiver is not authenticated "
            "channel=%s (verify=no in its URL, tls_insecure_acknowledged: true)",
            name,
        )
    return target


_LOOPBACK = ("localhost", "127.", "::1", "[::1]")


def clear_text_schemes(target: apprise.Apprise, url: str) -> list[str]:
    """The clear-text schemes of the services apprise loaded: a plugin that has a TLS
    variant (``mailto``/``mailtos``, ``json``/``jsons``, ``ntfy``/``ntfys``...) used through
    its plain one, towards a host that is not this machine. Services that only speak HTTPS
    (Telegram, Slack...) are never clear text."""
    scheme = url.split("://", 1)[0].lower()
    found = []
    for server in target:
        plain = server.protocol
        plain_set: set[str] = {plain} if isinstance(plain, str) else set(plain or ())
        secure = server.secure_protocol
        secure_set: set[str] = {secure} if isinstance(secure, str) else set(secure or ())
        host = str(getattr(server, "host", "") or "")
        if (
            scheme in plain_set
            and secure_set
            and scheme not in secure_set
            and not host.startswith(_LOOPBACK)
            and scheme != "console"
        ):
            found.append(scheme)
    return found


def verifies_tls(target: apprise.Apprise) -> bool:
    """Whether every service apprise loaded checks TLS certificates (apprise's own parse of
    ``verify=``, so every spelling of "no" counts)."""
    return all(getattr(server, "verify_certificate", True) is not False for server in target)


def resolve_url(name: str, spec: ChannelSpec, env: Mapping[str, str], base: Path | None) -> str:
    """The apprise URL of a channel entry (secret: never log or print it).

    Raises:
        ConfigError: the variable is unset or the file unreadable or empty (named, never
            quoted).
    """
    if spec.url_env is not None:
        value = env.get(spec.url_env, "").strip()
        if not value:
            raise ConfigError(
                f"channel {name!r}: environment variable {spec.url_env} is not set; "
                "set it to the channel's apprise URL"
            )
        return value
    if spec.url_file is None:  # pragma: no cover - the schema requires one source
        raise ConfigError(f"channel {name!r}: no url_env or url_file")
    path = Path(spec.url_file)
    if not path.is_absolute() and base is not None:
        path = base / path
    try:
        value = path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ConfigError(
            f"channel {name!r}: cannot read url_file {path}: {exc.strerror}"
        ) from None
    except UnicodeDecodeError:
        raise ConfigError(f"channel {name!r}: url_file {path} is not UTF-8 text") from None
    if not value:
        raise ConfigError(f"channel {name!r}: url_file {path} is empty")
    return value


def channel_names(path: Path | None) -> set[str]:
    """Names of the channels a rule may use, without resolving any secret URL.

    Raises:
        ConfigError: the channels file is invalid (every problem, with file and line).
    """
    return set(load_config(path).channels)


def load_channels(path: Path | None, env: Mapping[str, str] | None = None) -> dict[str, Channel]:
    """Load the channels file (or only the built-in console channel when ``path`` is None).

    Raises:
        ConfigError: every problem found, one per line, naming the file, line, channel and
            variable; never a URL.
    """
    return load_channels_from(load_config(path), env)


def load_channels_from(
    config: AlertingConfig,
    env: Mapping[str, str] | None = None,
    *,
    only: Collection[str] | None = None,
) -> dict[str, Channel]:
    """Resolve every channel's URL of a loaded configuration and check apprise can load it.

    ``only`` limits this to some channels (``notify test`` needs one channel's secret, not all).

    Raises:
        ConfigError: every channel that cannot be loaded, one per line.
    """
    env = os.environ if env is None else env
    channels = {
        CONSOLE_CHANNEL: Channel(
            CONSOLE_CHANNEL,
            "console://",
            _load_apprise(CONSOLE_CHANNEL, "console://"),
            "text",
            config.channel(CONSOLE_CHANNEL),
        )
    }
    base = config.path.parent if config.path is not None else None
    problems: list[str] = []
    for name, spec in config.spec.channels.items():
        if only is not None and name not in only:
            continue
        try:
            url = resolve_url(name, spec, env, base)
            guard_logs([url])  # before apprise parses it: its parser logs too
            settings = config.channel(name)
            channels[name] = Channel(
                name,
                url,
                _load_apprise(name, url, tls_insecure_acknowledged=spec.tls_insecure_acknowledged),
                settings.format or format_for_url(url),
                settings,
            )
        except ConfigError as exc:
            line = config.lines.get(name)
            where = f"{config.path}:{line}" if line is not None else f"{config.path}"
            problems.append(f"{where}: {exc}")
    if problems:
        raise ConfigError("\n".join(problems))
    guard_logs([c.url for c in channels.values()])
    return channels


def channel_templates(channels: Mapping[str, Channel]) -> dict[str, ChannelTemplates]:
    """Format and template overrides of each loaded channel, for a
    :class:`~pipeline.alerting.templates.Renderer`."""
    out: dict[str, ChannelTemplates] = {}
    for name, channel in channels.items():
        settings = channel.settings
        out[name] = ChannelTemplates(
            format=channel.format,
            title=settings.title_template if settings is not None else None,
            body=settings.body_template if settings is not None else None,
        )
    return out
