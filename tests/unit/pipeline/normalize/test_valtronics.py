"""Valtronics normalizer: a golden frame per documented type, every rejection, no other error."""

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
from pipeline.normalize.valtronics import IGNORED_TYPES, UNITS, normalize
from producers.simulators.valtronics import ValtronicsSimulator

GOLDEN = Path(__file__).parents[3] / "data" / "upstream" / "valtronics"
RECEIVED_MS = 1_800_000_000_123
T0_MS = 1_767_225_600_250  # the golden frames' clock: 2026-01-01T00:00:00.250Z, + 1 s per tick
S = ("valtronics", "plant")


def envelope(payload: str | dict[str, Any] | list[Any], **meta: Any) -> RawEnvelope:
    text = payload if isinstance(payload, str) else json.dumps(payload)
    return RawEnvelope("valtronics", "plant", RECEIVED_MS, text, dict(meta))


def golden(name: str) -> list[Measurement | StateEvent]:
    return normalize(envelope((GOLDEN / name).read_text(encoding="utf-8")))


def at(tick: int) -> int:
    return T0_MS + tick * 1000


# --- golden frames: every documented message type -------------------------------------------------


def test_doc_nested_telemetry_yields_one_measurement_per_metric() -> None:
    assert golden("doc_telemetry_update.json") == [
        Measurement(*S, "1", "temperature", 22.7, "°C", at(1)),
        Measurement(*S, "1", "humidity", 35.9, "%", at(1)),
        Measurement(*S, "1", "power", 998.4, "W", at(1)),
    ]


def test_doc_flat_telemetry() -> None:
    assert golden("doc_telemetry_update_flat.json") == [
        Measurement(*S, "2", "temperature", 20.3, "°C", at(1))
    ]


def test_server_telemetry_uses_the_device_timestamp() -> None:
    assert golden("server_telemetry_update.json") == [
        Measurement(*S, "1", "temperature", 22.7, "°C", at(1))
    ]
    assert golden("server_telemetry_update_aware.json") == [
        Measurement(*S, "2", "temperature", 20.3, "°C", at(1))
    ]


def test_doc_alert_is_a_state_named_by_type_valued_by_severity() -> None:
    assert golden("doc_alert.json") == [
        StateEvent(
            *S,
            "1",
            "alert.threshold",
            "critical",
            None,
            at(5),
            {},
            {
                "title": "High Temperature Alert",
                "message": "Temperature exceeds safe threshold",
                "alert_id": "101",
            },
        )
    ]


def test_server_alert_reads_the_nested_alert() -> None:
    assert golden("server_alert.json") == [
        StateEvent(
            *S,
            "1",
            "alert.threshold",
            "critical",
            None,
            at(5),
            {},
            {"message": "Temperature exceeds safe threshold", "device_name": "Server rack A"},
        )
    ]


def test_doc_device_status_update_knows_the_previous_status() -> None:
    assert golden("doc_device_status_update.json") == [
        StateEvent(
            *S, "3", "status", "offline", "online", at(10), {}, {"reason": "Connection lost"}
        )
    ]


def test_server_device_update_status() -> None:
    assert golden("server_device_update_status.json") == [
        StateEvent(*S, "3", "status", "offline", None, at(10))
    ]


def test_server_device_update_command_response() -> None:
    assert golden("server_device_update_command.json") == [
        StateEvent(*S, "4", "command.status", "completed", None, at(25), {}, {"command_id": "1"})
    ]


def test_server_device_heartbeat_is_documented_and_empty() -> None:
    assert golden("server_device_update_heartbeat.json") == []


def test_server_device_status() -> None:
    assert golden("server_device_status.json") == [
        StateEvent(*S, "3", "status", "online", None, at(60))
    ]


def test_doc_system_status_metrics_belong_to_the_system_entity() -> None:
    assert golden("doc_system_status_update.json") == [
        Measurement(*S, "system", "cpu_usage", 47.3, "%", at(5)),
        Measurement(*S, "system", "memory_usage", 71.2, "%", at(5)),
        Measurement(*S, "system", "disk_usage", 23.0, "%", at(5)),
        Measurement(*S, "system", "active_connections", 0.0, "", at(5)),
    ]


