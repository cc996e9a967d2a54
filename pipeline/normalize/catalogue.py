"""The record catalogue: what each normalizer emits, declared next to the normalizers.

Per family: the entity, metric names (with units), state names (with their values), identity
labels, annotations and control frames. Names may hold ``*`` for a segment the upstream
decides (``sensor.*`` is ``sensor.`` plus a Hemis ``factorId``); a family whose upstream
defines names freely (ELEMENT parser fields, Valtronics telemetry keys) lists the documented
ones and says so in ``open_names``.

Two users: ``streamwarden rules check`` warns about a rule whose source, metric, state or
labels no record can carry (:mod:`pipeline.rules.catalogue`), and ``docs/records.md`` is
generated from it (``python -m pipeline.normalize.catalogue > docs/records.md``; a test keeps
it in step), so the reference and the check cannot disagree.

The engine also reads :data:`CATALOGUE` once per alert entry written before identity labels
existed, to tell its identity labels from its annotations (see :mod:`pipeline.rules.engine`).
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field

from pipeline.normalize import aliunid, element, nobil, valtronics

__all__ = [
    "CATALOGUE",
    "FamilyCatalogue",
    "Name",
    "main",
    "records_markdown",
]


@dataclass(frozen=True)
class Name:
    """One metric or state name a family emits.

    Attributes:
        name: exact, or with ``*`` for a segment the upstream decides.
        unit: a metric's unit (``""`` when it has none or it varies).
        values: a state's values; empty when they are free text.
        note: what it is.
    """

    name: str
    unit: str = ""
    values: tuple[str, ...] = ()
    note: str = ""

    def matches(self, text: str) -> bool:
        """Whether the rule's exact name ``text`` is this name (``*``: any text)."""
        return fnmatch.fnmatchcase(text, self.name) if "*" in self.name else text == self.name


@dataclass(frozen=True)
class FamilyCatalogue:
    """What one family emits (see the module docstring)."""

    source: str
    entity: str
    metrics: tuple[Name, ...] = ()
    states: tuple[Name, ...] = ()
    labels: dict[str, str] = field(default_factory=dict)
    annotations: dict[str, str] = field(default_factory=dict)
    control_frames: tuple[str, ...] = ()
    open_names: str = ""

    def metric(self, text: str) -> Name | None:
        return next((n for n in self.metrics if n.matches(text)), None)

    def state(self, text: str) -> Name | None:
        return next((n for n in self.states if n.matches(text)), None)


def _aliunid() -> FamilyCatalogue:
    groups = ("sys", "l1", "l2", "l3")
    metrics = tuple(
        Name(f"{group}.{key}", unit, note="total" if group == "sys" else f"phase {group}")
        for group in groups
        for key, unit in aliunid.UNITS.items()
        if not (group != "sys" and key in {"Hz", "kvarh", "kvarh+", "kvarh-", "kWh"})
    )
    return FamilyCatalogue(
        source="aliunid",
        entity="the measuring point UUID (frame ``id``)",
        metrics=metrics,
        labels={"phase": "the phase of an ``l1``/``l2``/``l3`` block (``R``, ``S``, ``T``)"},
        annotations={"*": "any other string field next to the numbers"},
        control_frames=("structure",),
        open_names="every numeric leaf of ``data`` becomes a metric named by its dotted key "
        "path; the names listed are the documented ones and those of the per-phase schema.",
    )


def _nobil() -> FamilyCatalogue:
    station = tuple(nobil.STATION_STATUS.values())
    connector = tuple(nobil.CONNECTOR_STATUS.values())
    enova = tuple(s.lower() for s in nobil.ENOVA_STATUSES)
    statuses = tuple(dict.fromkeys((*station, *connector, *enova)))
    return FamilyCatalogue(
        source="nobil",
        entity="a station ``NOR_01333``, a connector ``NOR_01333/0`` (0-based index), or an "
        "Enova EVSE ``<nobilId>/<evseUId>``",
        states=(
            Name(
                "status",
                values=statuses,
                note=f"station: {', '.join(station)}; connector: {', '.join(connector)}; "
                f"Enova EVSE: {', '.join(enova)}",
            ),
            Name("error", values=tuple(nobil.CONNECTOR_ERROR.values()), note="connector"),
        ),
        labels={
            "station": "the station uuid",
            "connector": "the connector index (connector events)",
            "evse": "the Enova EVSE id",
        },
        annotations={
            "changed_at": "first snapshot only: the upstream change time (ISO 8601 UTC); the "
            "event itself carries the time the state was first seen"
        },
        control_frames=("no change",),
    )


