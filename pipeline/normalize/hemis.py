"""Hemis (Ubiant / Flexom) STOMP messages -> measurements and state events.

The envelope's payload is one MESSAGE body: a JSON object with ``type`` and ``timestamp``
(base64 text when ``meta["encoding"] == "base64"``, for bodies that came in binary WebSocket
frames). Mapping (``F`` is the message's ``factorId``, kept as sent, e.g. ``TMP``):

=========================  ===============================================================
type                       records
=========================  ===============================================================
SENSOR_STATE               ``value`` a number or numeric string (``"21.0"``) -> Measurement
                           ``sensor.F``; an ActuatorState-like object -> Measurement
                           ``sensor.F`` from its ``value``; an ITCompositeState (``o``/``p``/
                           ``r``) -> StateEvents ``sensor.o``/``sensor.p``/``sensor.r``; a
                           boolean or other text -> StateEvent ``sensor.F``. Entity
                           ``sensorId``, else ``itId``.
ACTUATOR_TARGET_STATE      Measurement ``actuator.F.target`` from ``value.value`` (or a bare
ACTUATOR_HARDWARE_STATE    number); ``.hardware`` and ``.current`` for the other two. Entity
ACTUATOR_CURRENT_STATE     ``value.actuatorId``, else ``itId``, else ``value.itId``.
IT_STATE                   StateEvents ``it.o``, ``it.p``, ``it.r`` (those present) from the
                           ITCompositeState; ``previous`` from ``pO``/``pP``/``pR``; the cause
                           (``oC``...) as label ``cause``. Entity ``itId``.
FACTOR_TARGET_STATE        Measurement ``factor.F.target`` / ``factor.F.current``. Entity
FACTOR_CURRENT_STATE       ``zoneId``.
OBJECTIVE_STATE            StateEvent ``objective.executable`` = ``true``/``false``. Entity
                           ``objectiveId``.
DATA_PROVIDER, NEW_DATA    One Measurement per data point and column of the DataContainer:
                           metric ``provider.<sourceGroup>[.<customPersistenceId>].<COLUMN>``
                           (``provider.TMP.VALUENB``), value ``v[columns_mapping[COLUMN]]``,
                           event time ``d``, unit ``measurementUnit`` for ``VALUE*`` columns.
                           ``data_points`` is read next to ``header`` (the doc example) or
                           inside it (the doc prose). Entity ``dataInfo.sourceId``.
ENTITY_MANAGEMENT          StateEvent ``management`` = the action (``create``/``update``/
                           ``delete``), label ``entityType``. Entity ``entityId``.
=========================  ===============================================================

A sensor's DataContainer (``sourceNature`` ``SEN`` or ``SENSOR``) also gives its ``VALUENB``
column as ``sensor.<sourceGroup>``, the metric a SENSOR_STATE of the same sensor gives, so a
rule on ``sensor.TMP`` sees one series whichever message type carried the reading.

State values are lowercase text. Hemis records carry no identity labels (entity and metric
name the series); annotations carry ``type`` and, when present, ``zoneId``, ``itId``,
``factorId`` (DataContainers: ``zoneId``, ``sourceNature``, ``measurement``), and ``cause``
of a composite state. So the message type (``DATA_PROVIDER`` or ``NEW_DATA``) and the
spelling of ``sourceNature`` never split an alert.
Units: ``TMP`` is °C; DataContainers give theirs; others are unknown and left empty
(``BRIEXT`` is a 0.0-1.0 position).

Event time: the message's ``timestamp`` (data points: ``d``), read as seconds when below
10^11 and as milliseconds otherwise (the doc's DataContainer example uses seconds, everything
else milliseconds); without one, the envelope's ``received_at_ms``. ``valueType`` is ignored:
its code table is not published (docs/upstreams.md section 5).

Anything malformed raises :class:`~pipeline.errors.BadInputError` with a reason that names the
field and quotes at most a short fragment; no other exception escapes.
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Callable
from typing import Any

from pipeline.errors import BadInputError
from pipeline.models import CanonicalRecord, Measurement, RawEnvelope, StateEvent
from pipeline.normalize.common import ControlFrame, Family
from pipeline.normalize.common import json_kind as _kind
from pipeline.normalize.common import quote as _quote

__all__ = [
    "FAMILY",
    "MESSAGE_TYPES",
    "SENSOR_NATURES",
    "SENSOR_VALUE_COLUMN",
    "UNITS",
    "normalize",
    "parse",
]

UNITS: dict[str, str] = {"TMP": "°C"}
"""Unit of a factor, by ``factorId``."""
SENSOR_NATURES = frozenset({"SEN", "SENSOR"})
"""``sourceNature`` spellings of a sensor (the doc lists SENSOR, its example sends SEN)."""
SENSOR_VALUE_COLUMN = "VALUENB"
"""The DataContainer column that holds a sensor's reading."""

