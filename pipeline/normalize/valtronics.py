"""Valtronics WebSocket frames (documented protocol and server variant) -> canonical records.

Every documented server-to-client message type, in both dialects (upstreams.md §3):

======================================  =====================================================
frame                                   records
======================================  =====================================================
``telemetry_update`` with ``telemetry`` one :class:`Measurement` per key of ``telemetry``
(doc: ``{"temperature": {"value",      (metric = the key, e.g. ``temperature``)
"unit", "timestamp"}, ...}``)
``telemetry_update`` with ``metric``    one Measurement (``metric``, ``value``, ``unit``)
(API overview's flat form)
``telemetry_update`` with ``data``      one Measurement (``data.metric_name``,
(server)                                ``data.metric_value``, ``data.unit``)
``alert`` (doc: flat; server: the       :class:`StateEvent` ``alert.<alert_type>`` (type
fields inside ``alert``)                lowercased; ``alert.unknown`` when the frame has none,
                                        as the server defaults), value = severity,
                                        annotations ``title``/``message``/``alert_id``/
                                        ``device_name``
``device_status_update`` (doc)          StateEvent ``status`` = ``new_status``, previous =
                                        ``old_status``, annotation ``reason``
``device_update`` (server)              ``updates.status`` -> StateEvent ``status``;
                                        ``updates.command_response.status`` -> StateEvent
                                        ``command.status`` (annotation ``command_id``); a
                                        device heartbeat or a bare ``last_seen`` -> control
``device_status`` (server)              StateEvent ``status``
``system_status_update`` (doc)          one Measurement per key of ``metrics``, entity
                                        ``system``
``heartbeat``, ``pong``,                control frames: keepalive, session control and errors about
``auth_response``,                      our own requests hold nothing to measure (the
``subscription_confirmed``,             producer acts on them and logs errors)
``unsubscription_confirmed``,
``system_notification``, errors
(``{"error": "..."}`` and
``{"type": "error", ...}``)
======================================  =====================================================

Entity: the device id as text (``"1"``); ``system`` for server metrics. Units come from the
frame; when it has none (``null`` or missing) from :data:`UNITS` by metric name, else ``""``.
States are lowercase text; ``previous`` is only known for ``device_status_update``. No
Valtronics record carries identity labels: the device id and the metric or state name name
the series, so ``status`` seen through ``device_status_update``, ``device_update`` and
``device_status`` (any ``reason``) is one series.

Event time: the most specific upstream timestamp (a telemetry item's own, the server's
device-side ``data.timestamp``, then the frame's), as ISO 8601 (``Z``, an offset, or naive,
which the server sends and which means UTC) or epoch numbers (seconds below 1e11, else
milliseconds); the envelope's ``received_at_ms`` when the frame has none.

Anything malformed raises :class:`~pipeline.errors.BadInputError` with a reason that never
echoes more than a short fragment of the frame. No other exception escapes.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from pipeline.errors import BadInputError
from pipeline.models import CanonicalRecord, Measurement, RawEnvelope, StateEvent
from pipeline.normalize.common import ControlFrame, Family
from pipeline.normalize.common import json_kind as _kind
from pipeline.normalize.common import quote as _quote

__all__ = ["FAMILY", "IGNORED_TYPES", "SYSTEM_ENTITY", "UNITS", "normalize", "parse"]

SYSTEM_ENTITY = "system"
"""Entity of ``system_status_update`` metrics."""

UNITS: dict[str, str] = {
    "temperature": "°C",
    "humidity": "%",
    "power": "W",
    "voltage": "V",
    "current": "A",
    "energy": "kWh",
    "pressure": "hPa",
    "cpu_usage": "%",
    "memory_usage": "%",
    "disk_usage": "%",
}
"""Unit by metric name, used when the frame gives none."""

IGNORED_TYPES = frozenset(
    {
        "heartbeat",
        "pong",
        "auth_response",
        "subscription_confirmed",
        "unsubscription_confirmed",
        "system_notification",
        "error",
    }
)
"""Documented types that hold nothing to measure: valid, normalized to ``[]``."""

_LABEL_MAX = 200
_SECONDS_BELOW = 1e11  # epoch numbers below this are seconds (until year 5138), else ms
_MAX_MS = 253_402_300_799_999  # 9999-12-31T23:59:59.999Z

Record = Measurement | StateEvent


class _Frame:
    """One parsed frame plus the envelope, with typed accessors that raise precise reasons."""

    def __init__(self, envelope: RawEnvelope, document: dict[str, Any], frame_type: str) -> None:
        self.envelope = envelope
        self.document = document
        self.where = f"valtronics {frame_type} frame"

    def fail(self, problem: str) -> BadInputError:
        return BadInputError(f"{self.where}: {problem}")

    def obj(self, parent: dict[str, Any], key: str, path: str) -> dict[str, Any]:
        value = parent.get(key)
        if isinstance(value, dict):
            return value
        if key not in parent:
            raise self.fail(f"missing {_quote(path)}")
        raise self.fail(f"{_quote(path)} must be an object, got {_kind(value)}")

    def text(self, parent: dict[str, Any], key: str, path: str) -> str:
        value = parent.get(key)
        if isinstance(value, str) and value.strip():
            return value
        if key not in parent:
            raise self.fail(f"missing {_quote(path)}")
        if isinstance(value, str):
            raise self.fail(f"empty {_quote(path)}")
        raise self.fail(f"{_quote(path)} must be a string, got {_kind(value)}")

    def optional_text(self, parent: dict[str, Any], key: str, path: str) -> str | None:
        if parent.get(key) is None:
            return None
        return self.text(parent, key, path)

    def entity(self, parent: dict[str, Any], path: str) -> str:
        value = parent.get("device_id")
        if isinstance(value, int) and not isinstance(value, bool):
            return str(value)
        if isinstance(value, str) and value.strip():
            return value
        if "device_id" not in parent:
            raise self.fail(f"missing {_quote(path)}")
        if isinstance(value, str):
            raise self.fail(f"empty {_quote(path)}")
        raise self.fail(f"{_quote(path)} must be an integer or string, got {_kind(value)}")

    def number(self, value: object, path: str) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self.fail(f"{_quote(path)} must be a number, got {_kind(value)}")
        number = float(value)
        if not math.isfinite(number):
            raise self.fail(f"{_quote(path)} is not a finite number")
        return number

    def unit(self, parent: dict[str, Any], key: str, path: str, metric: str) -> str:
        value = parent.get(key)
        if value is None or value == "":
            return UNITS.get(metric, "")
        if not isinstance(value, str):
            raise self.fail(f"{_quote(path)} must be a string, got {_kind(value)}")
        return value

    def time_ms(self, *candidates: tuple[dict[str, Any], str]) -> int:
        """The first present timestamp among ``(parent, path)`` candidates, else receipt time."""
        for parent, path in candidates:
            value = parent.get("timestamp")
            if value is not None:
                return self._parse_time(value, path)
        return self.envelope.received_at_ms

    def _parse_time(self, value: object, path: str) -> int:
        if isinstance(value, str):
            try:
                stamp = datetime.fromisoformat(value)
            except ValueError:
                raise self.fail(
                    f"{_quote(path)} is not an ISO 8601 time: {_quote(value)}"
                ) from None
            if stamp.tzinfo is None:
                stamp = stamp.replace(tzinfo=UTC)  # the server's utcnow().isoformat()
            try:
                ms = math.floor(stamp.timestamp() * 1000)
            except (OverflowError, ValueError, OSError):
                raise self.fail(f"{_quote(path)} is out of range: {_quote(value)}") from None
        elif isinstance(value, int | float) and not isinstance(value, bool):
            number = float(value)
            ms = math.floor(number * 1000 if abs(number) < _SECONDS_BELOW else number)
        else:
            raise self.fail(
                f"{_quote(path)} must be an ISO 8601 string or a number, got {_kind(value)}"
            )
        if not 0 <= ms <= _MAX_MS:
            raise self.fail(f"{_quote(path)} is out of range: {_quote(value)}")
        return ms

    def measurement(
        self, entity: str, metric: str, value: float, unit: str, ts_ms: int
    ) -> Measurement:
        return Measurement(
            source=self.envelope.source,
            stream=self.envelope.stream,
            entity=entity,
            metric=metric,
            value=value,
            unit=unit,
            ts_ms=ts_ms,
        )

    def state(
        self,
        entity: str,
        name: str,
        value: str,
        previous: str | None,
        ts_ms: int,
        annotations: dict[str, str] | None = None,
    ) -> StateEvent:
        return StateEvent(
            source=self.envelope.source,
            stream=self.envelope.stream,
            entity=entity,
            name=name,
            value=value.strip().lower(),
            previous=None if previous is None else previous.strip().lower(),
            ts_ms=ts_ms,
            annotations=annotations or {},
        )


def parse(envelope: RawEnvelope, document: Any) -> list[CanonicalRecord]:
    """Turn one decoded Valtronics frame into measurements and state events.

    Returns:
        The records of a data frame (see the module docstring).

    Raises:
        BadInputError: not JSON, not an object, an unknown or missing ``type`` (a bare
            ``{"error": ...}`` is fine), or a documented frame missing or mistyping a field
            it needs.
        ControlFrame: documented frames that hold no record (kind = the frame type).
    """
    if not isinstance(document, dict):
        raise BadInputError(f"valtronics frame: expected a JSON object, got {_kind(document)}")
    frame_type = document.get("type")
    if frame_type is None:
        if isinstance(document.get("error"), str):
            raise ControlFrame("error")  # the server's bare error frame
        raise BadInputError("valtronics frame: missing 'type'")
    if not isinstance(frame_type, str):
        raise BadInputError(f"valtronics frame: 'type' must be a string, got {_kind(frame_type)}")
    handler = _HANDLERS.get(frame_type)
    if handler is not None:
        return handler(_Frame(envelope, document, frame_type))
    if frame_type in IGNORED_TYPES:
        raise ControlFrame(frame_type)
    raise BadInputError(f"valtronics frame: unknown type {_quote(frame_type)}")


def _telemetry(frame: _Frame) -> list[Record]:
    doc = frame.document
    entity = frame.entity(doc, "device_id")
    if "telemetry" in doc:
        items = frame.obj(doc, "telemetry", "telemetry")
        if not items:
            raise frame.fail("'telemetry' holds no metric")
        out: list[Record] = []
        for metric, item in items.items():
            path = f"telemetry.{metric}"
            if not metric.strip():
                raise frame.fail("'telemetry' has an empty metric name")
            if not isinstance(item, dict):
                raise frame.fail(f"{_quote(path)} must be an object, got {_kind(item)}")
            value = frame.number(item.get("value"), f"{path}.value")
            unit = frame.unit(item, "unit", f"{path}.unit", metric)
            ts_ms = frame.time_ms((item, f"{path}.timestamp"), (doc, "timestamp"))
            out.append(frame.measurement(entity, metric, value, unit, ts_ms))
        return out
    if "data" in doc:
        data = frame.obj(doc, "data", "data")
        metric = frame.text(data, "metric_name", "data.metric_name")
        value = frame.number(data.get("metric_value"), "data.metric_value")
        unit = frame.unit(data, "unit", "data.unit", metric)
        ts_ms = frame.time_ms((data, "data.timestamp"), (doc, "timestamp"))
        return [frame.measurement(entity, metric, value, unit, ts_ms)]
    if "metric" in doc:
        metric = frame.text(doc, "metric", "metric")
        value = frame.number(doc.get("value"), "value")
        unit = frame.unit(doc, "unit", "unit", metric)
        return [frame.measurement(entity, metric, value, unit, frame.time_ms((doc, "timestamp")))]
    raise frame.fail("expected 'telemetry', 'data' or 'metric'")


def _alert(frame: _Frame) -> list[Record]:
    doc = frame.document
    if "alert" in doc:  # server: the fields are inside "alert"
        body = frame.obj(doc, "alert", "alert")
        prefix = "alert."
        ts_ms = frame.time_ms((body, "alert.timestamp"), (doc, "timestamp"))
    else:
        body, prefix = doc, ""
        ts_ms = frame.time_ms((doc, "timestamp"))
    entity = frame.entity(body, f"{prefix}device_id")
    severity = frame.text(body, "severity", f"{prefix}severity")
    alert_type = frame.optional_text(body, "alert_type", f"{prefix}alert_type") or "unknown"
    annotations: dict[str, str] = {}
    for key in ("title", "message", "device_name"):
        value = body.get(key)
        if isinstance(value, str) and value:
            annotations[key] = value[:_LABEL_MAX]
    alert_id = body.get("alert_id")
    if isinstance(alert_id, int | str) and not isinstance(alert_id, bool):
        annotations["alert_id"] = str(alert_id)
    name = f"alert.{alert_type.strip().lower()}"
    return [frame.state(entity, name, severity, None, ts_ms, annotations)]


def _device_status_update(frame: _Frame) -> list[Record]:
    doc = frame.document
    entity = frame.entity(doc, "device_id")
    new = frame.text(doc, "new_status", "new_status")
    old = frame.optional_text(doc, "old_status", "old_status")
    annotations = {}
    reason = doc.get("reason")
    if isinstance(reason, str) and reason:
        annotations["reason"] = reason[:_LABEL_MAX]
    ts_ms = frame.time_ms((doc, "timestamp"))
    return [frame.state(entity, "status", new, old, ts_ms, annotations)]


def _device_update(frame: _Frame) -> list[Record]:
    doc = frame.document
    entity = frame.entity(doc, "device_id")
    updates = frame.obj(doc, "updates", "updates")
    ts_ms = frame.time_ms((doc, "timestamp"))
    out: list[Record] = []
    if updates.get("status") is not None:
        status = frame.text(updates, "status", "updates.status")
        out.append(frame.state(entity, "status", status, None, ts_ms))
    if updates.get("command_response") is not None:
        response = frame.obj(updates, "command_response", "updates.command_response")
        status = frame.text(response, "status", "updates.command_response.status")
        annotations = {}
        command_id = response.get("command_id")
        if isinstance(command_id, int | str) and not isinstance(command_id, bool):
            annotations["command_id"] = str(command_id)
        out.append(frame.state(entity, "command.status", status, None, ts_ms, annotations))
    if not out:
        raise ControlFrame("device heartbeat")  # or a bare last_seen: nothing to record
    return out


def _device_status(frame: _Frame) -> list[Record]:
    doc = frame.document
    entity = frame.entity(doc, "device_id")
    status = frame.text(doc, "status", "status")
    return [frame.state(entity, "status", status, None, frame.time_ms((doc, "timestamp")))]


def _system_status_update(frame: _Frame) -> list[Record]:
    doc = frame.document
    metrics = frame.obj(doc, "metrics", "metrics")
    if not metrics:
        raise frame.fail("'metrics' holds no metric")
    ts_ms = frame.time_ms((doc, "timestamp"))
    out: list[Record] = []
    for metric, value in metrics.items():
        if not metric.strip():
            raise frame.fail("'metrics' has an empty metric name")
        number = frame.number(value, f"metrics.{metric}")
        out.append(frame.measurement(SYSTEM_ENTITY, metric, number, UNITS.get(metric, ""), ts_ms))
    return out


_HANDLERS: dict[str, Callable[[_Frame], list[Record]]] = {
    "telemetry_update": _telemetry,
    "alert": _alert,
    "device_status_update": _device_status_update,
    "device_update": _device_update,
    "device_status": _device_status,
    "system_status_update": _system_status_update,
}


FAMILY = Family("valtronics", parse)
"""The Valtronics family for the registry (:mod:`pipeline.normalize`)."""

normalize = FAMILY.normalize
"""One frame -> records through the shared decoding step; ``[]`` for a control frame."""