def _element() -> FamilyCatalogue:
    fields = (
        "air_temperature",
        "air_humidity",
        "battery_voltage",
        "temperature",
        "humidity",
        "co2",
        "light",
        "motion",
        "pressure",
        "vdd",
        "device_id",
        "protocol_version",
    )
    metrics = (
        Name("radio.rssi", element.unit_of("rssi"), note="packet radio level, per gateway"),
        Name("radio.snr", element.unit_of("snr"), note="packet signal/noise, per gateway"),
        *(Name(f, element.unit_of(f), note="reading field") for f in fields),
    )
    return FamilyCatalogue(
        source="element",
        entity="the device id (``body.device_id``)",
        metrics=metrics,
        states=(Name("*", note="a boolean or text reading field, named by its path"),),
        labels={"gateway": "the gateway (``router_id_hex``) of a packet's radio figures"},
        control_frames=("pong", "empty array", "duplicates", "nothing to measure"),
        open_names="readings carry the device parser's fields, which the upstream does not "
        "fix: numbers become metrics, booleans and text become states named by the field "
        "path; the names listed are the documented ones and those of common parsers.",
    )


def _valtronics() -> FamilyCatalogue:
    return FamilyCatalogue(
        source="valtronics",
        entity="the device id as text; ``system`` for server metrics",
        metrics=(
            *(
                Name(metric, unit, note="server metric" if "usage" in metric else "telemetry")
                for metric, unit in valtronics.UNITS.items()
            ),
            Name("active_connections", note="server metric"),
        ),
        states=(
            Name(
                "status",
                note="device status (online, offline, ...), from any of the three status messages",
            ),
            Name("command.status", note="a command's status"),
            Name(
                "alert.*",
                values=("info", "warning", "critical"),
                note="an alert of a type "
                "(``alert.threshold``, ``alert.unknown``...), valued by its severity",
            ),
        ),
        annotations={
            "title": "alert title",
            "message": "alert message",
            "alert_id": "alert id",
            "device_name": "device name (alerts)",
            "reason": "why a device status changed",
            "command_id": "the command a status is about",
        },
        control_frames=(*sorted(valtronics.IGNORED_TYPES), "device heartbeat"),
        open_names="telemetry keys are the device's own; the names listed are the documented ones.",
    )


def _hemis() -> FamilyCatalogue:
    composite = {
        "o": ("ok", "partial", "ko", "unknown"),
        "p": ("ok", "in_progres", "ko", "unknown", "not_needed"),
        "r": ("ok", "ko", "rescue", "unknown"),
    }
    return FamilyCatalogue(
        source="hemis",
        entity="``sensorId``/``itId``/``actuatorId``/``zoneId``/``objectiveId``/"
        "``entityId``/DataContainer ``sourceId``, by message type",
        metrics=(
            Name(
                "sensor.*",
                note="SENSOR_STATE reading by ``factorId`` (``sensor.TMP`` in °C), "
                "and a sensor DataContainer's VALUENB",
            ),
            *(
                Name(f"actuator.*.{s}", note=f"ACTUATOR_{s.upper()}_STATE")
                for s in ("target", "hardware", "current")
            ),
            *(
                Name(f"factor.*.{s}", note=f"FACTOR_{s.upper()}_STATE, entity the zone")
                for s in ("target", "current")
            ),
            Name(
                "provider.*",
                note="DATA_PROVIDER/NEW_DATA column: "
                "``provider.<sourceGroup>[.<customPersistenceId>].<COLUMN>``",
            ),
        ),
        states=(
            *(
                Name(f"sensor.{k}", values=v, note="SENSOR_STATE composite")
                for k, v in composite.items()
            ),
            *(Name(f"it.{k}", values=v, note="IT_STATE") for k, v in composite.items()),
            Name("objective.executable", values=("true", "false"), note="OBJECTIVE_STATE"),
            Name("management", values=("create", "update", "delete"), note="ENTITY_MANAGEMENT"),
            Name("sensor.*", note="SENSOR_STATE with a boolean or text value"),
        ),
        annotations={
            "type": "the message type (``NEW_DATA``, ``DATA_PROVIDER``, ``SENSOR_STATE``...)",
            "zoneId": "zone",
            "itId": "object",
            "factorId": "factor",
            "sourceNature": "DataContainer source nature (``SEN``, ``SENSOR``...)",
            "measurement": "DataContainer measurement",
            "cause": "cause of a composite state",
            "entityType": "ENTITY_MANAGEMENT entity type",
        },
        control_frames=("no data points",),
    )