_ACTUATOR_SUFFIX = {
    "ACTUATOR_TARGET_STATE": "target",
    "ACTUATOR_HARDWARE_STATE": "hardware",
    "ACTUATOR_CURRENT_STATE": "current",
}
_FACTOR_SUFFIX = {"FACTOR_TARGET_STATE": "target", "FACTOR_CURRENT_STATE": "current"}
_COMPOSITE = (("o", "pO", "oC"), ("p", "pP", "pC"), ("r", "pR", "rC"))
_SECONDS_BELOW = 1e11
_MAX_MS = 1e14
_NUMBER = re.compile(r"^[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?$")


class _Message:
    """One parsed message plus the helpers that build its records and reasons."""

    def __init__(self, envelope: RawEnvelope, body: dict[str, Any], kind: str) -> None:
        self.envelope = envelope
        self.body = body
        self.kind = kind

    def fail(self, reason: str) -> BadInputError:
        return BadInputError(f"hemis {self.kind}: {reason}")

    def maybe(self, key: str, where: dict[str, Any] | None = None) -> str | None:
        """A non-empty string field of ``where`` (default the message), or None if absent."""
        source = self.body if where is None else where
        value = source.get(key)
        if value is None:
            return None
        name = key if where is None else f"value.{key}"
        if not isinstance(value, str):
            raise self.fail(f"'{name}' must be a string, got {_kind(value)}")
        if not value:
            raise self.fail(f"empty '{name}'")
        return value

    def need(self, key: str) -> str:
        """A required non-empty string field of the message."""
        value = self.maybe(key)
        if value is None:
            raise self.fail(f"missing '{key}'")
        return value

    def event_ms(self, value: object, field: str) -> int:
        """Epoch ms from a seconds or milliseconds timestamp; receipt time when absent."""
        if value is None:
            return self.envelope.received_at_ms
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self.fail(f"'{field}' must be a number, got {_kind(value)}")
        if not math.isfinite(value) or value < 0 or value >= _MAX_MS:
            raise self.fail(f"'{field}' {_quote(value)} is not an epoch time in s or ms")
        millis = value * 1000 if value < _SECONDS_BELOW else value
        return round(millis)

    @functools.cached_property
    def ts_ms(self) -> int:
        return self.event_ms(self.body.get("timestamp"), "timestamp")

    def annotations(self, *keys: str) -> dict[str, str]:
        """``type`` plus the named fields that are present: all descriptive (see module)."""
        out = {"type": self.kind}
        for key in keys:
            value = self.body.get(key)
            if isinstance(value, str) and value:
                out[key] = value
        return out

    def measurement(
        self,
        entity: str,
        metric: str,
        value: float,
        unit: str,
        ts_ms: int,
        annotations: dict[str, str],
    ) -> Measurement:
        env = self.envelope
        return Measurement(
            env.source, env.stream, entity, metric, value, unit, ts_ms, {}, annotations
        )

    def state(
        self,
        entity: str,
        name: str,
        value: str,
        previous: str | None,
        annotations: dict[str, str],
    ) -> StateEvent:
        env = self.envelope
        return StateEvent(
            env.source, env.stream, entity, name, value, previous, self.ts_ms, {}, annotations
        )

    def number(self, value: object, field: str) -> float | None:
        """A finite float from a number or numeric string; None when it is neither."""
        if isinstance(value, bool):
            return None
        if isinstance(value, str):
            if not _NUMBER.match(value.strip()):
                return None
            number = float(value)
        elif isinstance(value, int | float):
            number = float(value)
        else:
            return None
        if not math.isfinite(number):
            raise self.fail(f"'{field}' is not a finite number")
        return number


