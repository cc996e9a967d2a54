"""Keep credentials out of logs and error messages.

Standard library only: ``pipeline`` imports this module too, and it must stay cheap to import.

Two layers:

* :func:`redact_url` / :func:`redact_text` mask values of credential-bearing query parameters
  (``apiKey``, ``token``, ...) and userinfo passwords, wherever the URL came from.
* :class:`SecretFilter` masks known secret *values* (from the sources file or environment) in
  log records, after formatting, including exception and stack text. Install it on the root
  logger's handlers with :func:`install_secret_filter`.

A secret reaches text in more than one spelling: a URL carries it percent-encoded and a
library logs it decoded (``AAH%2Denc`` / ``AAH-enc``), a JSON body escapes it, an HTTP peer
echoes ``Authorization: Basic base64(user:password)``. :func:`spellings` lists them and
:class:`SecretFilter` masks every one; :func:`basic_auth` gives the Basic form of a
user and password.
"""

from __future__ import annotations

import base64
import json
import logging
import re
import threading
from collections.abc import Iterable
from urllib.parse import SplitResult, quote, quote_plus, unquote, unquote_plus, urlsplit, urlunsplit

__all__ = [
    "CREDENTIAL_PARAMS",
    "MASK",
    "MIN_SECRET_LENGTH",
    "SecretFilter",
    "basic_auth",
    "install_secret_filter",
    "redact_known",
    "redact_text",
    "redact_url",
    "spellings",
]

MASK = "***"

#: Query parameter names (compared case-insensitively) whose values are credentials.
CREDENTIAL_PARAMS: frozenset[str] = frozenset(
    {
        "apikey",
        "api_key",
        "api-key",
        "key",
        "token",
        "access_token",
        "auth",
        "password",
        "passcode",
        "secret",
    }
)

#: Secrets shorter than this are ignored by :class:`SecretFilter`: masking every ``a`` or
#: ``42`` in every log line would make logs useless and reveal nothing worth hiding.
MIN_SECRET_LENGTH = 4

_PARAM_NAMES = "|".join(re.escape(p) for p in sorted(CREDENTIAL_PARAMS, key=len, reverse=True))
# name=value inside free text: the name must not be the tail of a longer word (``monkey=``),
# the value runs to the next separator.
_TEXT_PARAM = re.compile(
    rf"(?<![A-Za-z0-9_\-])((?:{_PARAM_NAMES})=)[^&\s\"'#<>]+",
    re.IGNORECASE,
)
# "name": "value" in JSON text (a frame or a response body echoing a credential)
_JSON_PARAM = re.compile(
    rf"(\"(?:{_PARAM_NAMES})\"\s*:\s*\")(?:[^\"\\]|\\.)*(?=\")",
    re.IGNORECASE,
)
# scheme://user:password@host
_TEXT_USERINFO = re.compile(r"(\b[A-Za-z][A-Za-z0-9+.\-]*://[^:/@\s]*:)[^@/\s]+@")


def spellings(secret: str) -> set[str]:
    """Every way ``secret`` may be written: as given, percent-encoded (``quote`` and
    ``quote_plus``), percent-decoded, and JSON-escaped (of each of those)."""
    forms = {secret, quote(secret, safe=""), quote_plus(secret, safe="")}
    forms |= {unquote(secret), unquote_plus(secret)}
    forms |= {json.dumps(form, ensure_ascii=True)[1:-1] for form in list(forms)}
    forms |= {json.dumps(form, ensure_ascii=False)[1:-1] for form in list(forms)}
    return {form for form in forms if form}


def basic_auth(user: str, password: str) -> str:
    """The base64 credentials of an ``Authorization: Basic`` header for ``user:password``."""
    return base64.b64encode(f"{user}:{password}".encode()).decode("ascii")


def redact_url(url: str) -> str:
    """Mask credential query values and the userinfo password of a URL.

    Other parts (scheme, host, path, the order and spelling of parameters) are kept as they are,
    so the result still shows which endpoint was meant.

    Examples:
        ``wss://h/p?apiKey=abc&id=1`` -> ``wss://h/p?apiKey=***&id=1``;
        ``amqp://user:pw@h/`` -> ``amqp://user:***@h/``.
    """
    try:
        parts = urlsplit(url)
    except ValueError:
        # Unparseable (e.g. a broken IPv6 host): fall back to pattern masking.
        return redact_text(url)
    netloc = _redact_netloc(parts)
    query = _redact_query(parts.query)
    if netloc == parts.netloc and query == parts.query:
        return url
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def redact_text(text: str) -> str:
    """Mask ``name=value`` and JSON ``"name": "value"`` credential parameters and URL
    passwords anywhere in free text.

    Used for lines that may embed a URL or request target (``GET /live?apiKey=... HTTP/1.1``).
    """
    if "=" in text:
        text = _TEXT_PARAM.sub(rf"\g<1>{MASK}", text)
    if '"' in text:
        text = _JSON_PARAM.sub(rf"\g<1>{MASK}", text)
    if "@" in text:
        text = _TEXT_USERINFO.sub(rf"\g<1>{MASK}@", text)
    return text


