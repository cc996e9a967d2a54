"""ELEMENT IoT sockets: raw frames -> measurements and state events.

A frame is a JSON array of ``{"event": ..., "body": ...}`` (one event live, possibly several in
a replay); every event in it is normalized, in order. Documented events:

``reading_added`` (readings sockets)
    ``body.data`` is the device parser's output. Every numeric field becomes a
    :class:`~pipeline.models.Measurement`: ``metric`` = the field name (dotted path for nested
    objects, e.g. ``meter.volume``), ``entity`` = ``body.device_id``, unit from the field name
    where it is conventional (``*temperature`` °C, ``*humidity`` %, ``*voltage`` V, ``co2`` ppm,
    ...; else ``""``). Boolean and text fields are discrete states and become
    :class:`~pipeline.models.StateEvent` (``name`` = field path, ``value`` = lowercase text,
    ``previous=None``: readings carry no previous value). ``null`` and arrays are skipped.
    Event time: ``measured_at``, else ``inserted_at``.
``packet_added`` (packets sockets)
    Radio quality from ``body.meta``: ``radio.rssi`` (dBm) and ``radio.snr`` (dB), one per
    gateway in ``meta.gateway_stats`` (label ``gateway`` = ``router_id_hex``) and once more for
    top-level ``meta.rssi``/``meta.snr`` (other network types). Event time: ``transceived_at``,
    else ``inserted_at``. A packet without radio data gives nothing.

The text frame ``pong`` (the answer to a text ``ping``) and an empty array are control frames
(counted, no record). Events whose
``body.id`` the producer listed in ``meta["duplicates"]`` (already published before a
reconnect) are skipped. Times are ISO 8601 (a missing zone means UTC); numeric epoch times are
accepted too, seconds or milliseconds. Anything else malformed raises
:class:`~pipeline.errors.BadInputError` naming the event and field; no other exception escapes.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from typing import Any

from pipeline.errors import BadInputError
from pipeline.models import CanonicalRecord, Measurement, RawEnvelope, StateEvent
from pipeline.normalize.common import ControlFrame, Family
from pipeline.normalize.common import json_kind as _kind
from pipeline.normalize.common import quote as _quote

__all__ = ["EVENTS", "FAMILY", "IDENTITY_LABELS", "MAX_DEPTH", "normalize", "parse", "unit_of"]

#: Event names this normalizer understands.
EVENTS = ("reading_added", "packet_added")
#: Most keys a metric path may have below ``data``.
MAX_DEPTH = 8
#: Labels that name a series: the gateway a packet's radio figures were measured at.
IDENTITY_LABELS = ("gateway",)

_EXACT_UNITS = {
    "co2": "ppm",
    "light": "lx",
    "vdd": "mV",
    "rssi": "dBm",
    "snr": "dB",
    "pressure": "hPa",
}
_SUFFIX_UNITS = (("temperature", "°C"), ("humidity", "%"), ("voltage", "V"))
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_SECONDS_BELOW = 1e11
_MS_BELOW = 1e14


def unit_of(field: str) -> str:
    """Conventional unit of a parser field name (last path segment), or ``""``."""
    name = field.rsplit(".", 1)[-1].lower()
    if name in _EXACT_UNITS:
        return _EXACT_UNITS[name]
    for suffix, unit in _SUFFIX_UNITS:
        if name.endswith(suffix):
            return unit
    return ""


def _number(value: int | float) -> float | None:
    """The value as a finite float, or None (too large for a float)."""
    try:
        number = float(value)
    except OverflowError:
        return None
    return number if math.isfinite(number) else None


class _Event:
    """One event of a frame being normalized."""

    def __init__(self, envelope: RawEnvelope, index: int, name: str) -> None:
        self.envelope = envelope
        self.where = f"element {name} [{index}]"

    def fail(self, field: str, message: str) -> BadInputError:
        return BadInputError(f"{self.where}: {field}: {message}")

    def text_id(self, body: dict[str, Any], key: str) -> str:
        value = body.get(key)
        if not isinstance(value, str) or not value:
            if value is None:
                raise self.fail(f"body.{key}", "missing")
            if isinstance(value, str):
                raise self.fail(f"body.{key}", "empty")
            raise self.fail(f"body.{key}", f"must be a string, got {_kind(value)}")
        return value

    def time_ms(self, body: dict[str, Any], first: str, second: str) -> int:
        """Epoch ms of ``body[first]``, else of ``body[second]``."""
        for key in (first, second):
            value = body.get(key)
            if value is not None:
                return self._instant(value, f"body.{key}")
        raise self.fail(f"body.{first}", f"missing, and so is {second}")

    def _instant(self, value: object, field: str) -> int:
        if isinstance(value, str):
            try:
                instant = datetime.fromisoformat(value)
            except ValueError:
                raise self.fail(field, f"{_quote(value)} is not an ISO 8601 time") from None
            if instant.tzinfo is None:
                instant = instant.replace(tzinfo=UTC)
            epoch_ms = (instant - _EPOCH) // timedelta(milliseconds=1)
            if not 0 < epoch_ms < _MS_BELOW:
                raise self.fail(field, f"{_quote(value)} is out of range (1970 to 5138)")
            return epoch_ms
        if isinstance(value, int | float) and not isinstance(value, bool):
            if not 0 < value < _MS_BELOW:
                raise self.fail(field, f"{_quote(value)} is not an epoch time")
            return int(value * 1000) if value < _SECONDS_BELOW else int(value)
        raise self.fail(field, f"must be an ISO 8601 string, got {_kind(value)}")

    def measurement(
        self, entity: str, metric: str, value: float, ts_ms: int, labels: dict[str, str]
    ) -> Measurement:
        return Measurement(
            source=self.envelope.source,
            stream=self.envelope.stream,
            entity=entity,
            metric=metric,
            value=value,
            unit=unit_of(metric),
            ts_ms=ts_ms,
            labels=labels,
        )


def parse(envelope: RawEnvelope, frame: Any) -> list[CanonicalRecord]:
    """Turn one decoded ELEMENT socket frame into measurements and state events.

    Args:
        envelope: the raw envelope (for source, stream and ``meta["duplicates"]``).
        frame: the frame's JSON document.

    Returns:
        The records of every event in the frame, in order.

    Raises:
        BadInputError: the frame is not a JSON array of ``{event, body}`` objects, an event is
            unknown, or a field it needs is missing or malformed.
        ControlFrame: ``empty array``; ``duplicates`` (every event already published);
            ``nothing to measure`` (packets without radio data, readings of nulls only).
    """
    if not isinstance(frame, list):
        raise BadInputError(f"element frame: expected a JSON array of events, got {_kind(frame)}")
    listed = envelope.meta.get("duplicates")
    duplicates = {d for d in listed if isinstance(d, str)} if isinstance(listed, list) else set()
    if not frame:
        raise ControlFrame("empty array")
    out: list[CanonicalRecord] = []
    skipped = 0
    for index, item in enumerate(frame):
        if not isinstance(item, dict):
            raise BadInputError(
                f"element frame: [{index}]: expected an {{event, body}} object, got {_kind(item)}"
            )
        name = item.get("event")
        if name not in EVENTS:
            shown = "missing 'event'" if name is None else f"unknown event {_quote(name)}"
            raise BadInputError(
                f"element frame: [{index}]: {shown}; expected 'reading_added' or 'packet_added'"
            )
        event = _Event(envelope, index, str(name))
        body = item.get("body")
        if not isinstance(body, dict):
            shown = "missing" if body is None else f"must be an object, got {_kind(body)}"
            raise event.fail("body", shown)
        ident = body.get("id")
        if isinstance(ident, str) and ident in duplicates:
            skipped += 1
            continue
        if name == "reading_added":
            out += _reading(event, body)
        else:
            out += _packet(event, body)
    if not out:
        raise ControlFrame("duplicates" if skipped == len(frame) else "nothing to measure")
    return out


def _reading(event: _Event, body: dict[str, Any]) -> list[Measurement | StateEvent]:
    entity = event.text_id(body, "device_id")
    ts_ms = event.time_ms(body, "measured_at", "inserted_at")
    data = body.get("data")
    if not isinstance(data, dict):
        shown = "missing" if data is None else f"must be an object, got {_kind(data)}"
        raise event.fail("body.data", shown)
    out: list[Measurement | StateEvent] = []
    _collect(event, data, (), entity, ts_ms, out)
    return out


def _collect(
    event: _Event,
    node: dict[str, Any],
    path: tuple[str, ...],
    entity: str,
    ts_ms: int,
    out: list[Measurement | StateEvent],
) -> None:
    for key, value in node.items():
        name = ".".join((*path, key))
        if value is None or isinstance(value, list):
            continue
        if isinstance(value, dict):
            if len(path) + 1 >= MAX_DEPTH:
                raise event.fail(
                    "body.data", f"nests deeper than {MAX_DEPTH} levels at {_quote(name)}"
                )
            _collect(event, value, (*path, key), entity, ts_ms, out)
        elif isinstance(value, bool | str):
            text = ("true" if value else "false") if isinstance(value, bool) else value.lower()
            out.append(
                StateEvent(
                    source=event.envelope.source,
                    stream=event.envelope.stream,
                    entity=entity,
                    name=name,
                    value=text,
                    previous=None,
                    ts_ms=ts_ms,
                )
            )
        else:
            number = _number(value)
            if number is None:
                raise event.fail(f"body.data.{name}", f"{_quote(value)} is not a finite number")
            out.append(event.measurement(entity, name, number, ts_ms, {}))


def _packet(event: _Event, body: dict[str, Any]) -> list[Measurement | StateEvent]:
    entity = event.text_id(body, "device_id")
    ts_ms = event.time_ms(body, "transceived_at", "inserted_at")
    meta = body.get("meta")
    if meta is None:
        return []
    if not isinstance(meta, dict):
        raise event.fail("body.meta", f"must be an object, got {_kind(meta)}")
    out: list[Measurement | StateEvent] = []
    stats = meta.get("gateway_stats")
    if stats is not None and not isinstance(stats, list):
        raise event.fail("body.meta.gateway_stats", f"must be an array, got {_kind(stats)}")
    for number, gateway in enumerate(stats or []):
        where = f"body.meta.gateway_stats[{number}]"
        if not isinstance(gateway, dict):
            raise event.fail(where, f"must be an object, got {_kind(gateway)}")
        router = gateway.get("router_id_hex")
        labels = {"gateway": router} if isinstance(router, str) and router else {}
        out += _radio(event, gateway, where, entity, ts_ms, labels)
    out += _radio(event, meta, "body.meta", entity, ts_ms, {})
    return out


def _radio(
    event: _Event,
    node: dict[str, Any],
    where: str,
    entity: str,
    ts_ms: int,
    labels: dict[str, str],
) -> list[Measurement | StateEvent]:
    out: list[Measurement | StateEvent] = []
    for key in ("rssi", "snr"):
        value = node.get(key)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise event.fail(f"{where}.{key}", f"must be a number, got {_kind(value)}")
        number = _number(value)
        if number is None:
            raise event.fail(f"{where}.{key}", f"{_quote(value)} is not a finite number")
        out.append(event.measurement(entity, f"radio.{key}", number, ts_ms, dict(labels)))
    return out


FAMILY = Family("element", parse, control_texts={"pong": "pong"})
"""The ELEMENT family for the registry (:mod:`pipeline.normalize`)."""

normalize = FAMILY.normalize
"""One frame -> records through the shared decoding step; ``[]`` for a control frame."""
