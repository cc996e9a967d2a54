"""ELEMENT IoT normalizer: golden frames, every rejection reason, and never another exception."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.errors import BadInputError
from pipeline.models import Measurement, RawEnvelope, StateEvent
from pipeline.normalize.element import MAX_DEPTH, normalize, unit_of

GOLDEN = Path(__file__).parents[3] / "data" / "upstream" / "element"
RECEIVED_MS = 1_700_000_100_000
DEVICE = "0126d246-05e1-43c7-a0df-3765cf982022"


def envelope(payload: Any, **meta: Any) -> RawEnvelope:
    text = payload if isinstance(payload, str) else json.dumps(payload)
    return RawEnvelope(
        source="element",
        stream="element-stream",
        received_at_ms=RECEIVED_MS,
        payload=text,
        meta={"connection": 1, **meta},
    )


def measurements(env: RawEnvelope) -> list[Measurement]:
    """Normalize, checking every record is a Measurement."""
    got = normalize(env)
    out = [r for r in got if isinstance(r, Measurement)]
    assert len(out) == len(got)
    return out


def golden_text(name: str) -> str:
    return (GOLDEN / name).read_text(encoding="utf-8")


def ms(text: str) -> int:
    return int(datetime.fromisoformat(text).timestamp() * 1000)


def reading(data: Any = None, **body: Any) -> list[dict[str, Any]]:
    content = {
        "id": "r1",
        "device_id": DEVICE,
        "measured_at": "2024-06-06T13:49:41.968992Z",
        "inserted_at": "2024-06-06T13:49:42.049158Z",
        "data": {"air_temperature": 22.7} if data is None else data,
    }
    content.update(body)
    return [{"event": "reading_added", "body": {k: v for k, v in content.items() if v != "-"}}]


def packet(meta: Any, **body: Any) -> list[dict[str, Any]]:
    content = {
        "id": "p1",
        "device_id": DEVICE,
        "meta": meta,
        "transceived_at": "2024-08-13T13:11:04.070758Z",
        "inserted_at": "2024-08-13T13:11:04.080107Z",
    }
    content.update(body)
    return [{"event": "packet_added", "body": {k: v for k, v in content.items() if v != "-"}}]


# --- golden frames --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name", ["reading_added.json", "reading_added_hot.json", "readings_replay_batch.json"]
)
def test_golden_sht35_readings_yield_one_measurement_per_numeric_field(name: str) -> None:
    events = orjson.loads(golden_text(name))

    got = measurements(envelope(golden_text(name)))

    expected = [
        (e["body"]["device_id"], key, float(value), ms(e["body"]["measured_at"]))
        for e in events
        for key, value in e["body"]["data"].items()
    ]
    assert [(m.entity, m.metric, m.value, m.ts_ms) for m in got] == expected
    units = {m.metric: m.unit for m in got}
    assert units == {
        "air_humidity": "%",
        "air_temperature": "°C",
        "battery_voltage": "V",
        "device_id": "",
        "protocol_version": "",
    }


def test_golden_hot_reading_crosses_the_demo_threshold() -> None:
    got = measurements(envelope(golden_text("reading_added_hot.json")))
    (temperature,) = [m for m in got if m.metric == "air_temperature"]
    assert temperature.value > 30
    assert temperature.source == "element"
    assert temperature.stream == "element-stream"
    assert temperature.labels == {}


def test_golden_co2_reading_units() -> None:
    got = measurements(envelope(golden_text("reading_added_co2.json")))
    assert {m.metric: m.unit for m in got} == {
        "temperature": "°C",
        "humidity": "%",
        "light": "lx",
        "motion": "",
        "co2": "ppm",
        "vdd": "mV",
    }


def test_golden_packet_yields_radio_quality_per_gateway() -> None:
    (event,) = orjson.loads(golden_text("packet_added.json"))
    body = event["body"]

    got = measurements(envelope(golden_text("packet_added.json")))

    expected = [
        (metric, float(g[key]), unit, {"gateway": g["router_id_hex"]})
        for g in body["meta"]["gateway_stats"]
        for metric, key, unit in (("radio.rssi", "rssi", "dBm"), ("radio.snr", "snr", "dB"))
    ]
    assert [(m.metric, m.value, m.unit, m.labels) for m in got] == expected
    assert {m.entity for m in got} == {body["device_id"]}
    assert {m.ts_ms for m in got} == {ms(body["transceived_at"])}
    assert len(body["meta"]["gateway_stats"]) == 2  # the golden packet was heard twice


def test_documented_reading_sample_exact_records() -> None:
    sample = reading(
        {"air_humidity": 46.93, "air_temperature": 22.70, "battery_voltage": 3.132},
        packet_id="56f267dc",
        location=None,
        meta=None,
    )
    ts = 1717681781968

    got = normalize(envelope(sample))

    assert got == [
        Measurement("element", "element-stream", DEVICE, "air_humidity", 46.93, "%", ts, {}),
        Measurement("element", "element-stream", DEVICE, "air_temperature", 22.7, "°C", ts, {}),
        Measurement("element", "element-stream", DEVICE, "battery_voltage", 3.132, "V", ts, {}),
    ]


def test_text_and_boolean_fields_are_states_nested_fields_dotted() -> None:
    data = {
        "state": "OCCUPIED",
        "alarm": True,
        "meter": {"volume": 12.5, "flow": None, "valve": False, "history": [1, 2]},
    }

    got = normalize(envelope(reading(data)))

    assert [
        (type(r).__name__, r.entity, getattr(r, "name", getattr(r, "metric", ""))) for r in got
    ] == [
        ("StateEvent", DEVICE, "state"),
        ("StateEvent", DEVICE, "alarm"),
        ("Measurement", DEVICE, "meter.volume"),
        ("StateEvent", DEVICE, "meter.valve"),
    ]
    states = [r for r in got if isinstance(r, StateEvent)]
    assert [(s.value, s.previous) for s in states] == [
        ("occupied", None),
        ("true", None),
        ("false", None),
    ]


def test_inserted_at_is_the_time_when_measured_at_is_missing() -> None:
    got = normalize(envelope(reading(measured_at="-")))
    assert got[0].ts_ms == 1717681782049


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2024-06-06T13:49:41Z", 1717681781000),
        ("2024-06-06T15:49:41+02:00", 1717681781000),
        ("2024-06-06T13:49:41", 1717681781000),  # no zone: UTC
        (1717681781, 1717681781000),  # epoch seconds
        (1717681781123, 1717681781123),  # epoch milliseconds
    ],
)
def test_time_forms(value: Any, expected: int) -> None:
    assert normalize(envelope(reading(measured_at=value)))[0].ts_ms == expected


def test_packet_without_radio_data_gives_nothing_and_top_level_rssi_is_used() -> None:
    assert normalize(envelope(packet(None))) == []
    assert normalize(envelope(packet({"frame_port": 1}))) == []
    got = measurements(envelope(packet({"rssi": -90, "snr": 7.5, "gateway_stats": None})))
    assert [(m.metric, m.value, m.labels) for m in got] == [
        ("radio.rssi", -90.0, {}),
        ("radio.snr", 7.5, {}),
    ]


def test_packet_time_falls_back_to_inserted_at() -> None:
    got = normalize(envelope(packet({"rssi": -90}, transceived_at="-")))
    assert got[0].ts_ms == 1723554664080


def test_pong_and_empty_frames_hold_nothing() -> None:
    assert normalize(envelope("pong")) == []
    assert normalize(envelope("[]")) == []


def test_events_listed_as_duplicates_are_skipped() -> None:
    text = golden_text("readings_replay_batch.json")
    events = orjson.loads(text)
    first_id = events[0]["body"]["id"]

    got = normalize(envelope(text, duplicates=[first_id, 7]))

    assert {m.entity for m in got} == {e["body"]["device_id"] for e in events[1:]}
    assert len(got) == 5 * (len(events) - 1)


def test_unit_of() -> None:
    assert unit_of("air_temperature") == "°C"
    assert unit_of("meter.Water_Temperature") == "°C"
    assert unit_of("radio.rssi") == "dBm"
    assert unit_of("battery_voltage") == "V"
    assert unit_of("counter") == ""


def test_nesting_up_to_max_depth_is_accepted() -> None:
    data: Any = 1
    for key in reversed([f"k{i}" for i in range(MAX_DEPTH)]):
        data = {key: data}
    got = measurements(envelope(reading(data)))
    assert [m.metric for m in got] == [".".join(f"k{i}" for i in range(MAX_DEPTH))]


# --- rejections -----------------------------------------------------------------------------

TOO_DEEP: Any = 1
for _key in reversed("abcdefghi"):
    TOO_DEEP = {_key: TOO_DEEP}

REJECTED = [
    (
        "ping",
        "element frame: not valid JSON (unexpected character, expected a JSON value at char 0)",
    ),
    ("", "element frame: not valid JSON (Input is a zero-length, empty document at char 0)"),
    ({"event": "reading_added"}, "element frame: expected a JSON array of events, got object"),
    ("null", "element frame: expected a JSON array of events, got null"),
    ([5], "element frame: [0]: expected an {event, body} object, got number"),
    (
        [{"body": {}}],
        "element frame: [0]: missing 'event'; expected 'reading_added' or 'packet_added'",
    ),
    (
        [{"event": "reading_deleted", "body": {}}],
        "element frame: [0]: unknown event 'reading_deleted'; expected 'reading_added' or "
        "'packet_added'",
    ),
    (
        [{"event": ["x"], "body": {}}],
        "element frame: [0]: unknown event (array); expected 'reading_added' or 'packet_added'",
    ),
    ([{"event": "reading_added"}], "element reading_added [0]: body: missing"),
    (
        [*reading(), {"event": "packet_added", "body": "x"}],
        "element packet_added [1]: body: must be an object, got string",
    ),
    (reading(device_id="-"), "element reading_added [0]: body.device_id: missing"),
    (reading(device_id=""), "element reading_added [0]: body.device_id: empty"),
    (
        reading(device_id=7),
        "element reading_added [0]: body.device_id: must be a string, got number",
    ),
    (
        reading(measured_at="-", inserted_at="-"),
        "element reading_added [0]: body.measured_at: missing, and so is inserted_at",
    ),
    (
        reading(measured_at="yesterday"),
        "element reading_added [0]: body.measured_at: 'yesterday' is not an ISO 8601 time",
    ),
    (
        reading(measured_at="0001-01-01T00:00:00+01:00"),
        "element reading_added [0]: body.measured_at: '0001-01-01T00:00:00+01:00' is out of range (1970 to 5138)",
    ),
    (
        reading(measured_at=True),
        "element reading_added [0]: body.measured_at: must be an ISO 8601 string, got boolean",
    ),
    (
        reading(measured_at=-5),
        "element reading_added [0]: body.measured_at: -5 is not an epoch time",
    ),
    (reading(data="-"), "element reading_added [0]: body.data: missing"),
    (reading(data=[1]), "element reading_added [0]: body.data: must be an object, got array"),
    (
        reading(TOO_DEEP),
        "element reading_added [0]: body.data: nests deeper than 8 levels at 'a.b.c.d.e.f.g.h'",
    ),
    (
        '[{"event":"reading_added","body":{"device_id":"d","inserted_at":1,"data":{"n":1e400}}}]',
        "element frame: not valid JSON (number is infinity when parsed as double at char 78)",
    ),
    (
        packet([]),
        "element packet_added [0]: body.meta: must be an object, got array",
    ),
    (
        packet({"gateway_stats": {}}),
        "element packet_added [0]: body.meta.gateway_stats: must be an array, got object",
    ),
    (
        packet({"gateway_stats": [None]}),
        "element packet_added [0]: body.meta.gateway_stats[0]: must be an object, got null",
    ),
    (
        packet({"gateway_stats": [{"rssi": "-77"}]}),
        "element packet_added [0]: body.meta.gateway_stats[0].rssi: must be a number, got string",
    ),
    (
        packet({"snr": True}),
        "element packet_added [0]: body.meta.snr: must be a number, got boolean",
    ),
    (
        packet({"rssi": -1}, transceived_at="-", inserted_at="-"),
        "element packet_added [0]: body.transceived_at: missing, and so is inserted_at",
    ),
]


@pytest.mark.parametrize(("payload", "reason"), REJECTED)
def test_rejected_frames_name_the_reason(payload: Any, reason: str) -> None:
    with pytest.raises(BadInputError) as caught:
        normalize(envelope(payload))

    assert caught.value.reason == reason


def test_huge_integers_are_rejected_not_crashing() -> None:
    # Python's json writes 10**400 as digits; orjson reads it as an infinite double.
    payload = json.dumps(reading({"n": 10**400}))
    with pytest.raises(BadInputError) as caught:
        normalize(envelope(payload))
    assert caught.value.reason.startswith(
        "element frame: not valid JSON (number is infinity when parsed as double"
    )


# --- properties -----------------------------------------------------------------------------

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=6), children, max_size=4)
    ),
    max_leaves=30,
)
times = st.one_of(
    st.none(),
    st.text(max_size=30),
    st.datetimes().map(lambda d: d.isoformat()),
    st.integers(min_value=-(2**40), max_value=2**50),
    st.floats(allow_nan=False, allow_infinity=False),
)


def outcome(env: RawEnvelope) -> list[Measurement | StateEvent] | None:
    """Normalize; None for a BadInputError. Anything else raising fails the property."""
    try:
        got = normalize(env)
    except BadInputError as exc:
        reason = exc.reason
    else:
        assert all(isinstance(r, Measurement | StateEvent) for r in got)
        return got
    assert reason.startswith("element ")
    return None


@settings(max_examples=300, deadline=None)
@given(json_values, st.one_of(st.none(), json_values))
def test_any_json_only_raises_bad_input(value: Any, duplicates: Any) -> None:
    outcome(envelope(json.dumps(value), duplicates=duplicates))


@settings(max_examples=300, deadline=None)
@given(
    st.sampled_from(["reading_added", "packet_added"]),
    st.one_of(st.just(DEVICE), json_values),
    times,
    times,
    json_values,
    json_values,
)
def test_any_event_body_only_raises_bad_input(
    name: str, device: Any, first: Any, second: Any, data: Any, meta: Any
) -> None:
    body = {
        "id": "x",
        "device_id": device,
        "measured_at": first,
        "transceived_at": first,
        "inserted_at": second,
        "data": data,
        "meta": meta,
    }
    got = outcome(envelope(json.dumps([{"event": name, "body": body}])))
    for record in got or []:
        assert record.entity == device


@settings(max_examples=300, deadline=None)
@given(st.text())
def test_any_text_only_raises_bad_input(text: str) -> None:
    outcome(envelope(text))