def parse(envelope: RawEnvelope, body: Any) -> list[CanonicalRecord]:
    """Turn one decoded Hemis message into measurements and state events.

    Raises:
        BadInputError: the body is not a JSON object, has no known ``type``, or a field the
            type needs is missing or of the wrong kind.
        ControlFrame: ``no data points``: a DataContainer with an empty ``data_points``.
    """
    if not isinstance(body, dict):
        raise BadInputError(f"hemis message: expected a JSON object, got {_kind(body)}")
    kind = body.get("type")
    if not isinstance(kind, str) or kind not in _HANDLERS:
        if kind is None:
            raise BadInputError("hemis message: missing 'type'")
        raise BadInputError(f"hemis message: unknown type {_quote(kind)}")
    message = _Message(envelope, body, kind)
    _ = message.ts_ms  # a malformed timestamp is rejected whatever the type
    return _HANDLERS[kind](message)


# ------------------------------------------------------------------------------ by type


def _sensor_state(m: _Message) -> list[CanonicalRecord]:
    entity = m.maybe("sensorId") or m.maybe("itId")
    if entity is None:
        raise m.fail("missing 'sensorId' and 'itId'")
    factor = m.need("factorId")
    notes = m.annotations("zoneId", "itId", "factorId")
    value = m.body.get("value")
    if isinstance(value, dict):
        if any(key in value for key, _, _ in _COMPOSITE):
            return _composite(m, entity, "sensor", value, notes)
        number = m.number(value.get("value"), "value.value")
        if number is None:
            raise m.fail("'value' object has neither a numeric 'value' nor o/p/r states")
        return [m.measurement(entity, f"sensor.{factor}", number, _unit(factor), m.ts_ms, notes)]
    if isinstance(value, bool):
        return [m.state(entity, f"sensor.{factor}", str(value).lower(), None, notes)]
    number = m.number(value, "value")
    if number is not None:
        return [m.measurement(entity, f"sensor.{factor}", number, _unit(factor), m.ts_ms, notes)]
    if isinstance(value, str) and value.strip():
        return [m.state(entity, f"sensor.{factor}", value.strip().lower(), None, notes)]
    if value is None:
        raise m.fail("missing 'value'")
    raise m.fail(f"'value' must be a number, text or object, got {_quote(value)}")


def _actuator_state(m: _Message) -> list[CanonicalRecord]:
    factor = m.need("factorId")
    value = m.body.get("value")
    if value is None:
        raise m.fail("missing 'value'")
    actuator: str | None = None
    inner_it: str | None = None
    if isinstance(value, dict):
        actuator = m.maybe("actuatorId", value)
        inner_it = m.maybe("itId", value)
        number = m.number(value.get("value"), "value.value")
        if number is None:
            raise m.fail(f"'value.value' must be a number, got {_quote(value.get('value'))}")
    else:
        number = m.number(value, "value")
        if number is None:
            raise m.fail(f"'value' must be an ActuatorState or a number, got {_quote(value)}")
    entity = actuator or m.maybe("itId") or inner_it
    if entity is None:
        raise m.fail("missing 'value.actuatorId' and 'itId'")
    notes = m.annotations("zoneId", "itId", "factorId")
    if inner_it and "itId" not in notes:
        notes["itId"] = inner_it
    metric = f"actuator.{factor}.{_ACTUATOR_SUFFIX[m.kind]}"
    return [m.measurement(entity, metric, number, _unit(factor), m.ts_ms, notes)]