@pytest.mark.parametrize(
    "name",
    [
        "doc_auth_response_ok.json",
        "doc_auth_response_failed.json",
        "doc_pong.json",
        "doc_error_rate_limit.json",
        "doc_error_too_large.json",
        "doc_error_not_found.json",
        "server_pong.json",
        "server_heartbeat.json",
        "server_subscription_confirmed.json",
        "server_unsubscription_confirmed.json",
        "server_system_notification.json",
        "server_error_unknown_type.json",
    ],
)
def test_control_frames_are_valid_and_hold_nothing(name: str) -> None:
    assert golden(name) == []


def test_every_golden_frame_is_covered_above() -> None:
    names = {p.name for p in GOLDEN.glob("*.json")}
    assert len(names) == 24
    types = {orjson.loads((GOLDEN / n).read_bytes()).get("type") for n in names}
    assert types == {
        "auth_response",
        "telemetry_update",
        "alert",
        "device_status_update",
        "system_status_update",
        "pong",
        "error",
        "device_update",
        "device_status",
        "heartbeat",
        "subscription_confirmed",
        "unsubscription_confirmed",
        "system_notification",
        None,
    }


# --- details --------------------------------------------------------------------------------------


def test_documented_samples_exact_records() -> None:
    """The samples of the doc and the API overview, including the doc's alert without a type."""
    doc_alert = {
        "type": "alert",
        "channel": "alerts",
        "alert_id": 123,
        "device_id": 1,
        "severity": "Critical",
        "title": "High Temperature Alert",
        "message": "Temperature exceeds safe threshold",
        "timestamp": "2024-01-01T12:00:00Z",
        "metadata": {"threshold_value": 30.0, "actual_value": 32.5},
    }
    t = 1_704_110_400_000
    assert normalize(envelope(doc_alert)) == [
        StateEvent(
            *S,
            "1",
            "alert.unknown",
            "critical",
            None,
            t,
            {},
            {
                "title": "High Temperature Alert",
                "message": "Temperature exceeds safe threshold",
                "alert_id": "123",
            },
        )
    ]
    flat = {
        "type": "telemetry_update",
        "device_id": 1,
        "metric": "temperature",
        "value": 23.5,
        "unit": "°C",
        "timestamp": "2024-01-01T12:00:00Z",
    }
    assert normalize(envelope(flat)) == [Measurement(*S, "1", "temperature", 23.5, "°C", t)]


def test_missing_units_come_from_the_metric_name_or_stay_empty() -> None:
    frame = {
        "type": "telemetry_update",
        "device_id": "TEMP-001",
        "telemetry": {
            "humidity": {"value": 40},
            "voltage": {"value": 230, "unit": None},
            "rpm": {"value": 1},
        },
    }
    got = [m for m in normalize(envelope(frame)) if isinstance(m, Measurement)]
    assert [(m.entity, m.metric, m.unit, m.ts_ms) for m in got] == [
        ("TEMP-001", "humidity", "%", RECEIVED_MS),
        ("TEMP-001", "voltage", "V", RECEIVED_MS),
        ("TEMP-001", "rpm", "", RECEIVED_MS),
    ]
    server = {
        "type": "telemetry_update",
        "device_id": 1,
        "data": {"metric_name": "power", "metric_value": 5, "unit": None},
    }
    (power,) = normalize(envelope(server))
    assert isinstance(power, Measurement)
    assert power.unit == UNITS["power"] == "W"


@pytest.mark.parametrize(
    ("timestamp", "ts_ms"),
    [
        ("2024-01-01T12:00:00Z", 1_704_110_400_000),
        ("2024-01-01T12:00:00.5", 1_704_110_400_500),
        ("2024-01-01T13:00:00+01:00", 1_704_110_400_000),
        ("2024-01-01T12:00:00.123456", 1_704_110_400_123),
        (1_704_110_400, 1_704_110_400_000),
        (1_704_110_400.25, 1_704_110_400_250),
        (1_704_110_400_250, 1_704_110_400_250),
    ],
)
def test_event_time_forms(timestamp: Any, ts_ms: int) -> None:
    frame = {"type": "device_status", "device_id": 1, "status": "ONLINE", "timestamp": timestamp}
    (record,) = normalize(envelope(frame))
    assert isinstance(record, StateEvent)
    assert (record.ts_ms, record.value) == (ts_ms, "online")