CATALOGUE: dict[str, FamilyCatalogue] = {
    c.source: c for c in (_aliunid(), _nobil(), _element(), _valtronics(), _hemis())
}
"""Every family's catalogue, keyed by source, in registry order."""


def _names(items: tuple[Name, ...], kind: str) -> list[str]:
    if not items:
        return [f"No {kind}.", ""]
    if kind == "metrics":
        out = ["| metric | unit | what |", "|---|---|---|"]
        out += [f"| `{n.name}` | {n.unit or '-'} | {n.note} |" for n in items]
    else:
        out = ["| state | values | what |", "|---|---|---|"]
        out += [
            f"| `{n.name}` | {', '.join(f'`{v}`' for v in n.values) or 'text'} | {n.note} |"
            for n in items
        ]
    return [*out, ""]


def _keys(keys: dict[str, str], kind: str) -> list[str]:
    if not keys:
        return [f"No {kind}.", ""]
    return [*(f"- `{k}`: {v}" for k, v in keys.items()), ""]


def records_markdown() -> str:
    """The reference page ``docs/records.md``."""
    lines = [
        "# Record catalogue",
        "",
        "Generated by `python -m pipeline.normalize.catalogue > docs/records.md` from",
        "`pipeline/normalize/catalogue.py`; do not edit (a test keeps it in step).",
        "",
        "Every record has a `source`, `stream`, `entity`, `ts_ms`, identity `labels` and",
        "`annotations`. **Labels** are stable, low-cardinality dimensions that name a series",
        "together with the entity and metric or state name: only they enter an alert's",
        "fingerprint, `match.labels`, routing matchers, silences and grouping (a rule may",
        "narrow them with `identity:`). **Annotations** are descriptive (names, reasons, ids,",
        "message types): they reach templates (`annotations`) and never split an alert.",
        "A `*` in a name stands for a part the upstream decides.",
        "",
        "Every frame ends as records, as a counted *control frame* (no record, nothing",
        "wrong), or as a dead letter with its reason.",
        "",
        "| family | metrics | states | labels | annotations | control frames |",
        "|---|---|---|---|---|---|",
    ]
    for c in CATALOGUE.values():
        lines.append(
            f"| {c.source} | {len(c.metrics)} | {len(c.states)} | {len(c.labels)} | "
            f"{len(c.annotations)} | {len(c.control_frames)} |"
        )
    lines.append("")
    for c in CATALOGUE.values():
        lines += [f"## {c.source}", "", f"Entity: {c.entity}.", ""]
        if c.open_names:
            lines += [f"Open names: {c.open_names}", ""]
        lines += ["### Metrics", "", *_names(c.metrics, "metrics")]
        lines += ["### States", "", *_names(c.states, "states")]
        lines += ["### Identity labels", "", *_keys(c.labels, "identity labels")]
        lines += ["### Annotations", "", *_keys(c.annotations, "annotations")]
        frames = ", ".join(f"`{f}`" for f in c.control_frames) or "none"
        lines += ["### Control frames", "", f"{frames}.", ""]
    lines += [
        "## Decisions",
        "",
        "- **Nobil, a connector already in error in the first snapshot** (the producer's",
        "  first `snapshot:init`, without `meta.previous`): its events carry the time the",
        "  state was first seen (the envelope's receipt time), and the upstream change time",
        "  as annotation `changed_at`. An alert fires at first sight, not at a change time",
        "  minutes or days before any data arrived (where a `for:` would already be met);",
        "  templates can still say since when: `{{ annotations.changed_at }}`.",
        "- **Hemis, one sensor through several message types**: DATA_PROVIDER and NEW_DATA,",
        "  `sourceNature` SEN or SENSOR, are annotations, so they never split a series; a",
        "  sensor DataContainer's `VALUENB` is also emitted as `sensor.<sourceGroup>`, the",
        "  metric a SENSOR_STATE of the same sensor gives.",
        "- **Valtronics, a device status seen through `device_status_update`, `device_update`",
        "  and `device_status`**: one `status` series; `reason` is an annotation.",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    """Print the reference page (``python -m pipeline.normalize.catalogue``)."""
    print(records_markdown(), end="")


if __name__ == "__main__":
    main()