def _redact_netloc(parts: SplitResult) -> str:
    netloc = parts.netloc
    if "@" not in netloc:
        return netloc
    userinfo, _, hostport = netloc.rpartition("@")
    user, sep, _password = userinfo.partition(":")
    if not sep:
        return netloc
    return f"{user}:{MASK}@{hostport}"


def _redact_query(query: str) -> str:
    if not query:
        return query
    out: list[str] = []
    for field in query.split("&"):
        name, sep, _value = field.partition("=")
        if sep and unquote_plus(name).lower() in CREDENTIAL_PARAMS:
            out.append(f"{name}={MASK}")
        else:
            out.append(field)
    return "&".join(out)


class SecretFilter(logging.Filter):
    """Replace known secret values, in every spelling (:func:`spellings`), with ``***``.

    The record's message is formatted first (``msg % args``), then masked, and stored back as
    ``msg`` with no ``args``, so every handler after this one sees the masked text. Exception
    and stack text are formatted and masked the same way. Records without a secret are left
    untouched.

    Args:
        secrets: secret values; values shorter than :data:`MIN_SECRET_LENGTH` are ignored.
        redact_credentials: also apply :func:`redact_text` (credential query parameters and URL
            passwords), for loggers that print raw request lines, such as the websockets logger.
    """

    def __init__(self, secrets: Iterable[str] = (), *, redact_credentials: bool = False) -> None:
        super().__init__()
        self._lock = threading.Lock()
        self._secrets: tuple[str, ...] = ()
        self._given: set[str] = set()
        self.redact_credentials = redact_credentials
        self.add(secrets)

    @property
    def secrets_count(self) -> int:
        """How many distinct secrets are masked (each in all its spellings)."""
        return len(self._given)

    def add(self, secrets: Iterable[str]) -> None:
        """Mask more secrets from now on (thread-safe)."""
        given = {s for s in secrets if isinstance(s, str) and len(s) >= MIN_SECRET_LENGTH}
        new = {form for s in given for form in spellings(s) if len(form) >= MIN_SECRET_LENGTH}
        with self._lock:
            self._given |= given
            merged = set(self._secrets) | new
            # Longest first, so a secret that contains another is masked whole.
            self._secrets = tuple(sorted(merged, key=lambda s: (-len(s), s)))

    def redact(self, text: str) -> str:
        """Return ``text`` with every known secret (and, if enabled, credential) masked."""
        for secret in self._secrets:
            if secret in text:
                text = text.replace(secret, MASK)
        if self.redact_credentials:
            text = redact_text(text)
        return text

    def filter(self, record: logging.LogRecord) -> bool:
        if not self._secrets and not self.redact_credentials:
            return True
        try:
            message = record.getMessage()
        except Exception:  # a broken format string: let the handler report it as usual
            return True
        masked = self.redact(message)
        if masked != message:
            record.msg = masked
            # (), not None: some formatters (mode's) turn None into (None,) and then fail.
            record.args = ()
        if record.exc_info and not record.exc_text:
            text = logging.Formatter().formatException(record.exc_info)
            masked_exc = self.redact(text)
            if masked_exc != text:
                # Formatters use exc_text when it is set instead of formatting exc_info again.
                record.exc_text = masked_exc
        elif record.exc_text:
            record.exc_text = self.redact(record.exc_text)
        if record.stack_info:
            record.stack_info = self.redact(record.stack_info)
        return True


_installed: SecretFilter | None = None
_install_lock = threading.Lock()


def install_secret_filter(secrets: Iterable[str]) -> SecretFilter:
    """Mask ``secrets`` in everything the root logger's handlers emit.

    One shared filter is added to every handler currently on the root logger; later calls add
    their secrets to it and attach it to handlers added since. Call it after logging is
    configured and again whenever handlers or secrets are added.

    Returns:
        The shared filter.
    """
    global _installed
    with _install_lock:
        if _installed is None:
            _installed = SecretFilter()
        shared = _installed
    shared.add(secrets)
    for handler in logging.getLogger().handlers:
        if shared not in handler.filters:
            handler.addFilter(shared)
    return shared


def redact_known(text: str) -> str:
    """:func:`redact_text`, plus the secret values given to :func:`install_secret_filter`
    (for text that is stored rather than logged, such as dead-letter excerpts)."""
    shared = _installed
    if shared is not None:
        text = shared.redact(text)
    return redact_text(text)
