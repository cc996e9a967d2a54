"""The one ``Duration`` type of rule and channel files: short strings like ``30s`` parsed to
``timedelta``, in the grammar of :mod:`producers.duration` (the sources file uses the same)."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Any

from pydantic import BeforeValidator, PlainSerializer, WithJsonSchema
from pydantic_core import PydanticCustomError

from producers.duration import (
    DURATION_FORMS,
    DURATION_PATTERN,
    DURATION_RE,
    MAX_DURATION,
    format_duration,
    parse_duration,
)

__all__ = [
    "DURATION_FORMS",
    "DURATION_PATTERN",
    "MAX_DURATION",
    "Duration",
    "format_duration",
    "parse_duration",
]


def _validate(value: Any) -> Any:
    """Pydantic hook: strings are parsed, timedeltas pass, anything else is refused.

    Errors carry type ``duration`` or ``duration_too_long`` so the rule loader can word them
    with the value exactly as written in YAML.
    """
    if isinstance(value, timedelta):
        return value
    if isinstance(value, str) and DURATION_RE.match(value):
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
