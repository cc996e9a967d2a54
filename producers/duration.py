"""The one duration grammar of StreamWarden's YAML files: rules, channels and sources.

Accepted: one or more ``<digits><unit>`` parts with units in descending order, each at most
once: ``d`` (days), ``h``, ``m`` (minutes), ``s``, ``ms``. Examples: ``30s``, ``5m``, ``1h``,
``1h30m``, ``500ms``, ``2d``, ``0s``. No spaces, signs, fractions or bare numbers (the sources
file also takes a YAML number, meaning seconds: that is a number, not a duration string).

It lives in ``producers`` because producers must not import ``pipeline`` while ``pipeline`` may
import ``producers`` (as it does the envelope): :mod:`pipeline.rules.duration` builds the
pydantic ``Duration`` type of rule and channel files on it, and
:mod:`producers.sources.base` the ``Seconds`` type of the sources file.
"""

from __future__ import annotations

import re
from datetime import timedelta

__all__ = [
    "DURATION_FORMS",
    "DURATION_PATTERN",
    "DURATION_RE",
    "MAX_DURATION",
    "format_duration",
    "parse_duration",
]

DURATION_FORMS = "30s, 5m, 1h, 1h30m, 500ms, 2d"
"""Examples quoted in every duration error."""

DURATION_PATTERN = r"^(?=\d)(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m(?!s))?(?:(\d+)s)?(?:(\d+)ms)?$"
"""What a duration string looks like (also published in ``rules/schema.json``)."""

DURATION_RE = re.compile(DURATION_PATTERN)
MAX_DURATION = timedelta(days=3650)
"""Longest duration accepted (guards against typos such as ``30000000d``)."""


def parse_duration(text: str) -> timedelta:
    """Parse a duration string.

    Raises:
        ValueError: ``text`` is not a duration (the message lists the accepted forms) or is
            longer than ten years.
    """
    match = DURATION_RE.match(text)
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
