"""Nobil real-time stream: raw frames -> connector and station state events.

Legacy frames (``{"type": ..., "data": ...}``) carry full states; what changed is found by
comparing with the previous state the producer put in ``meta["previous"]`` (see
:mod:`producers.sources.nobil` for its shape per frame type). Only changes become events:

=====================  =====================================================================
entity                 events (``name`` = value)
=====================  =====================================================================
``NOR_01333``          ``status`` = unknown | available | occupied | error   (station, -1..2)
``NOR_01333/0``        ``status`` = unknown | available | occupied          (connector, -1..1)
``NOR_01333/0``        ``error`` = ok | error                                (connector, 0/1)
=====================  =====================================================================

The connector number is its 0-based position in the ``connectors`` array (``status:raw`` uses
the same index). Per frame type:

* ``snapshot:init`` without ``meta["previous"]`` (the producer's first snapshot): every state,
  ``previous=None``. With it (a snapshot after a reconnect): only stations listed there, and of
  those only the states that differ from the listed previous state (``null`` = unknown).
* ``status:update``: the states that differ from ``meta["previous"]``; all of them, with
  ``previous=None``, when the previous station is unknown.
* ``status:raw``: the connector's ``status``/``error`` when they differ from the previous
  connector state, or both when it is unknown. A keep-alive that repeats a known state gives
  nothing.

Event time: a connector's ``timestamp`` (epoch ms; seconds are detected and scaled), or the
envelope's receipt time when it is ``-1`` (unknown). Exception, the producer's first snapshot
(no ``meta["previous"]``): its events carry the receipt time and the upstream change time as
annotation ``changed_at`` (ISO 8601 UTC). Why: a connector already in error when we connect
is news at first sight; stamped with its change time, an ``error`` rule would fire at a time
minutes or days before any data arrived (and a ``for: 5m`` would be met at once). A
station's status takes the latest known connector timestamp. A previous state that cannot be
read counts as unknown, never as an error: it only decides whether an event is emitted.

Enova frames (``{"nobilId", "evseUId", "status"}``) give one event: entity
``{nobilId}/{evseUId}``, name ``status``, value the lowercased status (``available``,
``charging``, ``outoforder``...), emitted unless it equals ``meta["previous"]``; time = receipt.

Anything malformed raises :class:`~pipeline.errors.BadInputError` naming the field.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pipeline.errors import BadInputError
from pipeline.models import CanonicalRecord, RawEnvelope, StateEvent
from pipeline.normalize.common import ControlFrame, Family
from pipeline.normalize.common import json_kind as _kind
from pipeline.normalize.common import quote as _quote

__all__ = [
    "CONNECTOR_ERROR",
    "CONNECTOR_STATUS",
    "ENOVA_STATUSES",
    "FAMILY",
    "STATION_STATUS",
    "normalize",
    "parse",
]

CONNECTOR_STATUS: dict[int, str] = {-1: "unknown", 0: "available", 1: "occupied"}
CONNECTOR_ERROR: dict[int, str] = {0: "ok", 1: "error"}
STATION_STATUS: dict[int, str] = {-1: "unknown", 0: "available", 1: "occupied", 2: "error"}
ENOVA_STATUSES: tuple[str, ...] = (
    "AVAILABLE",
    "BLOCKED",
    "CHARGING",
    "INOPERATIVE",
    "OUTOFORDER",
    "PLANNED",
    "REMOVED",
    "RESERVED",
    "UNKNOWN",
)
_ENOVA_VALUES = frozenset(s.lower() for s in ENOVA_STATUSES)
_TYPES = ("snapshot:init", "status:update", "status:raw")
# Timestamps below this are seconds, at or above it milliseconds (1e11 s is year 5138).
_SECONDS_BELOW = 1e11
_MS_BELOW = 1e14


@dataclass(frozen=True)
class _Connector:
    status: str
    error: str
    ts_ms: int | None


@dataclass(frozen=True)
class _Station:
    uuid: str
    status: str | None
    connectors: tuple[_Connector, ...]


@dataclass(frozen=True)
class _Previous:
    """A previous state as far as it can be read; ``None`` fields are unknown."""

    status: str | None
    connectors: tuple[tuple[str | None, str | None], ...]


class _Frame:
    """One frame being normalized: its envelope, for names, times and reasons."""

    def __init__(self, envelope: RawEnvelope, what: str) -> None:
        self.envelope = envelope
        self.what = what
        self.first_sight = False

    def fail(self, where: str, message: str) -> BadInputError:
        return BadInputError(f"nobil {self.what}: {where}: {message}" if where else message)

    def event(
        self,
        entity: str,
        name: str,
        value: str,
        previous: str | None,
        ts_ms: int | None,
        labels: dict[str, str],
    ) -> StateEvent:
        annotations: dict[str, str] = {}
        if ts_ms is not None and self.first_sight:
            # The producer's first snapshot: the state is news to us now, whenever it began.
            annotations["changed_at"] = _iso(ts_ms)
            ts_ms = None
        return StateEvent(
            source=self.envelope.source,
            stream=self.envelope.stream,
            entity=entity,
            name=name,
            value=value,
            previous=previous,
            ts_ms=self.envelope.received_at_ms if ts_ms is None else ts_ms,
            labels=labels,
            annotations=annotations,
        )

    # -------------------------------------------------------------- strict upstream fields

    def text_id(self, value: object, where: str) -> str:
        if not isinstance(value, str) or not value:
            if value is None:
                raise self.fail(where, "missing")
            if isinstance(value, str):
                raise self.fail(where, "empty")
            raise self.fail(where, f"must be a string, got {_kind(value)}")
        if "/" in value:
            raise self.fail(where, f"{_quote(value)} must not contain '/'")
        return value

    def code(self, value: object, table: dict[int, str], where: str, what: str) -> str:
        if isinstance(value, int) and not isinstance(value, bool) and value in table:
            return table[value]
        allowed = ", ".join(str(k) for k in table)
        if value is None:
            raise self.fail(where, f"missing; expected {what} ({allowed})")
        raise self.fail(where, f"{_quote(value)} is not {what} ({allowed})")

    def timestamp(self, value: object, where: str) -> int | None:
        if not isinstance(value, int | float) or isinstance(value, bool):
            if value is None:
                raise self.fail(where, "missing; expected epoch milliseconds or -1")
            raise self.fail(where, f"must be a number, got {_kind(value)}")
        if value == -1:
            return None
        if not math.isfinite(value) or not 0 < value < _MS_BELOW:
            raise self.fail(where, f"{_quote(value)} is not epoch milliseconds or -1")
        return int(value * 1000) if value < _SECONDS_BELOW else int(value)

    def connector(self, value: object, where: str) -> _Connector:
        if not isinstance(value, dict):
            raise self.fail(where, f"must be an object, got {_kind(value)}")
        return _Connector(
            status=self.code(
                value.get("status"), CONNECTOR_STATUS, f"{where}.status", "a connector status"
            ),
            error=self.code(value.get("error"), CONNECTOR_ERROR, f"{where}.error", "an error flag"),
            ts_ms=self.timestamp(value.get("timestamp"), f"{where}.timestamp"),
        )

    def station(self, value: object, where: str) -> _Station:
        if not isinstance(value, dict):
            raise self.fail(where, f"must be a station object, got {_kind(value)}")
        uuid = self.text_id(value.get("uuid"), f"{where}.uuid")
        status = None
        if "status" in value:  # the docs' snapshot sample leaves it out
            status = self.code(
                value["status"], STATION_STATUS, f"{where}.status", "a station status"
            )
        connectors = value.get("connectors")
        if not isinstance(connectors, list):
            if connectors is None:
                raise self.fail(f"{where}.connectors", "missing")
            raise self.fail(f"{where}.connectors", f"must be an array, got {_kind(connectors)}")
        return _Station(
            uuid=uuid,
            status=status,
            connectors=tuple(
                self.connector(c, f"{where}.connectors[{i}]") for i, c in enumerate(connectors)
            ),
        )

    # -------------------------------------------------------------- events

    def station_events(self, station: _Station, previous: _Previous | None) -> list[StateEvent]:
        """Events for what differs from ``previous`` (everything when it is None)."""
        out: list[StateEvent] = []
        known = [c.ts_ms for c in station.connectors if c.ts_ms is not None]
        if station.status is not None:
            before = previous.status if previous else None
            if before is None or before != station.status:
                ts = max(known) if known else None
                labels = {"station": station.uuid}
                out.append(self.event(station.uuid, "status", station.status, before, ts, labels))
        for index, connector in enumerate(station.connectors):
            old: tuple[str | None, str | None] = (None, None)
            if previous is not None and index < len(previous.connectors):
                old = previous.connectors[index]
            out += self.connector_events(station.uuid, index, connector, old)
        return out

    def connector_events(
        self,
        uuid: str,
        index: int,
        connector: _Connector,
        old: tuple[str | None, str | None],
    ) -> list[StateEvent]:
        out: list[StateEvent] = []
        entity = f"{uuid}/{index}"
        for name, value, before in (
            ("status", connector.status, old[0]),
            ("error", connector.error, old[1]),
        ):
            if before is None or before != value:
                labels = {"station": uuid, "connector": str(index)}
                out.append(self.event(entity, name, value, before, connector.ts_ms, labels))
        return out


# ------------------------------------------------------------------ lenient previous state


def _lenient(value: object, table: dict[int, str]) -> str | None:
    if isinstance(value, int) and not isinstance(value, bool):
        return table.get(value)
    return None


def _previous_connector(value: object) -> tuple[str | None, str | None]:
    if not isinstance(value, dict):
        return (None, None)
    return (
        _lenient(value.get("status"), CONNECTOR_STATUS),
        _lenient(value.get("error"), CONNECTOR_ERROR),
    )


def _previous_station(value: object) -> _Previous | None:
    if not isinstance(value, dict):
        return None
    connectors = value.get("connectors")
    items = connectors if isinstance(connectors, list) else []
    return _Previous(
        status=_lenient(value.get("status"), STATION_STATUS),
        connectors=tuple(_previous_connector(c) for c in items),
    )


# ------------------------------------------------------------------ entry point


def _iso(ms: int) -> str:
    """ISO 8601 UTC text of epoch ms (``2026-01-02T03:04:05Z``)."""
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse(envelope: RawEnvelope, frame: Any) -> list[CanonicalRecord]:
    """Turn one decoded Nobil frame (legacy or Enova) into the state changes it carries.

    Args:
        envelope: the raw envelope; ``payload`` is the frame text exactly as received and
            ``meta["previous"]`` the producer's previous state, when it has one.

    Returns:
        One :class:`~pipeline.models.StateEvent` per changed (or, when the previous state is
        unknown, per reported) state.

    Raises:
        BadInputError: the frame is not JSON, not an object, of an unknown type, or a field is
            missing or out of its documented range; the reason names the field.
        ControlFrame: ``no change``: the frame repeats known states.
    """
    if not isinstance(frame, dict):
        raise BadInputError(f"nobil frame: expected a JSON object, got {_kind(frame)}")
    if "type" in frame:
        return _unchanged_is_control(_legacy(envelope, frame))
    if "nobilId" in frame:
        return _unchanged_is_control(_enova(envelope, frame))
    raise BadInputError(
        "nobil frame: neither a legacy message ('type') nor an Enova status ('nobilId')"
    )


def _unchanged_is_control(events: list[StateEvent]) -> list[CanonicalRecord]:
    if not events:
        raise ControlFrame("no change")
    return list(events)


def _legacy(envelope: RawEnvelope, frame: dict[str, Any]) -> list[StateEvent]:
    kind = frame["type"]
    if kind not in _TYPES:
        raise BadInputError(
            f"nobil frame: unknown type {_quote(kind)}; expected 'snapshot:init', "
            "'status:update' or 'status:raw'"
        )
    this = _Frame(envelope, str(kind))
    if "data" not in frame:
        raise this.fail("data", "missing")
    data = frame["data"]
    meta = envelope.meta
    if kind == "snapshot:init":
        return _snapshot(this, data, meta)
    if kind == "status:update":
        station = this.station(data, "data")
        return this.station_events(station, _previous_station(meta.get("previous")))
    return _raw(this, data, meta)


def _snapshot(this: _Frame, data: object, meta: dict[str, Any]) -> list[StateEvent]:
    if not isinstance(data, list):
        raise this.fail("data", f"must be an array of stations, got {_kind(data)}")
    stations = [this.station(s, f"data[{i}]") for i, s in enumerate(data)]
    if "previous" not in meta:  # the producer's first snapshot: every state is new
        this.first_sight = True
        return [e for s in stations for e in this.station_events(s, None)]
    changed = meta["previous"]
    if not isinstance(changed, dict):
        raise this.fail("meta.previous", f"must map station uuids to states, got {_kind(changed)}")
    out: list[StateEvent] = []
    for station in stations:
        if station.uuid in changed:
            out += this.station_events(station, _previous_station(changed[station.uuid]))
    return out


def _raw(this: _Frame, data: object, meta: dict[str, Any]) -> list[StateEvent]:
    if not isinstance(data, dict):
        raise this.fail("data", f"must be a connector object, got {_kind(data)}")
    uuid = this.text_id(data.get("uuid"), "data.uuid")
    index = data.get("connector")
    if not isinstance(index, int) or isinstance(index, bool) or index < 0:
        if index is None:
            raise this.fail("data.connector", "missing")
        raise this.fail("data.connector", f"{_quote(index)} is not a connector index (0, 1, ...)")
    connector = this.connector(data, "data")
    return this.connector_events(uuid, index, connector, _previous_connector(meta.get("previous")))


def _enova(envelope: RawEnvelope, frame: dict[str, Any]) -> list[StateEvent]:
    this = _Frame(envelope, "enova status")
    station = this.text_id(frame["nobilId"], "nobilId")
    evse = this.text_id(frame.get("evseUId"), "evseUId")
    status = frame.get("status")
    if not isinstance(status, str) or status.lower() not in _ENOVA_VALUES:
        if status is None:
            raise this.fail("status", "missing")
        raise this.fail("status", f"{_quote(status)} is not one of {', '.join(ENOVA_STATUSES)}")
    value = status.lower()
    before = envelope.meta.get("previous")
    previous = before.lower() if isinstance(before, str) else None
    if previous == value:
        return []
    labels = {"station": station, "evse": evse}
    return [this.event(f"{station}/{evse}", "status", value, previous, None, labels)]


FAMILY = Family("nobil", parse)
"""The Nobil family for the registry (:mod:`pipeline.normalize`)."""

normalize = FAMILY.normalize
"""One frame -> records through the shared decoding step; ``[]`` for a control frame."""
