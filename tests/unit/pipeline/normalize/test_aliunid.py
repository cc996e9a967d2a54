"""aliunid normalizer: golden frames, every rejection reason, and never another exception."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.errors import BadInputError
from pipeline.models import Measurement, RawEnvelope
from pipeline.normalize import NORMALIZERS, normalize_envelope
from pipeline.normalize.aliunid import MAX_DEPTH, normalize

GOLDEN = Path(__file__).parents[3] / "data" / "upstream" / "aliunid"
MP = "957f7b09-af00-4b59-b708-e06ae28f7bbb"
RECEIVED_MS = 1_700_000_000_123


def envelope(payload: str | dict[str, Any] | list[Any], source: str = "aliunid") -> RawEnvelope:
    text = payload if isinstance(payload, str) else json.dumps(payload)
    return RawEnvelope(source=source, stream="ev-hub", received_at_ms=RECEIVED_MS, payload=text)


def data_frame(data: Any, frame_id: Any = MP) -> dict[str, Any]:
    return {"type": "data", "id": frame_id, "data": data}


def golden(name: str) -> str:
    return (GOLDEN / name).read_text(encoding="utf-8")


def numeric_leaves(node: dict[str, Any], prefix: str = "") -> dict[str, float]:
    """Independent oracle: dotted path -> value of every non-boolean number."""
    out: dict[str, float] = {}
    for key, value in node.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(numeric_leaves(value, f"{path}."))
        elif isinstance(value, int | float) and not isinstance(value, bool):
            out[path] = float(value)
    return out


# --- golden frames ----------------------------------------------------------------------------


def test_golden_data_frame_yields_one_measurement_per_value() -> None:
    frame = orjson.loads(golden("data.json"))

    got = normalize(envelope(golden("data.json")))

    by_metric = {m.metric: m for m in got}
    assert {m: v.value for m, v in by_metric.items()} == numeric_leaves(frame["data"])
    assert by_metric["sys.kW"].unit == "kW"
    assert by_metric["sys.kWh+"].unit == "kWh"
    for m in got:
        assert m.entity == frame["id"]
        assert m.source == "aliunid"
        assert m.stream == "ev-hub"
        assert m.ts_ms == RECEIVED_MS
        assert isinstance(m.value, float)


@pytest.mark.parametrize("name", sorted(p.name for p in GOLDEN.glob("data*.json")))
def test_every_golden_data_frame_normalizes(name: str) -> None:
    frame = orjson.loads(golden(name))

    got = normalize(envelope(golden(name)))

    assert {m.metric: m.value for m in got} == numeric_leaves(frame["data"])
    assert {m.entity for m in got} == {frame["id"]}


def test_documented_sample_exact_records() -> None:
    """The sample of the aliunid WebSocket doc, to the last field (zero is a value)."""
    payload = '{"type": "data", "id": "' + MP + '", "data": {"sys": {"kW": 0, "kWh+": 123}}}'

    got = normalize(envelope(payload))

    assert got == [
        Measurement("aliunid", "ev-hub", MP, "sys.kW", 0.0, "kW", RECEIVED_MS, {}),
        Measurement("aliunid", "ev-hub", MP, "sys.kWh+", 123.0, "kWh", RECEIVED_MS, {}),
    ]


def test_golden_structure_frame_is_valid_and_empty() -> None:
    assert normalize(envelope(golden("structure.json"))) == []


def test_golden_extended_frame_units_and_phase_labels() -> None:
    frame = orjson.loads(golden("data_extended.json"))

    got = normalize(envelope(golden("data_extended.json")))

    by_metric = {m.metric: m for m in got}
    assert {m: v.value for m, v in by_metric.items()} == numeric_leaves(frame["data"])
    assert len(got) == len(by_metric)  # no metric twice
    expected_units = {
        "sys.Hz": "Hz",
        "sys.kWh+": "kWh",
        "sys.kWh-": "kWh",
        "sys.kvarh+": "kvarh",
        "sys.kvarh-": "kvarh",
        "sys.kW": "kW",
        "sys.kVA": "kVA",
        "sys.kvar": "kvar",
        "l1.V": "V",
        "l1.A": "A",
    }
    for metric, unit in expected_units.items():
        assert by_metric[metric].unit == unit, metric
    for block in ("l1", "l2", "l3"):
        phase = frame["data"][block]["phase"]
        assert by_metric[f"{block}.V"].labels == {"phase": phase}
        assert f"{block}.phase" not in by_metric  # strings are labels, not measurements
    assert by_metric["sys.kW"].labels == {}


# --- shape of the output ------------------------------------------------------------------------


def test_booleans_nulls_and_arrays_are_not_measurements() -> None:
    frame = data_frame({"sys": {"kW": 1.5, "on": True, "off": False, "x": None, "list": [1, 2]}})

    got = normalize(envelope(frame))

    assert [(m.metric, m.value) for m in got] == [("sys.kW", 1.5)]


def test_string_leaves_label_their_siblings_only() -> None:
    frame = data_frame({"l1": {"phase": "R", "V": 230, "h": {"h3": 1.0}}, "top": 2})

    got = {m.metric: m.labels for m in normalize(envelope(frame))}

    assert got == {"l1.V": {"phase": "R"}, "l1.h.h3": {}, "top": {}}


def test_unknown_keys_get_no_unit() -> None:
    got = normalize(envelope(data_frame({"sys": {"temperature": 21.5, "kWh": 3}})))

    assert {m.metric: m.unit for m in got} == {"sys.temperature": "", "sys.kWh": "kWh"}


def test_labels_are_not_shared_between_records() -> None:
    got = normalize(envelope(data_frame({"l1": {"phase": "R", "V": 1, "A": 2}})))

    assert got[0].labels == got[1].labels
    assert got[0].labels is not got[1].labels


def test_nesting_up_to_max_depth_is_accepted() -> None:
    keys = [f"k{i}" for i in range(MAX_DEPTH)]
    data: Any = 1
    for key in reversed(keys):
        data = {key: data}

    got = normalize(envelope(data_frame(data)))

    assert [m.metric for m in got] == [".".join(keys)]


def test_extra_frame_keys_are_ignored() -> None:
    frame = {**data_frame({"sys": {"kW": 3}}), "ts": "whatever", "version": 2}

    assert [m.value for m in normalize(envelope(frame))] == [3.0]


# --- rejections -------------------------------------------------------------------------------

TOO_DEEP: Any = 1
for _key in reversed("abcdefghi"):
    TOO_DEEP = {_key: TOO_DEEP}

REJECTED = [
    ("not json", "aliunid frame: not valid JSON (invalid literal, expected 'null' at char 0)"),
    ("", "aliunid frame: not valid JSON (Input is a zero-length, empty document at char 0)"),
    ('{"type": "data", ', "aliunid frame: not valid JSON (unexpected end of data at char 17)"),
    (
        '{"type": "data", "id": "x", "data": {"kW": 1e400}}',
        "aliunid frame: not valid JSON (number is infinity when parsed as double at char 43)",
    ),
    (
        '{"type": "data", "id": "x", "data": {"kW": NaN}}',
        "aliunid frame: not valid JSON (unexpected character, expected a JSON value at char 43)",
    ),
    (
        "\ud800",
        "aliunid frame: not valid JSON (str is not valid UTF-8: surrogates not allowed at char 0)",
    ),
    ([1, 2], "aliunid frame: expected a JSON object, got array"),
    ('"data"', "aliunid frame: expected a JSON object, got string"),
    ("null", "aliunid frame: expected a JSON object, got null"),
    ("42", "aliunid frame: expected a JSON object, got number"),
    ({"id": MP, "data": {}}, "aliunid frame: missing 'type'; expected 'data' or 'structure'"),
    (
        {"type": "foo", "id": MP},
        "aliunid frame: unknown type 'foo'; expected 'data' or 'structure'",
    ),
    ({"type": 7, "id": MP}, "aliunid frame: unknown type 7; expected 'data' or 'structure'"),
    (
        {"type": ["data"], "id": MP},
        "aliunid frame: unknown type (array); expected 'data' or 'structure'",
    ),
    (
        '{"id": "x", "type": ' + "[" * 600 + "]" * 600 + "}",
        "aliunid frame: JSON nests deeper than 64 levels",  # the shared decoding step's limit
    ),
    (
        {"type": "x" * 100, "id": MP},
        f"aliunid frame: unknown type '{'x' * 37}...'; expected 'data' or 'structure'",
    ),
    ({"type": "data", "data": {"kW": 1}}, "aliunid data frame: missing 'id'"),
    ({"type": "data", "id": "", "data": {"kW": 1}}, "aliunid data frame: empty 'id'"),
    (
        {"type": "data", "id": 5, "data": {"kW": 1}},
        "aliunid data frame: 'id' must be a string, got number",
    ),
    ({"type": "structure", "structure": {}}, "aliunid structure frame: missing 'id'"),
    ({"type": "data", "id": MP}, "aliunid data frame: missing 'data'"),
    (data_frame(None), "aliunid data frame: 'data' must be an object, got null"),
    (data_frame([1, 2]), "aliunid data frame: 'data' must be an object, got array"),
    (data_frame(12.5), "aliunid data frame: 'data' must be an object, got number"),
    (data_frame({}), "aliunid data frame: 'data' holds no numeric value"),
    (
        data_frame({"sys": {"phase": "R", "on": True, "x": None}}),
        "aliunid data frame: 'data' holds no numeric value",
    ),
    (
        data_frame(TOO_DEEP),
        "aliunid data frame: 'data' nests deeper than 8 levels at 'a.b.c.d.e.f.g.h'",
    ),
]


@pytest.mark.parametrize(("payload", "reason"), REJECTED)
def test_rejected_frames_name_the_reason(payload: Any, reason: str) -> None:
    with pytest.raises(BadInputError) as caught:
        normalize(envelope(payload))

    assert caught.value.reason == reason
    assert str(caught.value) == reason


def test_reason_does_not_echo_the_frame() -> None:
    secret = "apiKey=very-secret-token-1234567890-abcdef"
    with pytest.raises(BadInputError) as caught:
        normalize(envelope({"type": secret, "id": MP}))

    assert "very-secret-token-1234567890-abcdef" not in caught.value.reason


# --- registry ---------------------------------------------------------------------------------


def test_registry_dispatches_by_source() -> None:
    assert NORMALIZERS["aliunid"] is normalize
    assert normalize_envelope(envelope(golden("data.json"))) == normalize(
        envelope(golden("data.json"))
    )


def test_registry_rejects_unknown_source_naming_known_ones() -> None:
    with pytest.raises(BadInputError) as caught:
        normalize_envelope(envelope(golden("data.json"), source="zigbee"))

    known = ", ".join(sorted(NORMALIZERS))
    assert caught.value.reason == f"no normalizer for source 'zigbee'; known sources: {known}"


# --- properties -------------------------------------------------------------------------------

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=10),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=6), children, max_size=4)
    ),
    max_leaves=40,
)


def outcome(env: RawEnvelope) -> list[Measurement] | None:
    """Normalize; None for a BadInputError. Anything else raising fails the property."""
    try:
        got = normalize(env)
    except BadInputError as exc:
        reason = exc.reason
    else:
        assert all(isinstance(m, Measurement) for m in got)
        return got
    assert reason.startswith("aliunid ")
    return None


@settings(max_examples=300, deadline=None)
@given(json_values)
def test_any_json_value_as_payload_only_raises_bad_input(value: Any) -> None:
    outcome(envelope(json.dumps(value)))


@settings(max_examples=300, deadline=None)
@given(json_values, st.one_of(st.text(max_size=8), json_values))
def test_any_json_as_data_frame_only_raises_bad_input(data: Any, frame_id: Any) -> None:
    got = outcome(envelope(json.dumps(data_frame(data, frame_id))))

    if got is not None:
        assert all(m.entity == frame_id for m in got)
        assert all(m.ts_ms == RECEIVED_MS for m in got)


@settings(max_examples=300, deadline=None)
@given(st.text())
def test_any_text_as_payload_only_raises_bad_input(text: str) -> None:
    outcome(envelope(text))
