"""aliunid OPERATOR live data export: raw WebSocket frames -> measurements.

A ``data`` frame carries one measuring point's live values as nested JSON objects::

    {"type": "data", "id": "<uuid>", "data": {"sys": {"kW": 1.2, "kWh+": 123},
                                              "l1": {"phase": "R", "V": 231.0}}}

Every numeric leaf under ``data`` becomes one :class:`~pipeline.models.Measurement`:

- ``metric`` is the dotted key path (``sys.kW``, ``sys.kWh+``, ``l1.V``);
- ``unit`` comes from the last key (``kWh+`` -> ``kWh``); unknown keys get ``""``;
- ``entity`` is the frame's ``id`` (the measuring point UUID);
- ``ts_ms`` is the envelope's receipt time, because aliunid frames carry no timestamp;
- string leaves become labels of their numeric siblings at the same level (``l1.phase = "R"``
  labels ``l1.V``, ``l1.A``...), not of values in nested objects.

Booleans, ``null`` and arrays are not measurements and are skipped. A ``structure`` frame is
valid but holds nothing to measure, so it yields ``[]``.

Anything else raises :class:`~pipeline.errors.BadInputError` with a reason that names the
problem but never echoes more than a short, quoted fragment of the frame.
"""

from __future__ import annotations

import math
from typing import Any

import orjson

from pipeline.errors import BadInputError
from pipeline.models import Measurement, RawEnvelope

__all__ = ["MAX_DEPTH", "UNITS", "normalize"]

MAX_DEPTH = 8
"""Most keys a metric path may have below ``data`` (``sys.kW`` has 2)."""

UNITS: dict[str, str] = {
    "kW": "kW",
    "kWh": "kWh",
    "kWh+": "kWh",
    "kWh-": "kWh",
    "kvarh": "kvarh",
    "kvarh+": "kvarh",
    "kvarh-": "kvarh",
    "kVA": "kVA",
    "kvar": "kvar",
    "V": "V",
    "A": "A",
    "Hz": "Hz",
}
"""Unit of a metric, keyed by the last key of its path."""

_FRAME_TYPES = ("data", "structure")
_QUOTE_MAX = 40


def _quote(value: object) -> str:
    """Short form of an upstream value for a dead-letter reason (never the whole value)."""
    if isinstance(value, str):
        if len(value) > _QUOTE_MAX:
            value = value[: _QUOTE_MAX - 3] + "..."
        return repr(value)
    if isinstance(value, int | float) and not isinstance(value, bool):
        return repr(value)
    return f"({_kind(value)})"


def _kind(value: object) -> str:
    """JSON name of a parsed value's type."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def normalize(envelope: RawEnvelope) -> list[Measurement]:
    """Turn one aliunid frame into measurements.

    Args:
        envelope: the raw envelope; ``payload`` is the frame text exactly as received.

    Returns:
        One measurement per numeric leaf of a ``data`` frame; ``[]`` for a ``structure`` frame.

    Raises:
        BadInputError: the frame is not JSON, not an object, of an unknown type, has no usable
            ``id``, or its ``data`` is not an object, nests deeper than :data:`MAX_DEPTH` keys,
            holds a non-finite number or no number at all. No other exception escapes.
    """
    try:
        frame = orjson.loads(envelope.payload)
    except orjson.JSONDecodeError as exc:
        raise BadInputError(f"aliunid frame: not valid JSON ({exc.msg} at char {exc.pos})") from exc
    if not isinstance(frame, dict):
        raise BadInputError(f"aliunid frame: expected a JSON object, got {_kind(frame)}")

    frame_type = frame.get("type")
    if frame_type not in _FRAME_TYPES:
        if frame_type is None:
            raise BadInputError("aliunid frame: missing 'type'; expected 'data' or 'structure'")
        raise BadInputError(
            f"aliunid frame: unknown type {_quote(frame_type)}; expected 'data' or 'structure'"
        )

    entity = frame.get("id")
    if not isinstance(entity, str) or not entity:
        if entity is None:
            raise BadInputError(f"aliunid {frame_type} frame: missing 'id'")
        if isinstance(entity, str):
            raise BadInputError(f"aliunid {frame_type} frame: empty 'id'")
        raise BadInputError(
            f"aliunid {frame_type} frame: 'id' must be a string, got {_kind(entity)}"
        )

    if frame_type == "structure":
        return []

    data = frame.get("data")
    if not isinstance(data, dict):
        if data is None and "data" not in frame:
            raise BadInputError("aliunid data frame: missing 'data'")
        raise BadInputError(f"aliunid data frame: 'data' must be an object, got {_kind(data)}")

    out: list[Measurement] = []
    _collect(data, (), envelope, entity, out)
    if not out:
        raise BadInputError("aliunid data frame: 'data' holds no numeric value")
    return out


def _collect(
    node: dict[str, Any],
    path: tuple[str, ...],
    envelope: RawEnvelope,
    entity: str,
    out: list[Measurement],
) -> None:
    """Append a measurement for every numeric leaf below ``node`` (depth-first, key order)."""
    labels = {key: value for key, value in node.items() if isinstance(value, str)}
    for key, value in node.items():
        if isinstance(value, bool) or value is None or isinstance(value, str | list):
            continue
        if isinstance(value, dict):
            if len(path) + 1 >= MAX_DEPTH:
                where = ".".join((*path, key))
                raise BadInputError(
                    f"aliunid data frame: 'data' nests deeper than {MAX_DEPTH} levels "
                    f"at {_quote(where)}"
                )
            _collect(value, (*path, key), envelope, entity, out)
            continue
        metric = ".".join((*path, key))
        number = float(value)
        if not math.isfinite(number):
            raise BadInputError(f"aliunid data frame: {_quote(metric)} is not a finite number")
        out.append(
            Measurement(
                source=envelope.source,
                stream=envelope.stream,
                entity=entity,
                metric=metric,
                value=number,
                unit=UNITS.get(key, ""),
                ts_ms=envelope.received_at_ms,
                labels=dict(labels),
            )
        )
