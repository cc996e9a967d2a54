"""The one ``Duration`` type of rule files: short strings like ``30s`` parsed to ``timedelta``.

Accepted: one or more ``<digits><unit>`` parts with units in descending order, each at most
once: ``d`` (days), ``h``, ``m`` (minutes), ``s``, ``ms``. Examples: ``30s``, ``5m``, ``1h``,
``1h30m``, ``500ms``, ``2d``, ``0s``. No spaces, signs, fractions or bare numbers.
"""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Annotated, Any

from pydantic import BeforeValidator, PlainSerializer, WithJsonSchema
from pydantic_core import PydanticCustomError

__all__ = [
    "DURATION_FORMS",
    "DURATION_PATTERN",
    "MAX_DURATION",
    "Duration",
    "format_duration",
    "parse_duration",
]

DURATION_FORMS = "30s, 5m, 1h, 1h30m, 500ms, 2d"
"""Examples quoted in every duration error."""

DURATION_PATTERN = r"^(?=\d)(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m(?!s))?(?:(\d+)s)?(?:(\d+)ms)?$"
"""What a duration string looks like (also published in ``rules/schema.json``)."""

_DURATION_RE = re.compile(DURATION_PATTERN)
MAX_DURATION = timedelta(days=3650)
"""Longest duration accepted (guards against typos such as ``30000000d``)."""


def parse_duration(text: str) -> timedelta:
    """Parse a duration string.

    Raises:
        ValueError: ``text`` is not a duration (the message lists the accepted forms) or is
            longer than ten years.
    """
    match = _DURATION_RE.match(text)
    if match is None:
        raise ValueError(f"{text!r} is not a duration; use forms like {DURATION_FORMS}")
    days, hours, minutes, seconds, millis = (int(g) if g else 0 for g in match.groups())
    try:
        total = timedelta(
            days=days, hours=hours, minutes=minutes, seconds=seconds, milliseconds=millis
        )
    except OverflowError:
        total = timedelta.max
    if total > MAX_DURATION:
        raise ValueError(f"{text!r} is longer than {MAX_DURATION.days} days")
    return total


def format_duration(value: timedelta) -> str:
    """Shortest duration string for ``value`` (inverse of :func:`parse_duration`)."""
    millis = (value.days * 86_400 + value.seconds) * 1000 + value.microseconds // 1000
    if millis == 0:
        return "0s"
    parts = []
    for unit, size in (("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1000)):
        count, millis = divmod(millis, size)
        if count:
            parts.append(f"{count}{unit}")
    if millis:
        parts.append(f"{millis}ms")
    return "".join(parts)


def _validate(value: Any) -> Any:
    """Pydantic hook: strings are parsed, timedeltas pass, anything else is refused.

    Errors carry type ``duration`` or ``duration_too_long`` so the rule loader can word them
    with the value exactly as written in YAML.
    """
    if isinstance(value, timedelta):
        return value
    if isinstance(value, str) and _DURATION_RE.match(value):
        try:
            return parse_duration(value)
        except ValueError:
            raise PydanticCustomError(
                "duration_too_long",
                "longer than {days} days",
                {"input": value, "days": MAX_DURATION.days},
            ) from None
    raise PydanticCustomError(
        "duration",
        "not a duration; use forms like {forms}",
        {"input": value, "forms": DURATION_FORMS},
    )


Duration = Annotated[
    timedelta,
    BeforeValidator(_validate),
    PlainSerializer(format_duration, return_type=str),
    WithJsonSchema(
        {
            "type": "string",
            "pattern": DURATION_PATTERN,
            "description": f"A duration such as {DURATION_FORMS}.",
            "examples": ["30s", "5m", "1h30m"],
        }
    ),
]
"""A ``timedelta`` written in YAML as ``30s``, ``5m``, ``1h``, ``1h30m``, ``500ms`` or ``2d``."""
