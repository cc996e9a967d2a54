"""Why apprise did not deliver, in one line and without secrets.

apprise reports failure by return value; the cause ("Connection refused", "Name or service not
known", "certificate verify failed") is only in the log lines it writes while trying, the most
useful at DEBUG ("Socket Exception: ... [Errno 111] Connection refused"). :func:`capture_debug`
makes those reach apprise's per-call capture (``notify(log_level=DEBUG)`` captures only
what the ``apprise`` logger lets through) without sending DEBUG lines to the process's own log
handlers, and :func:`failure_detail` distils the captured lines into a short phrase.

Log text can quote URLs, and an apprise URL's path is often its token: the phrase keeps no URL,
and every secret of the channel's URL is masked as ``***`` before it leaves this module.
"""

from __future__ import annotations

import contextlib
import logging
import re
import threading
from collections.abc import Iterable, Iterator
from typing import Any

__all__ = ["capture_debug", "debug_demand", "failure_detail", "pass_on_from"]

_APPRISE = "apprise"
_MAX_DETAIL = 240
_URL = re.compile(r"\b[a-z][a-z0-9+.-]*://\S+", re.IGNORECASE)
# The innermost cause in a requests/urllib3/smtplib exception text, most specific first.
_CAUSES = (
    re.compile(r"\[Errno -?\d+\] [^'\")\]]+"),
    re.compile(r"certificate verify failed[^'\")\]]*"),
    re.compile(r"\b(?:Read|Connect|Connection) timed out"),
    re.compile(r"Connection (?:refused|reset by peer|aborted)"),
    re.compile(r"SMTPAuthenticationError[^'\")\]]*|Authentication failed[^'\")\]]*"),
)


class _ToRootHandlers(logging.Handler):
    """Passes on what the ``apprise`` logger would have passed before DEBUG was enabled."""

    def __init__(self, threshold: int) -> None:
        super().__init__()
        self.threshold = threshold

    def emit(self, record: logging.LogRecord) -> None:
        root = logging.getLogger()
        threshold = self.threshold or root.getEffectiveLevel()
        if record.levelno >= threshold:
            root.handle(record)


def capture_debug() -> None:
    """Let apprise's DEBUG lines reach its per-call capture, and only that (idempotent).

    The ``apprise`` logger is set to DEBUG and stops propagating; a handler hands the records
    at or above the level it had before (the root's level when it had none) to the root
    logger's handlers, so what the process logs does not change.
    """
    apprise_logger = logging.getLogger(_APPRISE)
    if any(isinstance(h, _ToRootHandlers) for h in apprise_logger.handlers):
        return
    apprise_logger.addHandler(_ToRootHandlers(apprise_logger.level))
    apprise_logger.setLevel(logging.DEBUG)
    apprise_logger.propagate = False


class _DebugDemand:
    """Keeps the ``apprise`` logger at DEBUG while any call wants the cause of a failure.

    apprise builds a log record for each of its DEBUG and INFO lines when its logger lets them
    through: about 35 µs of a 180 µs send. Where attempts are retried, the first one does not
    need them (its HTTP status, which decides retryable or not, is logged at WARNING); the
    retries, whose failure is the one reported, do. Threads send concurrently: the level is
    DEBUG while at least one of them asked for it.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._wanting = 0
        self.idle_level = logging.DEBUG
        """The level while no call asks for DEBUG: DEBUG until :func:`pass_on_from`."""

    def set_idle_level(self, level: int) -> None:
        """Keep the logger at ``level`` whenever no call wants DEBUG (at once if none does)."""
        with self._lock:
            self.idle_level = level
            if self._wanting == 0:
                logging.getLogger(_APPRISE).setLevel(level)

    @contextlib.contextmanager
    def wanted(self) -> Iterator[None]:
        library = logging.getLogger(_APPRISE)
        with self._lock:
            self._wanting += 1
            if self._wanting == 1:
                library.setLevel(logging.DEBUG)
        try:
            yield
        finally:
            with self._lock:
                self._wanting -= 1
                if self._wanting == 0:
                    library.setLevel(self.idle_level)


debug_demand = _DebugDemand()
"""The process's one :class:`_DebugDemand` (``with debug_demand.wanted(): ...``)."""


def pass_on_from(threshold: int) -> bool:
    """Pass captured apprise records on to the process's log handlers only from
    ``threshold`` (e.g. WARNING, to keep apprise's per-send INFO lines out of the log), and
    build them only from there too except while a call wants DEBUG (:data:`debug_demand`).
    False when :func:`capture_debug` was not called (nothing changed)."""
    library = logging.getLogger(_APPRISE)
    handlers = [h for h in library.handlers if isinstance(h, _ToRootHandlers)]
    for handler in handlers:
        handler.threshold = threshold
    if handlers:
        debug_demand.set_idle_level(threshold)
    return bool(handlers)


def _entries(result: Any) -> list[tuple[str, str]]:
    logs = getattr(result, "logs", None)
    if not callable(logs):
        return []
    try:
        return [
            (str(getattr(e, "level", "WARNING")), str(getattr(e, "message", ""))) for e in logs()
        ]
    except Exception:  # logs are a diagnostic aid; never let them break classification
        return []


def _mask(text: str, secrets: Iterable[str]) -> str:
    text = _URL.sub("<url>", text)
    for secret in sorted(set(secrets), key=len, reverse=True):
        if len(secret) >= 4:
            text = text.replace(secret, "***")
    text = " ".join(text.split())
    return text if len(text) <= _MAX_DETAIL else text[: _MAX_DETAIL - 1] + "…"


def failure_detail(result: Any, secrets: Iterable[str] = ()) -> str:
    """The last warning apprise logged and the innermost cause it gave, masked; "" if none.

    Args:
        result: apprise's result (anything with ``logs()`` yielding entries with ``level``
            and ``message``).
        secrets: the channel URL's secrets (:func:`pipeline.notify.channels.url_secrets`).
    """
    entries = _entries(result)
    warnings = [m for level, m in entries if level in ("WARNING", "ERROR", "CRITICAL")]
    cause = ""
    for _level, message in reversed(entries):
        found = next((m.group(0) for p in _CAUSES if (m := p.search(message))), "")
        if found:
            cause = found.strip().rstrip(".")
            break
    summary = warnings[-1].strip().rstrip(".") if warnings else ""
    if cause and cause not in summary:
        summary = f"{summary} ({cause})" if summary else cause
    return _mask(summary, secrets)
