"""Filters every sandboxed template can use (registered by :class:`pipeline.sandbox.Sandbox`).

``num`` exists because measurements are floats and floats print their binary noise: an average
of 32.03 °C readings renders as ``32.029999999999994`` with ``{{ value }}`` and as ``32.0``
with ``{{ value|num(1) }}``.
"""

from __future__ import annotations

import math
from typing import Any

__all__ = ["MAX_DIGITS", "num"]

MAX_DIGITS = 12
"""Most decimals ``num`` prints; more would only show float noise again."""


def num(value: Any, digits: int = 2) -> Any:
    """Format a number with ``digits`` decimals (``32.029999999999994|num(1)`` -> ``32.0``).

    Integers print as they are (``40|num(1)`` -> ``40``); anything that is not a finite number
    (a string value of a state rule, None, NaN) passes through unchanged, so a template never
    fails on an unexpected value. ``digits`` is clamped to 0..:data:`MAX_DIGITS`.
    """
    if isinstance(value, bool) or not isinstance(value, int | float):
        return value
    if isinstance(value, int):
        return str(value)
    if not math.isfinite(value):
        return value
    places = min(max(int(digits), 0), MAX_DIGITS)
    text = f"{value:.{places}f}"
    return text.lstrip("-") if float(text) == 0 else text  # -0.04|num(1): "0.0", not "-0.0"
