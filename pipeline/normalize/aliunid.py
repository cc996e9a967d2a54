"""aliunid OPERATOR live data export: raw WebSocket frames -> measurements.

A ``data`` frame carries one measuring point's live values as nested JSON objects::

    {"type": "data", "id": "<uuid>", "data": {"sys": {"kW": 1.2, "kWh+": 123},
                                              "l1": {"phase": "R", "V": 231.0}}}

Every numeric leaf under ``data`` becomes one :class:`~pipeline.models.Measurement`:

- ``metric`` is the dotted key path (``sys.kW``, ``sys.kWh+``, ``l1.V``);
- ``unit`` comes from the last key (``kWh+`` -> ``kWh``); unknown keys get ``""``;
- ``entity`` is the frame's ``id`` (the measuring point UUID);
- ``ts_ms`` is the envelope's receipt time, because aliunid frames carry no timestamp;
- string leaves describe their numeric siblings at the same level, not values in nested
  objects: ``phase`` (``l1.phase = "R"``) is an identity label of ``l1.V``, ``l1.A``...; any
  other string is an annotation.

Booleans, ``null`` and arrays are not measurements and are skipped. A ``structure`` frame is
valid but holds nothing to measure, so it yields ``[]``.

Anything else raises :class:`~pipeline.errors.BadInputError` with a reason that names the
problem but never echoes more than a short, quoted fragment of the frame.
"""

from __future__ import annotations

import math
from typing import Any

from pipeline.errors import BadInputError
from pipeline.models import CanonicalRecord, Measurement, RawEnvelope
from pipeline.normalize.common import ControlFrame, Family
from pipeline.normalize.common import json_kind as _kind
from pipeline.normalize.common import quote as _quote

__all__ = ["FAMILY", "IDENTITY_LABELS", "MAX_DEPTH", "UNITS", "normalize", "parse"]

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
IDENTITY_LABELS = ("phase",)
"""String fields that name a series (labels); other string fields become annotations."""
_IDENTITY = frozenset(IDENTITY_LABELS)


def parse(envelope: RawEnvelope, frame: Any) -> list[CanonicalRecord]:
    """Turn one decoded aliunid frame into measurements.

    Args:
        envelope: the raw envelope; ``payload`` is the frame text exactly as received.

    Returns:
        One measurement per numeric leaf of a ``data`` frame; ``[]`` for a ``structure`` frame.

    Raises:
        BadInputError: the frame is not JSON, not an object, of an unknown type, has no usable
            ``id``, or its ``data`` is not an object, nests deeper than :data:`MAX_DEPTH` keys,
            holds a non-finite number or no number at all. No other exception escapes.
    """
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
        raise ControlFrame("structure")

    data = frame.get("data")
    if not isinstance(data, dict):
        if data is None and "data" not in frame:
            raise BadInputError("aliunid data frame: missing 'data'")
        raise BadInputError(f"aliunid data frame: 'data' must be an object, got {_kind(data)}")

    out: list[CanonicalRecord] = []
    _collect(data, (), envelope, entity, out)
    if not out:
        raise BadInputError("aliunid data frame: 'data' holds no numeric value")
    return out


def _collect(
    node: dict[str, Any],
    path: tuple[str, ...],
    envelope: RawEnvelope,
    entity: str,
    out: list[CanonicalRecord],
) -> None:
    """Append a measurement for every numeric leaf below ``node`` (depth-first, key order).

    The hot path of the normalize stage (most frames are aliunid data frames), so it tests
    a value's exact class first (JSON numbers are ``float`` or ``int``), builds each metric
    name from a prefix made once per object, and splits labels from annotations in one pass.
    """
    labels: dict[str, str] = {}
    annotations: dict[str, str] = {}
    for key, value in node.items():
        if isinstance(value, str):
            if key in _IDENTITY:
                labels[key] = value
            else:
                annotations[key] = value
    prefix = ".".join(path) + "." if path else ""
    source, stream, ts_ms = envelope.source, envelope.stream, envelope.received_at_ms
    for key, value in node.items():
        cls = value.__class__
        if cls is float:
            number = value
        elif cls is int:
            number = float(value)
        elif isinstance(value, dict):
            if len(path) + 1 >= MAX_DEPTH:
                raise BadInputError(
                    f"aliunid data frame: 'data' nests deeper than {MAX_DEPTH} levels "
                    f"at {_quote(prefix + key)}"
                )
            _collect(value, (*path, key), envelope, entity, out)
            continue
        elif isinstance(value, bool) or value is None or isinstance(value, str | list):
            continue
        else:  # another number type (a subclass): as before, whatever float() makes of it
            number = float(value)
        if not math.isfinite(number):
            raise BadInputError(
                f"aliunid data frame: {_quote(prefix + key)} is not a finite number"
            )
        out.append(
            Measurement(
                source,
                stream,
                entity,
                prefix + key,
                number,
                UNITS.get(key, ""),
                ts_ms,
                dict(labels) if labels else {},
                dict(annotations) if annotations else {},
            )
        )


FAMILY = Family("aliunid", parse)
"""The aliunid family for the registry (:mod:`pipeline.normalize`)."""

normalize = FAMILY.normalize
"""One frame -> records through the shared decoding step; ``[]`` for a control frame."""