def _it_state(m: _Message) -> list[CanonicalRecord]:
    entity = m.need("itId")
    value = m.body.get("value")
    if not isinstance(value, dict):
        raise m.fail(f"'value' must be an ITCompositeState object, got {_kind(value)}")
    return _composite(m, entity, "it", value, m.annotations("zoneId", "factorId"))


def _composite(
    m: _Message, entity: str, prefix: str, value: dict[str, Any], notes: dict[str, str]
) -> list[CanonicalRecord]:
    out: list[CanonicalRecord] = []
    for key, previous_key, cause_key in _COMPOSITE:
        state = value.get(key)
        if state is None:
            continue
        if not isinstance(state, str) or not state:
            raise m.fail(f"'value.{key}' must be a non-empty string, got {_quote(state)}")
        previous = value.get(previous_key)
        cause = value.get(cause_key)
        record_notes = dict(notes)
        if isinstance(cause, str) and cause:
            record_notes["cause"] = cause
        out.append(
            m.state(
                entity,
                f"{prefix}.{key}",
                state.lower(),
                previous.lower() if isinstance(previous, str) and previous else None,
                record_notes,
            )
        )
    if not out:
        raise m.fail("'value' holds none of the states o, p, r")
    return out


def _factor_state(m: _Message) -> list[CanonicalRecord]:
    zone = m.need("zoneId")
    factor = m.need("factorId")
    value = m.body.get("value")
    number = m.number(value, "value")
    if number is None:
        raise m.fail(f"'value' must be a number, got {_quote(value)}")
    metric = f"factor.{factor}.{_FACTOR_SUFFIX[m.kind]}"
    notes = m.annotations("zoneId", "factorId")
    return [m.measurement(zone, metric, number, _unit(factor), m.ts_ms, notes)]


def _objective_state(m: _Message) -> list[CanonicalRecord]:
    entity = m.need("objectiveId")
    value = m.body.get("value")
    if not isinstance(value, bool):
        raise m.fail(f"'value' must be true or false, got {_quote(value)}")
    notes = m.annotations("zoneId")
    return [m.state(entity, "objective.executable", str(value).lower(), None, notes)]


def _entity_management(m: _Message) -> list[CanonicalRecord]:
    entity = m.need("entityId")
    m.need("entityType")
    action = m.need("action")
    notes = m.annotations("entityType")
    return [m.state(entity, "management", action.lower(), None, notes)]


