"""Hemis normalizer: golden frames of every type, doc examples, every rejection, properties."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.errors import BadInputError
from pipeline.models import Measurement, RawEnvelope, StateEvent
from pipeline.normalize.hemis import MESSAGE_TYPES, normalize
from producers.sources.hemis import frame_key
from tests.support.hemis_golden import GOLDEN_DIR, golden_frames, variant

RECEIVED_MS = 1_700_000_000_123
DOC_MS = 1_529_420_401_946


def envelope(payload: str | dict[str, Any] | list[Any], **meta: Any) -> RawEnvelope:
    text = payload if isinstance(payload, str) else json.dumps(payload, ensure_ascii=False)
    return RawEnvelope(
        source="hemis", stream="home", received_at_ms=RECEIVED_MS, payload=text, meta=meta
    )


def golden(name: str) -> str:
    return (GOLDEN_DIR / f"{name}.json").read_text(encoding="utf-8")


def golden_names() -> list[str]:
    return sorted(p.stem for p in GOLDEN_DIR.glob("*.json"))


def M(entity: str, metric: str, value: float, unit: str, ts: int, **notes: str) -> Measurement:
    return Measurement("hemis", "home", entity, metric, value, unit, ts, {}, notes)


def S(entity: str, name: str, value: str, prev: str | None, ts: int, **notes: str) -> StateEvent:
    return StateEvent("hemis", "home", entity, name, value, prev, ts, {}, notes)


# --- golden files: present, current, and one of every type ---------------------------------


def test_golden_files_match_the_seeded_simulator() -> None:
    """Regenerate with ``python -m tests.support.hemis_golden`` after changing the simulator."""
    expected = golden_frames()
    assert golden_names() == sorted(expected)
    for name, body in expected.items():
        assert golden(name) == body, name


def test_golden_files_cover_every_type_and_container_variant() -> None:
    types = {orjson.loads(golden(n))["type"] for n in golden_names()}
    assert types == set(MESSAGE_TYPES)
    assert len(MESSAGE_TYPES) == 11
    for kind in ("data_provider", "new_data"):
        for shape in ("points_beside_header", "points_in_header"):
            for unit in ("s", "ms"):
                assert f"{kind}_{shape}_{unit}" in golden_names()


@pytest.mark.parametrize("name", golden_names())
def test_every_golden_frame_normalizes_with_its_key_as_entity(name: str) -> None:
    body = golden(name)
    frame = orjson.loads(body)

    records = normalize(envelope(body))

    assert records
    key = frame_key(body)
    assert key is not None
    assert {r.entity for r in records} == {key.decode()}  # producer key == normalizer entity
    for record in records:
        assert record.source == "hemis"
        assert record.stream == "home"
        assert record.annotations["type"] == frame["type"]
        assert 1_721_980_700_000 < record.ts_ms < 1_721_980_900_000  # upstream time, not receipt


def test_golden_sensor_state() -> None:
    frame = orjson.loads(golden("sensor_state"))

    assert normalize(envelope(golden("sensor_state"))) == [
        M(
            frame["sensorId"],
            "sensor.TMP",
            float(frame["value"]),
            "°C",
            frame["timestamp"],
            type="SENSOR_STATE",
            zoneId=frame["zoneId"],
            itId=frame["itId"],
            factorId="TMP",
        )
    ]


def test_golden_switch_press_is_a_measurement_without_zone() -> None:
    frame = orjson.loads(golden("sensor_state_switch"))

    assert normalize(envelope(golden("sensor_state_switch"))) == [
        M(
            frame["sensorId"],
            "sensor.SWS",
            float(frame["value"]),
            "",
            frame["timestamp"],
            type="SENSOR_STATE",
            itId=frame["itId"],
            factorId="SWS",
        )
    ]


def test_golden_sensor_fault_is_a_composite_state() -> None:
    frame = orjson.loads(golden("sensor_state_composite"))
    ts = frame["timestamp"]
    labels = {"type": "SENSOR_STATE", "zoneId": "Bureau", "itId": frame["itId"], "factorId": "TMP"}

    got = normalize(envelope(golden("sensor_state_composite")))

    entity = frame["sensorId"]
    assert got == [
        S(entity, "sensor.o", "ko", "ok", ts, **labels, cause="TIMEOUT"),
        S(entity, "sensor.p", "ok", "ok", ts, **labels, cause="UNKNOWN"),
        S(entity, "sensor.r", "ok", "ok", ts, **labels, cause="UNKNOWN"),
    ]


@pytest.mark.parametrize(
    ("name", "suffix"),
    [
        ("actuator_target_state", "target"),
        ("actuator_hardware_state", "hardware"),
        ("actuator_current_state", "current"),
    ],
)
def test_golden_actuator_states(name: str, suffix: str) -> None:
    frame = orjson.loads(golden(name))
    value = frame["value"]
    factor = frame["factorId"]
    labels = {"type": frame["type"], "factorId": factor, "itId": value["itId"]}
    if "zoneId" in frame:
        labels["zoneId"] = frame["zoneId"]

    got = normalize(envelope(golden(name)))

    unit = "°C" if factor == "TMP" else ""
    metric = f"actuator.{factor}.{suffix}"
    assert got == [
        M(value["actuatorId"], metric, float(value["value"]), unit, frame["timestamp"], **labels)
    ]


@pytest.mark.parametrize("name", ["it_state", "it_state_fault"])
def test_golden_it_states(name: str) -> None:
    frame = orjson.loads(golden(name))
    value = frame["value"]

    got = normalize(envelope(golden(name)))

    assert [(r.name, r.value, r.previous) for r in got] == [
        ("it.o", value["o"].lower(), value["pO"].lower()),
        ("it.p", value["p"].lower(), value["pP"].lower()),
        ("it.r", value["r"].lower(), value["pR"].lower()),
    ]
    assert all(isinstance(r, StateEvent) and r.entity == frame["itId"] for r in got)
    if name == "it_state_fault":
        assert got[0].value == "ko"
        assert got[0].annotations["cause"] == "TIMEOUT"


@pytest.mark.parametrize(
    ("name", "suffix"), [("factor_current_state", "current"), ("factor_target_state", "target")]
)
def test_golden_factor_states(name: str, suffix: str) -> None:
    frame = orjson.loads(golden(name))
    factor = frame["factorId"]

    got = normalize(envelope(golden(name)))

    unit = "°C" if factor == "TMP" else ""
    labels = {"type": frame["type"], "zoneId": frame["zoneId"], "factorId": factor}
    assert got == [
        M(
            frame["zoneId"],
            f"factor.{factor}.{suffix}",
            frame["value"],
            unit,
            frame["timestamp"],
            **labels,
        )
    ]


def test_golden_objective_state() -> None:
    frame = orjson.loads(golden("objective_state"))

    got = normalize(envelope(golden("objective_state")))

    assert got == [
        S(
            frame["objectiveId"],
            "objective.executable",
            str(frame["value"]).lower(),
            None,
            frame["timestamp"],
            type="OBJECTIVE_STATE",
            zoneId=frame["zoneId"],
        )
    ]


def test_golden_entity_management() -> None:
    frame = orjson.loads(golden("entity_management"))

    got = normalize(envelope(golden("entity_management")))

    assert got == [
        S(
            frame["entityId"],
            "management",
            frame["action"].lower(),
            None,
            frame["timestamp"],
            type="ENTITY_MANAGEMENT",
            entityType=frame["entityType"],
        )
    ]


@pytest.mark.parametrize("name", [n for n in golden_names() if "points" in n])
def test_golden_data_containers_both_shapes_and_units(name: str) -> None:
    frame = orjson.loads(golden(name))
    data = frame["container"]["data"]
    points = data["header"].get("data_points") or data.get("data_points")
    mapping = data["header"]["columns_mapping"]
    seconds = name.endswith("_s")

    got = normalize(envelope(golden(name)))

    expected = []
    for point in points:
        ts = point["d"] * 1000 if seconds else point["d"]
        for column, index in mapping.items():
            unit = "°C" if column == "VALUENB" else ""
            metrics = [f"provider.TMP.{column}"]
            if column == "VALUENB":  # a sensor's reading is also sensor.<group>, as SENSOR_STATE
                metrics.append("sensor.TMP")
            for metric in metrics:
                expected.append(
                    M(
                        "041AA72AAA4A83",
                        metric,
                        float(point["v"][index]),
                        unit,
                        ts,
                        type=frame["type"],
                        zoneId="Serveur",
                        sourceNature="SEN",
                        measurement="TEMP",
                    )
                )
    assert got == expected
    # seconds and milliseconds land on the same scale
    assert all(1_721_980_700_000 < r.ts_ms < 1_721_980_900_000 for r in got)


# --- the documentation's examples, field for field --------------------------------------------

DOC_TARGET = {
    "timestamp": DOC_MS,
    "type": "ACTUATOR_TARGET_STATE",
    "zoneId": "MyHemis",
    "factorId": "TMP",
    "valueType": "0",
    "value": {
        "id": "123",
        "itId": "123",
        "actuatorId": "12345#C01",
        "value": 20.0,
        "timestamp": 1529420401900,
        "progressive": False,
        "colorEnable": False,
        "color": None,
        "hsvColor": None,
        "ctEnable": False,
        "ct": None,
        "minActionValue": 7.0,
        "maxActionValue": 35.0,
        "remote": False,
        "direct": True,
    },
}
DOC_PROVIDER = {
    "timestamp": 1564478716,
    "type": "DATA_PROVIDER",
    "container": {
        "dataInfo": {
            "sourceTypeInfo": {
                "sourceNature": "SEN",
                "sourceGroup": "TMP",
                "customPersistenceId": "",
                "measurement": "TEMP",
                "measurementUnit": "°C",
            },
            "zoneId": "Zone409004",
            "sourceId": "0400A5818140A9",
        },
        "data": {
            "header": {"columns_mapping": {"RELIABILITY": 1, "VALUENB": 0, "NBPOINT": 2}},
            "data_points": [
                {"d": 1564478714, "v": [20, 0.8, 1]},
                {"d": 1564478716, "v": [21, 0.81, 1]},
            ],
        },
    },
}
DOC_PROVIDER_LABELS = {
    "type": "DATA_PROVIDER",
    "zoneId": "Zone409004",
    "sourceNature": "SEN",
    "measurement": "TEMP",
}


def test_doc_actuator_target_state() -> None:
    assert normalize(envelope(DOC_TARGET)) == [
        M(
            "12345#C01",
            "actuator.TMP.target",
            20.0,
            "°C",
            DOC_MS,
            type="ACTUATOR_TARGET_STATE",
            zoneId="MyHemis",
            factorId="TMP",
            itId="123",
        )
    ]


def test_doc_actuator_current_state_uses_outer_it_id_labels() -> None:
    frame = {
        "type": "ACTUATOR_CURRENT_STATE",
        "timestamp": DOC_MS,
        "itId": "04B99FEAD45480",
        "factorId": "BRIEXT",
        "valueType": "0",
        "value": {"itId": "04B99FEAD45480", "actuatorId": "04B99FEAD45480#C01", "value": 0.86},
    }
    assert normalize(envelope(frame)) == [
        M(
            "04B99FEAD45480#C01",
            "actuator.BRIEXT.current",
            0.86,
            "",
            DOC_MS,
            type="ACTUATOR_CURRENT_STATE",
            itId="04B99FEAD45480",
            factorId="BRIEXT",
        )
    ]


def test_doc_sensor_state_with_string_value() -> None:
    frame = {
        "timestamp": DOC_MS,
        "type": "SENSOR_STATE",
        "zoneId": "MyHemis",
        "sensorId": "F023B91000000073#1",
        "factorId": "TMP",
        "itId": "041AA72AAA4A80",
        "valueType": "0",
        "value": "21.0",
    }
    assert normalize(envelope(frame)) == [
        M(
            "F023B91000000073#1",
            "sensor.TMP",
            21.0,
            "°C",
            DOC_MS,
            type="SENSOR_STATE",
            zoneId="MyHemis",
            itId="041AA72AAA4A80",
            factorId="TMP",
        )
    ]


def test_doc_it_state_previous_states_and_short_timestamps() -> None:
    frame = {
        "timestamp": 12345,  # the doc's placeholder: read as seconds
        "type": "IT_STATE",
        "itId": "itid123456",
        "value": {"o": "OK", "pO": "UNKNOWN", "oC": "UNKNOWN", "p": "OK", "pP": "OK"},
    }
    assert normalize(envelope(frame)) == [
        S("itid123456", "it.o", "ok", "unknown", 12_345_000, type="IT_STATE", cause="UNKNOWN"),
        S("itid123456", "it.p", "ok", "ok", 12_345_000, type="IT_STATE"),
    ]


def test_doc_factor_objective_and_entity_examples() -> None:
    factor = {
        "type": "FACTOR_CURRENT_STATE",
        "timestamp": DOC_MS,
        "zoneId": "MyHemis",
        "factorId": "OCC",
        "value": 99.7,
    }
    objective = {
        "type": "OBJECTIVE_STATE",
        "timestamp": DOC_MS,
        "objectiveId": "123",
        "zoneId": "MyHemis",
        "value": False,
    }
    entity = {
        "timestamp": DOC_MS,
        "type": "ENTITY_MANAGEMENT",
        "entityType": "IT",
        "entityId": "123456478#C01",
        "action": "DELETE",
    }
    assert normalize(envelope(factor)) == [
        M(
            "MyHemis",
            "factor.OCC.current",
            99.7,
            "",
            DOC_MS,
            type="FACTOR_CURRENT_STATE",
            zoneId="MyHemis",
            factorId="OCC",
        )
    ]
    assert normalize(envelope(objective)) == [
        S(
            "123",
            "objective.executable",
            "false",
            None,
            DOC_MS,
            type="OBJECTIVE_STATE",
            zoneId="MyHemis",
        )
    ]
    assert normalize(envelope(entity)) == [
        S(
            "123456478#C01",
            "management",
            "delete",
            None,
            DOC_MS,
            type="ENTITY_MANAGEMENT",
            entityType="IT",
        )
    ]


def test_doc_data_provider_in_seconds_with_points_beside_header() -> None:
    assert normalize(envelope(DOC_PROVIDER)) == [
        M(
            "0400A5818140A9",
            "provider.TMP.RELIABILITY",
            0.8,
            "",
            1564478714000,
            **DOC_PROVIDER_LABELS,
        ),
        M(
            "0400A5818140A9",
            "provider.TMP.VALUENB",
            20.0,
            "°C",
            1564478714000,
            **DOC_PROVIDER_LABELS,
        ),
        M("0400A5818140A9", "sensor.TMP", 20.0, "°C", 1564478714000, **DOC_PROVIDER_LABELS),
        M("0400A5818140A9", "provider.TMP.NBPOINT", 1.0, "", 1564478714000, **DOC_PROVIDER_LABELS),
        M(
            "0400A5818140A9",
            "provider.TMP.RELIABILITY",
            0.81,
            "",
            1564478716000,
            **DOC_PROVIDER_LABELS,
        ),
        M(
            "0400A5818140A9",
            "provider.TMP.VALUENB",
            21.0,
            "°C",
            1564478716000,
            **DOC_PROVIDER_LABELS,
        ),
        M("0400A5818140A9", "sensor.TMP", 21.0, "°C", 1564478716000, **DOC_PROVIDER_LABELS),
        M("0400A5818140A9", "provider.TMP.NBPOINT", 1.0, "", 1564478716000, **DOC_PROVIDER_LABELS),
    ]


def test_data_provider_prose_shape_in_ms_gives_the_same_records() -> None:
    prose = json.loads(json.dumps(DOC_PROVIDER))
    data = prose["container"]["data"]
    points = data.pop("data_points")
    for point in points:
        point["d"] *= 1000
    data["header"]["data_points"] = points
    prose["timestamp"] *= 1000
    prose["type"] = "NEW_DATA"

    got = normalize(envelope(prose))

    expected = normalize(envelope(DOC_PROVIDER))
    assert [(r.metric, r.value, r.ts_ms) for r in got] == [
        (r.metric, r.value, r.ts_ms) for r in expected
    ]
    assert {r.annotations["type"] for r in got} == {"NEW_DATA"}


# --- shape details ----------------------------------------------------------------------------


def test_base64_envelope_from_a_binary_frame() -> None:
    body = golden("factor_target_state").encode()
    encoded = base64.b64encode(body).decode()

    assert normalize(envelope(encoded, encoding="base64")) == normalize(envelope(body.decode()))


@pytest.mark.parametrize(
    ("value", "records"),
    [
        ("ON", [("sensor.DOOR", "on")]),
        (" Open ", [("sensor.DOOR", "open")]),
        (True, [("sensor.DOOR", "true")]),
        (False, [("sensor.DOOR", "false")]),
    ],
)
def test_sensor_text_and_boolean_values_are_states(value: Any, records: list[Any]) -> None:
    frame = {"type": "SENSOR_STATE", "timestamp": DOC_MS, "sensorId": "s1", "factorId": "DOOR"}

    got = normalize(envelope({**frame, "value": value}))

    assert [(r.name, r.value) for r in got] == records
    assert all(isinstance(r, StateEvent) and r.previous is None for r in got)


@pytest.mark.parametrize(
    ("value", "number"), [(3, 3.0), ("-1.5e1", -15.0), (" 21 ", 21.0), ("0", 0.0)]
)
def test_sensor_numeric_values(value: Any, number: float) -> None:
    frame = {"type": "SENSOR_STATE", "timestamp": DOC_MS, "itId": "it1", "factorId": "HUM"}

    got = normalize(envelope({**frame, "value": value}))

    assert [(r.entity, r.metric, r.value, r.unit) for r in got] == [
        ("it1", "sensor.HUM", number, "")
    ]


def test_sensor_actuator_like_value_object() -> None:
    frame = {
        "type": "SENSOR_STATE",
        "timestamp": DOC_MS,
        "sensorId": "s1",
        "factorId": "BRI",
        "value": {"value": 312, "actuatorId": "x"},
    }
    assert [(r.metric, r.value) for r in normalize(envelope(frame))] == [("sensor.BRI", 312.0)]


def test_actuator_bare_number_and_it_id_entity() -> None:
    frame = {
        "type": "ACTUATOR_HARDWARE_STATE",
        "timestamp": DOC_MS,
        "itId": "it7",
        "factorId": "BRI",
        "value": "0.5",
    }
    assert [(r.entity, r.metric, r.value) for r in normalize(envelope(frame))] == [
        ("it7", "actuator.BRI.hardware", 0.5)
    ]


def test_missing_timestamp_uses_receipt_time() -> None:
    frame = {"type": "FACTOR_TARGET_STATE", "zoneId": "z", "factorId": "TMP", "value": 20}

    (record,) = normalize(envelope(frame))

    assert record.ts_ms == RECEIVED_MS


@pytest.mark.parametrize(
    ("timestamp", "ts_ms"),
    [
        (1_721_980_800, 1_721_980_800_000),
        (1_721_980_800.25, 1_721_980_800_250),
        (1_721_980_800_123, 1_721_980_800_123),
        (0, 0),
        (99_999_999_999, 99_999_999_999_000),
        (100_000_000_000, 100_000_000_000),
    ],
)
def test_timestamps_in_seconds_or_milliseconds(timestamp: float, ts_ms: int) -> None:
    frame = {"type": "OBJECTIVE_STATE", "objectiveId": "o", "value": True, "timestamp": timestamp}

    (record,) = normalize(envelope(frame))

    assert record.ts_ms == ts_ms


def test_custom_persistence_id_and_null_cells() -> None:
    frame = json.loads(json.dumps(DOC_PROVIDER))
    frame["container"]["dataInfo"]["sourceTypeInfo"]["customPersistenceId"] = "floor"
    frame["container"]["data"]["data_points"] = [{"d": 1564478714, "v": [20, None, 1]}]

    got = normalize(envelope(frame))

    assert [r.metric for r in got] == [
        "provider.TMP.floor.VALUENB",
        "sensor.TMP",
        "provider.TMP.floor.NBPOINT",
    ]


def test_empty_data_points_is_valid_and_empty() -> None:
    frame = json.loads(json.dumps(DOC_PROVIDER))
    frame["container"]["data"]["data_points"] = []

    assert normalize(envelope(frame)) == []


# --- rejections -------------------------------------------------------------------------------


def provider_with(path: list[Any], value: Any) -> dict[str, Any]:
    frame = json.loads(json.dumps(DOC_PROVIDER))
    node = frame
    for key in path[:-1]:
        node = node[key]
    if value is _DELETE:
        del node[path[-1]]
    else:
        node[path[-1]] = value
    return frame


_DELETE = object()
SENSOR = {"type": "SENSOR_STATE", "timestamp": DOC_MS, "sensorId": "s1", "factorId": "TMP"}
FACTOR = {"type": "FACTOR_CURRENT_STATE", "timestamp": DOC_MS, "zoneId": "z", "factorId": "TMP"}
ACTUATOR = {"type": "ACTUATOR_TARGET_STATE", "timestamp": DOC_MS, "factorId": "TMP", "itId": "i"}
CONTAINER = ["container"]
INFO = ["container", "dataInfo"]
DATA = ["container", "data"]

REJECTED: list[tuple[Any, str]] = [
    ("not json", "hemis frame: not valid JSON (invalid literal, expected 'null' at char 0)"),
    ("", "hemis frame: not valid JSON (Input is a zero-length, empty document at char 0)"),
    ([1], "hemis message: expected a JSON object, got array"),
    ("null", "hemis message: expected a JSON object, got null"),
    ({"timestamp": 1}, "hemis message: missing 'type'"),
    ({"type": "SENSOR"}, "hemis message: unknown type 'SENSOR'"),
    ({"type": 5}, "hemis message: unknown type 5"),
    ({"type": "x" * 60}, f"hemis message: unknown type '{'x' * 37}...'"),
    (
        {**SENSOR, "timestamp": "2024"},
        "hemis SENSOR_STATE: 'timestamp' must be a number, got string",
    ),
    (
        {**SENSOR, "timestamp": True, "value": 1},
        "hemis SENSOR_STATE: 'timestamp' must be a number, got boolean",
    ),
    (
        {**SENSOR, "timestamp": -1, "value": 1},
        "hemis SENSOR_STATE: 'timestamp' -1 is not an epoch time in s or ms",
    ),
    (
        {**SENSOR, "timestamp": 1e15, "value": 1},
        "hemis SENSOR_STATE: 'timestamp' 1000000000000000.0 is not an epoch time in s or ms",
    ),
    ({**SENSOR, "sensorId": None, "value": 1}, "hemis SENSOR_STATE: missing 'sensorId' and 'itId'"),
    (
        {**SENSOR, "sensorId": 7, "value": 1},
        "hemis SENSOR_STATE: 'sensorId' must be a string, got number",
    ),
    ({**SENSOR, "sensorId": "", "value": 1}, "hemis SENSOR_STATE: empty 'sensorId'"),
    ({**SENSOR, "factorId": None, "value": 1}, "hemis SENSOR_STATE: missing 'factorId'"),
    (SENSOR, "hemis SENSOR_STATE: missing 'value'"),
    (
        {**SENSOR, "value": ""},
        "hemis SENSOR_STATE: 'value' must be a number, text or object, got ''",
    ),
    (
        {**SENSOR, "value": [1]},
        "hemis SENSOR_STATE: 'value' must be a number, text or object, got (array)",
    ),
    ({**SENSOR, "value": "1e999"}, "hemis SENSOR_STATE: 'value' is not a finite number"),
    (
        {**SENSOR, "value": {"x": 1}},
        "hemis SENSOR_STATE: 'value' object has neither a numeric 'value' nor o/p/r states",
    ),
    (
        {**SENSOR, "value": {"o": 1}},
        "hemis SENSOR_STATE: 'value.o' must be a non-empty string, got 1",
    ),
    ({**ACTUATOR}, "hemis ACTUATOR_TARGET_STATE: missing 'value'"),
    (
        {**ACTUATOR, "value": {"value": "high"}},
        "hemis ACTUATOR_TARGET_STATE: 'value.value' must be a number, got 'high'",
    ),
    (
        {**ACTUATOR, "value": {"value": None}},
        "hemis ACTUATOR_TARGET_STATE: 'value.value' must be a number, got (null)",
    ),
    (
        {**ACTUATOR, "value": {"value": 1, "actuatorId": 5}},
        "hemis ACTUATOR_TARGET_STATE: 'value.actuatorId' must be a string, got number",
    ),
    (
        {**ACTUATOR, "value": True},
        "hemis ACTUATOR_TARGET_STATE: 'value' must be an ActuatorState or a number, got (boolean)",
    ),
    (
        {**ACTUATOR, "itId": None, "value": 1},
        "hemis ACTUATOR_TARGET_STATE: missing 'value.actuatorId' and 'itId'",
    ),
    (
        {"type": "ACTUATOR_CURRENT_STATE", "itId": "i", "value": 1},
        "hemis ACTUATOR_CURRENT_STATE: missing 'factorId'",
    ),
    ({"type": "IT_STATE", "value": {"o": "OK"}}, "hemis IT_STATE: missing 'itId'"),
    (
        {"type": "IT_STATE", "itId": "i", "value": "OK"},
        "hemis IT_STATE: 'value' must be an ITCompositeState object, got string",
    ),
    (
        {"type": "IT_STATE", "itId": "i", "value": {"pO": "OK"}},
        "hemis IT_STATE: 'value' holds none of the states o, p, r",
    ),
    (
        {"type": "IT_STATE", "itId": "i", "value": {"r": ""}},
        "hemis IT_STATE: 'value.r' must be a non-empty string, got ''",
    ),
    (
        {**FACTOR, "value": "warm"},
        "hemis FACTOR_CURRENT_STATE: 'value' must be a number, got 'warm'",
    ),
    ({**FACTOR, "zoneId": None, "value": 1}, "hemis FACTOR_CURRENT_STATE: missing 'zoneId'"),
    (
        {**FACTOR, "type": "FACTOR_TARGET_STATE", "factorId": [], "value": 1},
        "hemis FACTOR_TARGET_STATE: 'factorId' must be a string, got array",
    ),
    (
        {"type": "OBJECTIVE_STATE", "objectiveId": "o", "value": "yes"},
        "hemis OBJECTIVE_STATE: 'value' must be true or false, got 'yes'",
    ),
    ({"type": "OBJECTIVE_STATE", "value": True}, "hemis OBJECTIVE_STATE: missing 'objectiveId'"),
    (
        {"type": "ENTITY_MANAGEMENT", "entityId": "e", "entityType": "ZONE"},
        "hemis ENTITY_MANAGEMENT: missing 'action'",
    ),
    (
        {"type": "ENTITY_MANAGEMENT", "entityId": "e", "action": "CREATE"},
        "hemis ENTITY_MANAGEMENT: missing 'entityType'",
    ),
    (
        {"type": "ENTITY_MANAGEMENT", "entityType": "ZONE", "action": "CREATE"},
        "hemis ENTITY_MANAGEMENT: missing 'entityId'",
    ),
    ({"type": "NEW_DATA"}, "hemis NEW_DATA: missing 'container'"),
    (provider_with(CONTAINER, []), "hemis DATA_PROVIDER: 'container' must be an object, got array"),
    (
        provider_with([*CONTAINER, "dataInfo"], _DELETE),
        "hemis DATA_PROVIDER: missing 'container.dataInfo'",
    ),
    (
        provider_with([*INFO, "sourceTypeInfo"], 1),
        "hemis DATA_PROVIDER: 'container.dataInfo.sourceTypeInfo' must be an object, got number",
    ),
    (
        provider_with([*INFO, "sourceId"], _DELETE),
        "hemis DATA_PROVIDER: missing 'container.dataInfo.sourceId'",
    ),
    (
        provider_with([*INFO, "sourceId"], ""),
        "hemis DATA_PROVIDER: 'container.dataInfo.sourceId' must be a non-empty string, got ''",
    ),
    (
        provider_with([*INFO, "sourceTypeInfo", "sourceGroup"], _DELETE),
        "hemis DATA_PROVIDER: missing 'container.dataInfo.sourceTypeInfo.sourceGroup'",
    ),
    (
        provider_with([*INFO, "sourceTypeInfo", "customPersistenceId"], 3),
        "hemis DATA_PROVIDER: 'customPersistenceId' must be a string, got number",
    ),
    (provider_with([*CONTAINER, "data"], _DELETE), "hemis DATA_PROVIDER: missing 'container.data'"),
    (
        provider_with([*DATA, "header"], _DELETE),
        "hemis DATA_PROVIDER: missing 'container.data.header'",
    ),
    (
        provider_with([*DATA, "header", "columns_mapping"], [0]),
        "hemis DATA_PROVIDER: 'container.data.header.columns_mapping' must be an object, got array",
    ),
    (
        provider_with([*DATA, "header", "columns_mapping"], {}),
        "hemis DATA_PROVIDER: 'columns_mapping' is empty",
    ),
    (
        provider_with([*DATA, "header", "columns_mapping"], {"VALUENB": -1}),
        "hemis DATA_PROVIDER: columns_mapping['VALUENB'] must be an index >= 0",
    ),
    (
        provider_with([*DATA, "header", "columns_mapping"], {"VALUENB": True}),
        "hemis DATA_PROVIDER: columns_mapping['VALUENB'] must be an index >= 0",
    ),
    (
        provider_with([*DATA, "data_points"], _DELETE),
        "hemis DATA_PROVIDER: missing 'data_points' (next to or inside 'header')",
    ),
    (
        provider_with([*DATA, "data_points"], {}),
        "hemis DATA_PROVIDER: 'data_points' must be an array, got object",
    ),
    (
        provider_with([*DATA, "data_points"], [1]),
        "hemis DATA_PROVIDER: 'data_points[0]' must be an object, got number",
    ),
    (
        provider_with([*DATA, "data_points"], [{"v": [1, 1, 1]}]),
        "hemis DATA_PROVIDER: missing 'data_points[0].d'",
    ),
    (
        provider_with([*DATA, "data_points"], [{"d": "x", "v": [1, 1, 1]}]),
        "hemis DATA_PROVIDER: 'data_points[0].d' must be a number, got string",
    ),
    (
        provider_with([*DATA, "data_points"], [{"d": 1, "v": 1}]),
        "hemis DATA_PROVIDER: 'data_points[0].v' must be an array, got number",
    ),
    (
        provider_with([*DATA, "data_points"], [{"d": 1, "v": [1, 1]}]),
        "hemis DATA_PROVIDER: 'data_points[0].v' has no index 2 for column 'NBPOINT'",
    ),
    (
        provider_with([*DATA, "data_points"], [{"d": 1, "v": [1, "bad", 1]}]),
        "hemis DATA_PROVIDER: 'data_points[0].v[1]' (RELIABILITY) must be a number, got string",
    ),
]


@pytest.mark.parametrize(("payload", "reason"), REJECTED)
def test_rejected_messages_name_the_reason(payload: Any, reason: str) -> None:
    with pytest.raises(BadInputError) as caught:
        normalize(envelope(payload))

    assert caught.value.reason == reason
    assert str(caught.value) == reason


@pytest.mark.parametrize(
    ("payload", "meta", "reason"),
    [
        ("%%%", {"encoding": "base64"}, "hemis frame: payload is not valid base64"),
        (
            "e30=",
            {"encoding": "hex"},
            "hemis frame: unknown meta.encoding 'hex'; expected 'base64'",
        ),
        (
            base64.b64encode(b"\xff\xfe").decode(),
            {"encoding": "base64"},
            "hemis frame: binary frame is not UTF-8 text (byte 0)",
        ),
    ],
)
def test_rejected_encodings(payload: str, meta: dict[str, Any], reason: str) -> None:
    with pytest.raises(BadInputError) as caught:
        normalize(envelope(payload, **meta))

    assert caught.value.reason == reason


def test_reason_does_not_echo_the_message() -> None:
    secret = "passcode=very-secret-token-1234567890-abcdef"
    with pytest.raises(BadInputError) as caught:
        normalize(envelope({"type": secret}))

    assert secret not in caught.value.reason
    assert "very-secret-token-1234567890-abcdef" not in caught.value.reason


# --- properties -------------------------------------------------------------------------------

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=10),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=5)
    ),
    max_leaves=40,
)


def outcome(env: RawEnvelope) -> list[Any] | None:
    """Normalize; None for a BadInputError. Anything else raising fails the property."""
    try:
        got = normalize(env)
    except BadInputError as exc:
        reason = exc.reason
    else:
        assert all(isinstance(r, Measurement | StateEvent) for r in got)
        return got
    assert reason.startswith("hemis ")
    return None


@settings(max_examples=300, deadline=None)
@given(json_values)
def test_any_json_as_payload_only_raises_bad_input(value: Any) -> None:
    outcome(envelope(json.dumps(value)))


@settings(max_examples=400, deadline=None)
@given(
    st.sampled_from(MESSAGE_TYPES),
    st.dictionaries(
        st.sampled_from(
            [
                "timestamp",
                "zoneId",
                "sensorId",
                "itId",
                "factorId",
                "value",
                "objectiveId",
                "entityId",
                "entityType",
                "action",
                "container",
                "valueType",
            ]
        ),
        json_values,
        max_size=8,
    ),
)
def test_any_fields_for_every_type_only_raise_bad_input(kind: str, fields: dict[str, Any]) -> None:
    got = outcome(envelope({**fields, "type": kind}))

    if got is not None:
        assert all(r.annotations["type"] == kind for r in got)


@settings(max_examples=200, deadline=None)
@given(json_values, json_values)
def test_any_container_contents_only_raise_bad_input(points: Any, header: Any) -> None:
    frame = json.loads(json.dumps(DOC_PROVIDER))
    frame["container"]["data"]["data_points"] = points
    frame["container"]["data"]["header"]["columns_mapping"] = header
    outcome(envelope(frame))


@settings(max_examples=200, deadline=None)
@given(st.text())
def test_any_text_as_payload_only_raises_bad_input(text: str) -> None:
    outcome(envelope(text))


@settings(max_examples=100, deadline=None)
@given(st.binary())
def test_any_bytes_as_base64_payload_only_raise_bad_input(data: bytes) -> None:
    outcome(envelope(base64.b64encode(data).decode(), encoding="base64"))


def test_golden_variant_names_are_stable() -> None:
    assert variant(orjson.loads(golden("sensor_state_composite"))) == "sensor_state_composite"
    assert Path(GOLDEN_DIR).name == "hemis"
