"""One log format for every logger of a process (ours, faust, mode, aiokafka), chosen by
``STREAMWARDEN_LOG_FORMAT=text|json``, and routine rebalance noise at INFO.

Stdlib only, like :mod:`producers.redact`, so producers and the worker both use it.

- ``text`` (default): ``2026-12-03 08:00:00,123 INFO pipeline.worker: message key=value``;
- ``json``: one object per line: ``ts`` (ISO 8601, UTC), ``level``, ``logger``, ``message``,
  ``process`` and ``exc`` when there is a traceback.

aiokafka logs ``OffsetCommit failed for group ... RebalanceInProgressError ..., will rejoin``
at ERROR for every routine rebalance (about ten lines per worker joining or leaving). Nothing
is lost there (the consumer rejoins and the uncommitted records are processed again, which
at-least-once expects), so :class:`RoutineRebalanceFilter` turns exactly those records into
INFO on every handler. It is a logging filter, not a patch of aiokafka or faust.
"""

from __future__ import annotations

import json
import logging
import os
from datetime import UTC, datetime

__all__ = [
    "FORMATS",
    "JsonFormatter",
    "LogFormatError",
    "RoutineRebalanceFilter",
    "apply_log_format",
    "formatter_for",
]

FORMATS = ("text", "json")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class LogFormatError(ValueError):
    """``STREAMWARDEN_LOG_FORMAT`` names no known format."""


class JsonFormatter(logging.Formatter):
    """One JSON object per record (see the module docstring)."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, object] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "process": record.process,
        }
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        elif record.exc_text:
            out["exc"] = record.exc_text
        return json.dumps(out, default=str)


class RoutineRebalanceFilter(logging.Filter):
    """Lowers aiokafka's routine ``OffsetCommit failed ... RebalanceInProgress`` ERROR records
    (and the matching commit-on-finalization warning) to INFO."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno > logging.INFO and record.name.startswith("aiokafka"):
            message = record.getMessage()
            if "RebalanceInProgress" in message and (
                "OffsetCommit failed" in message or "commit" in message.lower()
            ):
                record.levelno = logging.INFO
                record.levelname = "INFO"
        return True


def formatter_for(name: str) -> logging.Formatter:
    """The formatter of format ``name``.

    Raises:
        LogFormatError: ``name`` is not ``text`` or ``json``.
    """
    if name == "json":
        return JsonFormatter()
    if name == "text":
        return logging.Formatter(TEXT_FORMAT)
    raise LogFormatError(
        f"STREAMWARDEN_LOG_FORMAT={name!r} is not a log format; use one of {', '.join(FORMATS)}"
    )


_filter = RoutineRebalanceFilter()


def apply_log_format(name: str | None = None) -> None:
    """Give every handler of the root logger the chosen format and the rebalance filter.

    Call after logging is configured (also after faust/mode configured it).

    Raises:
        LogFormatError: unknown format name.
    """
    chosen = (name or os.environ.get("STREAMWARDEN_LOG_FORMAT") or "text").strip().lower()
    formatter = formatter_for(chosen)
    for handler in logging.getLogger().handlers:
        handler.setFormatter(formatter)
        if _filter not in handler.filters:
            handler.addFilter(_filter)