def _data_container(m: _Message) -> list[CanonicalRecord]:
    container = _object(m, m.body, "container", "container")
    info = _object(m, container, "dataInfo", "container.dataInfo")
    type_info = _object(m, info, "sourceTypeInfo", "container.dataInfo.sourceTypeInfo")
    entity = _string(m, info, "sourceId", "container.dataInfo.sourceId")
    group = _string(m, type_info, "sourceGroup", "container.dataInfo.sourceTypeInfo.sourceGroup")
    custom = type_info.get("customPersistenceId")
    if custom is not None and not isinstance(custom, str):
        raise m.fail(f"'customPersistenceId' must be a string, got {_kind(custom)}")
    unit = type_info.get("measurementUnit")
    unit = unit if isinstance(unit, str) else ""
    data = _object(m, container, "data", "container.data")
    header = _object(m, data, "header", "container.data.header")
    mapping = _object(m, header, "columns_mapping", "container.data.header.columns_mapping")
    columns: list[tuple[str, int]] = []
    for column, index in mapping.items():
        if isinstance(index, bool) or not isinstance(index, int) or index < 0 or not column:
            raise m.fail(f"columns_mapping[{_quote(column)}] must be an index >= 0")
        columns.append((column, index))
    if not columns:
        raise m.fail("'columns_mapping' is empty")
    points = data.get("data_points")
    if points is None:
        points = header.get("data_points")
    if points is None:
        raise m.fail("missing 'data_points' (next to or inside 'header')")
    if not isinstance(points, list):
        raise m.fail(f"'data_points' must be an array, got {_kind(points)}")
    if not points:
        raise ControlFrame("no data points")
    base = f"provider.{group}.{custom}" if custom else f"provider.{group}"
    nature = type_info.get("sourceNature")
    sensor = isinstance(nature, str) and nature.upper() in SENSOR_NATURES
    annotations = {"type": m.kind}
    for key, source in (("zoneId", info), ("sourceNature", type_info), ("measurement", type_info)):
        value = source.get(key)
        if isinstance(value, str) and value:
            annotations[key] = value
    out: list[CanonicalRecord] = []
    for position, point in enumerate(points):
        where = f"data_points[{position}]"
        if not isinstance(point, dict):
            raise m.fail(f"'{where}' must be an object, got {_kind(point)}")
        if point.get("d") is None:
            raise m.fail(f"missing '{where}.d'")
        ts_ms = m.event_ms(point.get("d"), f"{where}.d")
        values = point.get("v")
        if not isinstance(values, list):
            raise m.fail(f"'{where}.v' must be an array, got {_kind(values)}")
        for column, index in columns:
            if index >= len(values):
                raise m.fail(f"'{where}.v' has no index {index} for column {_quote(column)}")
            raw = values[index]
            if raw is None:
                continue  # no value for this column at this point
            number = m.number(raw, f"{where}.v[{index}]")
            if number is None:
                raise m.fail(f"'{where}.v[{index}]' ({column}) must be a number, got {_kind(raw)}")
            column_unit = unit if column.upper().startswith("VALUE") else ""
            metric = f"{base}.{column}"
            out.append(m.measurement(entity, metric, number, column_unit, ts_ms, dict(annotations)))
            if sensor and column == SENSOR_VALUE_COLUMN:
                # The same reading a SENSOR_STATE gives as sensor.<factor>: one series.
                alias = f"sensor.{group}"
                out.append(m.measurement(entity, alias, number, unit, ts_ms, dict(annotations)))
    if not out:
        raise ControlFrame("no data points")  # every point's columns were null
    return out


def _object(m: _Message, parent: dict[str, Any], key: str, path: str) -> dict[str, Any]:
    value = parent.get(key)
    if value is None:
        raise m.fail(f"missing '{path}'")
    if not isinstance(value, dict):
        raise m.fail(f"'{path}' must be an object, got {_kind(value)}")
    return value


def _string(m: _Message, parent: dict[str, Any], key: str, path: str) -> str:
    value = parent.get(key)
    if value is None:
        raise m.fail(f"missing '{path}'")
    if not isinstance(value, str) or not value:
        raise m.fail(f"'{path}' must be a non-empty string, got {_quote(value)}")
    return value


def _unit(factor: str) -> str:
    return UNITS.get(factor, "")


_HANDLERS: dict[str, Callable[[_Message], list[CanonicalRecord]]] = {
    "SENSOR_STATE": _sensor_state,
    "ACTUATOR_TARGET_STATE": _actuator_state,
    "ACTUATOR_HARDWARE_STATE": _actuator_state,
    "ACTUATOR_CURRENT_STATE": _actuator_state,
    "IT_STATE": _it_state,
    "FACTOR_TARGET_STATE": _factor_state,
    "FACTOR_CURRENT_STATE": _factor_state,
    "OBJECTIVE_STATE": _objective_state,
    "DATA_PROVIDER": _data_container,
    "NEW_DATA": _data_container,
    "ENTITY_MANAGEMENT": _entity_management,
}

MESSAGE_TYPES: tuple[str, ...] = tuple(_HANDLERS)
"""Every ``type`` the normalizer accepts: the ten documented ones plus ``NEW_DATA``."""


FAMILY = Family("hemis", parse)
"""The Hemis family for the registry (:mod:`pipeline.normalize`)."""

normalize = FAMILY.normalize
"""One frame -> records through the shared decoding step; ``[]`` for a control frame."""