def test_item_timestamp_wins_over_frame_timestamp() -> None:
    frame = {
        "type": "telemetry_update",
        "device_id": 1,
        "timestamp": "2024-01-01T12:00:00Z",
        "telemetry": {"a": {"value": 1, "timestamp": "2024-01-01T12:00:01Z"}, "b": {"value": 2}},
    }
    assert [m.ts_ms for m in normalize(envelope(frame))] == [1_704_110_401_000, 1_704_110_400_000]


def test_device_update_with_status_and_command_yields_both() -> None:
    frame = {
        "type": "device_update",
        "device_id": 4,
        "updates": {
            "status": "Warning",
            "command_response": {"command_id": "c-9", "status": "failed"},
        },
    }
    got = normalize(envelope(frame))
    assert [(s.name, s.value, s.annotations) for s in got if isinstance(s, StateEvent)] == [
        ("status", "warning", {}),
        ("command.status", "failed", {"command_id": "c-9"}),
    ]


def test_base64_payloads_are_decoded() -> None:
    text = (GOLDEN / "doc_device_status_update.json").read_bytes()
    got = normalize(envelope(base64.b64encode(text).decode(), encoding="base64"))
    assert [s.value for s in got if isinstance(s, StateEvent)] == ["offline"]


def test_ignored_types_are_exactly_the_documented_control_frames() -> None:
    for frame_type in IGNORED_TYPES:
        assert normalize(envelope({"type": frame_type})) == []


def test_a_simulated_run_normalizes_completely_and_shows_the_demo_behaviour() -> None:
    """Every frame both variants send in 60 ticks normalizes; the demo's triggers are there."""
    for variant in ("doc", "server"):
        sim = ValtronicsSimulator("t0ken-value", variant=variant, seed=3)
        client = sim.new_client("/ws")
        if variant == "doc":
            sim.receive(client, '{"type": "auth", "token": "t0ken-value"}')
            for channel in ("telemetry", "alerts", "devices", "system", "device_telemetry"):
                sim.receive(client, json.dumps({"type": "subscribe", "channel": channel}))
        else:
            for device in ("1", "2", "3", "4"):
                sim.receive(client, json.dumps({"type": "subscribe_device", "device_id": device}))
        records: list[Measurement | StateEvent] = []
        for _ in range(60):
            for event in sim.next_tick_events():
                for frame in sim.render(client, event):
                    records += normalize(envelope(frame))
        hot = [
            m
            for m in records
            if isinstance(m, Measurement) and m.metric == "temperature" and m.value > 30
        ]
        assert {m.entity for m in hot} == {"1"}, variant
        states = {(s.entity, s.name, s.value) for s in records if isinstance(s, StateEvent)}
        assert {("3", "status", "offline"), ("3", "status", "online")} <= states, variant
        assert ("1", "alert.threshold", "critical") in states, variant
        assert ("3", "alert.connectivity", "warning") in states, variant


# --- rejections -----------------------------------------------------------------------------------


def tele(**fields: Any) -> dict[str, Any]:
    return {"type": "telemetry_update", "device_id": 1, **fields}


REJECTED = [
    ("not json", "valtronics frame: not valid JSON (invalid literal, expected 'null' at char 0)"),
    ("", "valtronics frame: not valid JSON (Input is a zero-length, empty document at char 0)"),
    ("[1]", "valtronics frame: expected a JSON object, got array"),
    ("null", "valtronics frame: expected a JSON object, got null"),
    ({"device_id": 1}, "valtronics frame: missing 'type'"),
    ({"error": {"code": "X"}}, "valtronics frame: missing 'type'"),
    ({"type": 5}, "valtronics frame: 'type' must be a string, got number"),
    ({"type": "batch", "messages": []}, "valtronics frame: unknown type 'batch'"),
    ({"type": "t" * 60}, f"valtronics frame: unknown type '{'t' * 37}...'"),
    ({"type": "telemetry_update"}, "valtronics telemetry_update frame: missing 'device_id'"),
    (
        tele(device_id=True),
        "valtronics telemetry_update frame: 'device_id' must be an integer or string, got boolean",
    ),
    (
        tele(device_id=1.5),
        "valtronics telemetry_update frame: 'device_id' must be an integer or string, got number",
    ),
    (tele(device_id=""), "valtronics telemetry_update frame: empty 'device_id'"),
    (tele(), "valtronics telemetry_update frame: expected 'telemetry', 'data' or 'metric'"),
    (
        tele(telemetry=[1]),
        "valtronics telemetry_update frame: 'telemetry' must be an object, got array",
    ),
    (tele(telemetry={}), "valtronics telemetry_update frame: 'telemetry' holds no metric"),
    (
        tele(telemetry={" ": {"value": 1}}),
        "valtronics telemetry_update frame: 'telemetry' has an empty metric name",
    ),
    (
        tele(telemetry={"t": 5}),
        "valtronics telemetry_update frame: 'telemetry.t' must be an object, got number",
    ),
    (
        tele(telemetry={"t": {}}),
        "valtronics telemetry_update frame: 'telemetry.t.value' must be a number, got null",
    ),
    (
        tele(telemetry={"t": {"value": "5"}}),
        "valtronics telemetry_update frame: 'telemetry.t.value' must be a number, got string",
    ),
    (
        tele(telemetry={"t": {"value": True}}),
        "valtronics telemetry_update frame: 'telemetry.t.value' must be a number, got boolean",
    ),
    (
        tele(telemetry={"t": {"value": 1, "unit": 3}}),
        "valtronics telemetry_update frame: 'telemetry.t.unit' must be a string, got number",
    ),
    (
        tele(telemetry={"t": {"value": 1, "timestamp": "yesterday"}}),
        "valtronics telemetry_update frame: 'telemetry.t.timestamp' is not an ISO 8601 time: 'yesterday'",
    ),
    (
        tele(telemetry={"t": {"value": 1, "timestamp": True}}),
        "valtronics telemetry_update frame: 'telemetry.t.timestamp' must be an ISO 8601 string or a number, got boolean",
    ),
    (
        tele(telemetry={"t": {"value": 1, "timestamp": -5}}),
        "valtronics telemetry_update frame: 'telemetry.t.timestamp' is out of range: -5",
    ),
    (
        tele(telemetry={"t": {"value": 1, "timestamp": 1e300}}),
        "valtronics telemetry_update frame: 'telemetry.t.timestamp' is out of range: 1e+300",
    ),
    (
        tele(telemetry={"t": {"value": 1, "timestamp": "0001-01-01T00:00:00+01:00"}}),
        "valtronics telemetry_update frame: 'telemetry.t.timestamp' is out of range: '0001-01-01T00:00:00+01:00'",
    ),
    (tele(data=None), "valtronics telemetry_update frame: 'data' must be an object, got null"),
    (
        tele(data={"metric_value": 1}),
        "valtronics telemetry_update frame: missing 'data.metric_name'",
    ),
    (
        tele(data={"metric_name": "", "metric_value": 1}),
        "valtronics telemetry_update frame: empty 'data.metric_name'",
    ),
    (
        tele(data={"metric_name": "t", "metric_value": None}),
        "valtronics telemetry_update frame: 'data.metric_value' must be a number, got null",
    ),
    (
        tele(data={"metric_name": "t", "metric_value": 1}, timestamp=[1]),
        "valtronics telemetry_update frame: 'timestamp' must be an ISO 8601 string or a number, got array",
    ),
    (
        tele(metric=7, value=1),
        "valtronics telemetry_update frame: 'metric' must be a string, got number",
    ),
    (
        tele(metric="t", value={}),
        "valtronics telemetry_update frame: 'value' must be a number, got object",
    ),
    (
        '{"type": "telemetry_update", "device_id": 1, "metric": "t", "value": 1e400}',
        "valtronics frame: not valid JSON (number is infinity when parsed as double at char 69)",
    ),
    (
        {"type": "alert", "alert": "x"},
        "valtronics alert frame: 'alert' must be an object, got string",
    ),
    (
        {"type": "alert", "alert": {"severity": "high"}},
        "valtronics alert frame: missing 'alert.device_id'",
    ),
    (
        {"type": "alert", "alert": {"device_id": 1}},
        "valtronics alert frame: missing 'alert.severity'",
    ),
    (
        {"type": "alert", "device_id": 1, "severity": 3},
        "valtronics alert frame: 'severity' must be a string, got number",
    ),
    (
        {"type": "alert", "device_id": 1, "severity": "high", "alert_type": ["x"]},
        "valtronics alert frame: 'alert_type' must be a string, got array",
    ),
    (
        {"type": "device_status_update", "device_id": 1},
        "valtronics device_status_update frame: missing 'new_status'",
    ),
    (
        {"type": "device_status_update", "device_id": 1, "new_status": "on", "old_status": 1},
        "valtronics device_status_update frame: 'old_status' must be a string, got number",
    ),
    (
        {"type": "device_update", "device_id": 1},
        "valtronics device_update frame: missing 'updates'",
    ),
    (
        {"type": "device_update", "device_id": 1, "updates": {"status": ""}},
        "valtronics device_update frame: empty 'updates.status'",
    ),
    (
        {"type": "device_update", "device_id": 1, "updates": {"command_response": 1}},
        "valtronics device_update frame: 'updates.command_response' must be an object, got number",
    ),
    (
        {"type": "device_update", "device_id": 1, "updates": {"command_response": {}}},
        "valtronics device_update frame: missing 'updates.command_response.status'",
    ),
    ({"type": "device_status", "device_id": 1}, "valtronics device_status frame: missing 'status'"),
    ({"type": "system_status_update"}, "valtronics system_status_update frame: missing 'metrics'"),
    (
        {"type": "system_status_update", "metrics": {}},
        "valtronics system_status_update frame: 'metrics' holds no metric",
    ),
    (
        {"type": "system_status_update", "metrics": {"": 1}},
        "valtronics system_status_update frame: 'metrics' has an empty metric name",
    ),
    (
        {"type": "system_status_update", "metrics": {"cpu": "high"}},
        "valtronics system_status_update frame: 'metrics.cpu' must be a number, got string",
    ),
    (
        "!!!",
        "valtronics frame: not valid JSON (unexpected character, expected a JSON value at char 0)",
    ),
]


@pytest.mark.parametrize(("payload", "reason"), REJECTED)
def test_rejected_frames_name_the_reason(payload: Any, reason: str) -> None:
    with pytest.raises(BadInputError) as caught:
        normalize(envelope(payload))
    assert caught.value.reason == reason


def test_invalid_base64_is_rejected() -> None:
    with pytest.raises(BadInputError) as caught:
        normalize(envelope("not base64!", encoding="base64"))
    assert caught.value.reason == "valtronics frame: payload is not valid base64"


def test_reasons_do_not_echo_long_values() -> None:
    secret = "eyJhbGciOiJIUzI1NiJ9.very-long-secret-looking-token-value-1234567890"
    with pytest.raises(BadInputError) as caught:
        normalize(envelope(tele(telemetry={"t": {"value": 1, "timestamp": secret}})))
    assert secret not in caught.value.reason
    assert "..." in caught.value.reason


# --- properties -----------------------------------------------------------------------------------

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=10),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=30,
)
types = st.sampled_from(
    [
        "telemetry_update",
        "alert",
        "device_status_update",
        "device_update",
        "device_status",
        "system_status_update",
        "pong",
        "error",
    ]
)
keys = st.sampled_from(
    [
        "device_id",
        "telemetry",
        "data",
        "metric",
        "value",
        "unit",
        "timestamp",
        "alert",
        "severity",
        "alert_type",
        "new_status",
        "old_status",
        "updates",
        "status",
        "metrics",
        "metric_name",
        "metric_value",
        "command_response",
    ]
)
frames = st.builds(
    lambda t, body: {"type": t, **body},
    types,
    st.dictionaries(keys, json_values | st.dictionaries(keys, json_values, max_size=4), max_size=6),
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
    assert reason.startswith("valtronics ")
    return None


@settings(max_examples=300, deadline=None)
@given(json_values)
def test_any_json_value_only_raises_bad_input(value: Any) -> None:
    outcome(envelope(json.dumps(value)))


@settings(max_examples=500, deadline=None)
@given(frames)
def test_any_shaped_frame_only_raises_bad_input(frame: dict[str, Any]) -> None:
    got = outcome(envelope(json.dumps(frame)))
    if got:
        assert all(r.source == "valtronics" and r.stream == "plant" for r in got)
        assert all(r.entity for r in got)
        states = [r for r in got if isinstance(r, StateEvent)]
        assert all(s.value == s.value.lower() for s in states)


@settings(max_examples=300, deadline=None)
@given(st.text())
def test_any_text_only_raises_bad_input(text: str) -> None:
    outcome(envelope(text))
