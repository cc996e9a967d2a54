"""Nobil normalizer: golden frames, change detection with meta.previous, every rejection reason,
and never another exception."""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.errors import BadInputError
from pipeline.models import RawEnvelope, StateEvent
from pipeline.normalize.nobil import normalize

GOLDEN = Path(__file__).parents[3] / "data" / "upstream" / "nobil"
RECEIVED_MS = 1_700_000_100_000
UNSET = object()


def envelope(payload: Any, previous: Any = UNSET) -> RawEnvelope:
    text = payload if isinstance(payload, str) else json.dumps(payload)
    meta: dict[str, Any] = {"connection": 1}
    if previous is not UNSET:
        meta["previous"] = previous
    return RawEnvelope(
        source="nobil", stream="nobil-no", received_at_ms=RECEIVED_MS, payload=text, meta=meta
    )


def golden(name: str) -> Any:
    return orjson.loads((GOLDEN / name).read_text(encoding="utf-8"))


def golden_text(name: str) -> str:
    return (GOLDEN / name).read_text(encoding="utf-8")


def state(station: dict[str, Any]) -> dict[str, Any]:
    """A station state as the producer keeps it."""
    return {"status": station["status"], "connectors": copy.deepcopy(station["connectors"])}


def triples(events: list[StateEvent]) -> list[tuple[str, str, str, str | None]]:
    return [(e.entity, e.name, e.value, e.previous) for e in events]


CONNECTOR_STATUS = {-1: "unknown", 0: "available", 1: "occupied"}
STATION_STATUS = {-1: "unknown", 0: "available", 1: "occupied", 2: "error"}


def expected_all(station: dict[str, Any]) -> list[tuple[str, str, str, str | None]]:
    """Independent oracle: every state of a station, previous unknown."""
    uuid = station["uuid"]
    out: list[tuple[str, str, str, str | None]] = [
        (uuid, "status", STATION_STATUS[station["status"]], None)
    ]
    for i, c in enumerate(station["connectors"]):
        out.append((f"{uuid}/{i}", "status", CONNECTOR_STATUS[c["status"]], None))
        out.append((f"{uuid}/{i}", "error", "error" if c["error"] else "ok", None))
    return out


# --- snapshot:init --------------------------------------------------------------------------


def test_first_snapshot_emits_every_state_with_unknown_previous() -> None:
    frame = golden("snapshot_init.json")

    got = normalize(envelope(golden_text("snapshot_init.json")))

    assert triples(got) == [t for s in frame["data"] for t in expected_all(s)]
    for event in got:
        assert event.source == "nobil"
        assert event.stream == "nobil-no"


def iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def test_first_snapshot_is_news_at_first_sight_with_the_change_time_annotated() -> None:
    """Issue 14: a connector already in error in the first snapshot fired at its upstream
    change time, minutes (or days) before any data arrived. Its events now carry the receipt
    time; the upstream change time is kept as the ``changed_at`` annotation."""
    frame = golden("snapshot_init.json")
    got = normalize(envelope(golden_text("snapshot_init.json")))
    by_key = {(e.entity, e.name): e for e in got}
    assert all(e.ts_ms == RECEIVED_MS for e in got)
    for station in frame["data"]:
        known = [c["timestamp"] for c in station["connectors"] if c["timestamp"] != -1]
        status = by_key[(station["uuid"], "status")]
        assert status.labels == {"station": station["uuid"]}
        assert status.annotations == ({"changed_at": iso(max(known))} if known else {})
        for i, c in enumerate(station["connectors"]):
            event = by_key[(f"{station['uuid']}/{i}", "error")]
            assert event.labels == {"station": station["uuid"], "connector": str(i)}
            expected = {} if c["timestamp"] == -1 else {"changed_at": iso(c["timestamp"])}
            assert event.annotations == expected
    # The golden snapshot has never-reported connectors and a station with only those.
    assert any(c["timestamp"] == -1 for s in frame["data"] for c in s["connectors"])


def test_later_snapshot_and_updates_keep_the_upstream_change_time() -> None:
    frame = golden("snapshot_init.json")
    first = frame["data"][0]
    before = state(first)
    before["connectors"][0]["error"] = 1 - before["connectors"][0]["error"]
    got = normalize(envelope(golden_text("snapshot_init.json"), {first["uuid"]: before}))
    connector = first["connectors"][0]
    event = next(e for e in got if e.entity == f"{first['uuid']}/0" and e.name == "error")
    assert event.ts_ms == (RECEIVED_MS if connector["timestamp"] == -1 else connector["timestamp"])
    assert event.annotations == {}


def test_snapshot_after_reconnect_emits_only_what_changed() -> None:
    frame = golden("snapshot_init.json")
    first, second, third = frame["data"][0], frame["data"][1], frame["data"][2]
    before_first = state(first)
    before_first["connectors"][1]["status"] = 0  # was available, is occupied now
    before_first["connectors"][1]["timestamp"] = 1_699_000_000_000
    before_second = state(second)
    before_second["connectors"][1]["timestamp"] = 1  # only a timestamp differs
    previous = {first["uuid"]: before_first, second["uuid"]: before_second, third["uuid"]: None}

    got = normalize(envelope(golden_text("snapshot_init.json"), previous))

    assert triples(got) == [
        (f"{first['uuid']}/1", "status", "occupied", "available"),
        *expected_all(third),  # a station we did not know before
    ]
    assert got[0].ts_ms == first["connectors"][1]["timestamp"]


def test_snapshot_with_empty_previous_has_nothing_new() -> None:
    assert normalize(envelope(golden_text("snapshot_init.json"), {})) == []


def test_docs_snapshot_sample_without_station_status() -> None:
    sample = {
        "type": "snapshot:init",
        "data": [
            {
                "uuid": "NOR_01270",
                "connectors": [
                    {"status": -1, "error": 0, "timestamp": -1},
                    {"status": 0, "error": 0, "timestamp": 1453835318000},
                ],
            }
        ],
    }

    got = normalize(envelope(sample))

    assert triples(got) == [
        ("NOR_01270/0", "status", "unknown", None),
        ("NOR_01270/0", "error", "ok", None),
        ("NOR_01270/1", "status", "available", None),
        ("NOR_01270/1", "error", "ok", None),
    ]
    assert [e.ts_ms for e in got] == [RECEIVED_MS] * 4  # first sight (issue 14)
    changed = iso(1453835318000)
    assert [e.annotations.get("changed_at") for e in got] == [None, None, changed, changed]


# --- status:update --------------------------------------------------------------------------


def test_update_with_unknown_previous_emits_every_state() -> None:
    frame = golden("status_update.json")
    for previous in (UNSET, None, "garbage"):
        got = normalize(envelope(golden_text("status_update.json"), previous))
        assert triples(got) == expected_all(frame["data"])


def test_update_identical_to_previous_emits_nothing() -> None:
    frame = golden("status_update.json")
    assert normalize(envelope(golden_text("status_update.json"), state(frame["data"]))) == []


def test_update_emits_the_connector_that_changed() -> None:
    frame = golden("status_update.json")
    uuid = frame["data"]["uuid"]
    before = state(frame["data"])
    before["connectors"][0]["status"] = 0
    before["connectors"][0]["timestamp"] = 1_699_999_000_000

    got = normalize(envelope(golden_text("status_update.json"), before))

    assert triples(got) == [(f"{uuid}/0", "status", "occupied", "available")]
    assert got[0].ts_ms == frame["data"]["connectors"][0]["timestamp"] == 1_700_000_001_000


def test_demo_error_update_reports_connector_and_station_error() -> None:
    frame = golden("status_update_error.json")
    before = state(frame["data"])
    before["status"] = 0
    before["connectors"][0]["error"] = 0

    got = normalize(envelope(golden_text("status_update_error.json"), before))

    assert triples(got) == [
        ("NOR_01333", "status", "error", "available"),
        ("NOR_01333/0", "error", "error", "ok"),
    ]
    assert {e.ts_ms for e in got} == {1_700_000_011_000}


def test_update_with_a_new_connector_reports_it_as_unknown_before() -> None:
    frame = golden("status_update.json")
    before = state(frame["data"])
    before["connectors"].pop()

    got = normalize(envelope(golden_text("status_update.json"), before))

    last = len(frame["data"]["connectors"]) - 1
    assert [(e.entity, e.previous) for e in got] == [(f"{frame['data']['uuid']}/{last}", None)] * 2


def test_unreadable_previous_values_count_as_unknown() -> None:
    frame = golden("status_update.json")
    before = state(frame["data"])
    before["status"] = 9
    before["connectors"] = [{"status": "x", "error": True}, 5]

    got = normalize(envelope(golden_text("status_update.json"), before))

    assert triples(got) == expected_all(frame["data"])


def test_docs_update_sample() -> None:
    sample = {
        "type": "status:update",
        "data": {
            "uuid": "NOR_01333",
            "status": 0,
            "connectors": [
                {"status": 0, "error": 0, "timestamp": 1362520099000},
                {"status": -1, "error": 0, "timestamp": -1},
            ],
        },
    }
    before = copy.deepcopy(sample["data"])
    before["connectors"][0]["status"] = 1  # type: ignore[index]
    before["status"] = 1  # type: ignore[index]

    got = normalize(envelope(sample, before))

    assert got == [
        StateEvent(
            "nobil",
            "nobil-no",
            "NOR_01333",
            "status",
            "available",
            "occupied",
            1362520099000,
            {"station": "NOR_01333"},
        ),
        StateEvent(
            "nobil",
            "nobil-no",
            "NOR_01333/0",
            "status",
            "available",
            "occupied",
            1362520099000,
            {"station": "NOR_01333", "connector": "0"},
        ),
    ]


# --- status:raw -----------------------------------------------------------------------------


def test_raw_keepalive_repeating_a_known_state_emits_nothing() -> None:
    data = golden("status_raw.json")["data"]
    before = {"status": data["status"], "error": data["error"], "timestamp": data["timestamp"]}
    assert normalize(envelope(golden_text("status_raw.json"), before)) == []


def test_raw_with_unknown_previous_emits_status_and_error() -> None:
    data = golden("status_raw.json")["data"]
    entity = f"{data['uuid']}/{data['connector']}"

    got = normalize(envelope(golden_text("status_raw.json"), None))

    assert triples(got) == [(entity, "status", "available", None), (entity, "error", "ok", None)]
    assert {e.ts_ms for e in got} == {data["timestamp"]}


def test_raw_change_is_reported_against_the_previous_connector() -> None:
    sample = {
        "type": "status:raw",
        "code": 1,
        "data": {"uuid": "NOR_01333", "connector": 0, "status": 0, "error": 1, "timestamp": 1},
    }

    got = normalize(envelope(sample, {"status": 0, "error": 0, "timestamp": -1}))

    assert triples(got) == [("NOR_01333/0", "error", "error", "ok")]
    assert got[0].ts_ms == 1000  # 1 is read as seconds


# --- Enova ----------------------------------------------------------------------------------


def test_enova_status_becomes_a_lowercase_state() -> None:
    frame = golden("enova_status.json")

    got = normalize(envelope(golden_text("enova_status.json")))

    assert got == [
        StateEvent(
            "nobil",
            "nobil-no",
            f"{frame['nobilId']}/{frame['evseUId']}",
            "status",
            "charging",
            None,
            RECEIVED_MS,
            {"station": frame["nobilId"], "evse": frame["evseUId"]},
        )
    ]


@pytest.mark.parametrize(
    ("previous", "expected"),
    [
        ("AVAILABLE", [("outoforder", "available")]),
        ("OUTOFORDER", []),
        (None, [("outoforder", None)]),
    ],
)
def test_enova_emits_only_changes(previous: str | None, expected: list[Any]) -> None:
    got = normalize(envelope(golden_text("enova_outoforder.json"), previous))
    assert [(e.value, e.previous) for e in got] == expected


@pytest.mark.parametrize(
    "status",
    ["AVAILABLE", "BLOCKED", "CHARGING", "INOPERATIVE", "OUTOFORDER", "PLANNED", "REMOVED",
     "RESERVED", "UNKNOWN", "charging"],
)  # fmt: skip
def test_every_documented_enova_status(status: str) -> None:
    got = normalize(envelope({"nobilId": "NOR_23314", "evseUId": "e1", "status": status}))
    assert [e.value for e in got] == [status.lower()]


# --- rejections -----------------------------------------------------------------------------

STATION = {
    "uuid": "NOR_00001",
    "status": 0,
    "connectors": [{"status": 0, "error": 0, "timestamp": -1}],
}


def update(**changes: Any) -> dict[str, Any]:
    data = {**copy.deepcopy(STATION), **changes}
    return {"type": "status:update", "data": data}


def connector(**changes: Any) -> dict[str, Any]:
    return update(connectors=[{"status": 0, "error": 0, "timestamp": -1, **changes}])


def raw(**changes: Any) -> dict[str, Any]:
    data = {"uuid": "NOR_00001", "connector": 0, "status": 0, "error": 0, "timestamp": -1}
    data.update(changes)
    return {"type": "status:raw", "code": 1, "data": {k: v for k, v in data.items() if v != "-"}}


REJECTED = [
    ("nope", "nobil frame: not valid JSON (invalid literal, expected 'null' at char 0)"),
    ("", "nobil frame: not valid JSON (Input is a zero-length, empty document at char 0)"),
    ([], "nobil frame: expected a JSON object, got array"),
    ("null", "nobil frame: expected a JSON object, got null"),
    (
        {"data": []},
        "nobil frame: neither a legacy message ('type') nor an Enova status ('nobilId')",
    ),
    (
        {"type": "status:delete", "data": {}},
        "nobil frame: unknown type 'status:delete'; expected 'snapshot:init', 'status:update' or "
        "'status:raw'",
    ),
    (
        {"type": None},
        "nobil frame: unknown type (null); expected 'snapshot:init', 'status:update' or "
        "'status:raw'",
    ),
    ({"type": "snapshot:init"}, "nobil snapshot:init: data: missing"),
    (
        {"type": "snapshot:init", "data": {}},
        "nobil snapshot:init: data: must be an array of stations, got object",
    ),
    (
        {"type": "snapshot:init", "data": [STATION, 5]},
        "nobil snapshot:init: data[1]: must be a station object, got number",
    ),
    (
        {"type": "status:update", "data": [STATION]},
        "nobil status:update: data: must be a station object, got array",
    ),
    (update(uuid=None), "nobil status:update: data.uuid: missing"),
    (update(uuid=""), "nobil status:update: data.uuid: empty"),
    (update(uuid=1333), "nobil status:update: data.uuid: must be a string, got number"),
    (update(uuid="NOR/1"), "nobil status:update: data.uuid: 'NOR/1' must not contain '/'"),
    (update(status=3), "nobil status:update: data.status: 3 is not a station status (-1, 0, 1, 2)"),
    (
        update(status="0"),
        "nobil status:update: data.status: '0' is not a station status (-1, 0, 1, 2)",
    ),
    (update(connectors=None), "nobil status:update: data.connectors: missing"),
    (
        update(connectors={}),
        "nobil status:update: data.connectors: must be an array, got object",
    ),
    (
        update(connectors=[[]]),
        "nobil status:update: data.connectors[0]: must be an object, got array",
    ),
    (
        connector(status=2),
        "nobil status:update: data.connectors[0].status: 2 is not a connector status (-1, 0, 1)",
    ),
    (
        connector(status=True),
        "nobil status:update: data.connectors[0].status: (boolean) is not a connector status "
        "(-1, 0, 1)",
    ),
    (
        connector(status=None),
        "nobil status:update: data.connectors[0].status: missing; expected a connector status "
        "(-1, 0, 1)",
    ),
    (
        connector(error=-1),
        "nobil status:update: data.connectors[0].error: -1 is not an error flag (0, 1)",
    ),
    (
        connector(timestamp=None),
        "nobil status:update: data.connectors[0].timestamp: missing; expected epoch milliseconds "
        "or -1",
    ),
    (
        connector(timestamp="1362520099000"),
        "nobil status:update: data.connectors[0].timestamp: must be a number, got string",
    ),
    (
        connector(timestamp=-5),
        "nobil status:update: data.connectors[0].timestamp: -5 is not epoch milliseconds or -1",
    ),
    (
        connector(timestamp=0),
        "nobil status:update: data.connectors[0].timestamp: 0 is not epoch milliseconds or -1",
    ),
    (
        connector(timestamp=1e20),
        "nobil status:update: data.connectors[0].timestamp: 1e+20 is not epoch milliseconds or -1",
    ),
    (
        {"type": "status:raw", "code": 1, "data": None},
        "nobil status:raw: data: must be a connector object, got null",
    ),
    (raw(uuid="-"), "nobil status:raw: data.uuid: missing"),
    (raw(connector="-"), "nobil status:raw: data.connector: missing"),
    (
        raw(connector=-1),
        "nobil status:raw: data.connector: -1 is not a connector index (0, 1, ...)",
    ),
    (
        raw(connector="0"),
        "nobil status:raw: data.connector: '0' is not a connector index (0, 1, ...)",
    ),
    (raw(status=5), "nobil status:raw: data.status: 5 is not a connector status (-1, 0, 1)"),
    ({"nobilId": None}, "nobil enova status: nobilId: missing"),
    ({"nobilId": "NOR_1"}, "nobil enova status: evseUId: missing"),
    (
        {"nobilId": "NOR_1", "evseUId": 7},
        "nobil enova status: evseUId: must be a string, got number",
    ),
    ({"nobilId": "NOR_1", "evseUId": "e"}, "nobil enova status: status: missing"),
    (
        {"nobilId": "NOR_1", "evseUId": "e", "status": "BROKEN"},
        "nobil enova status: status: 'BROKEN' is not one of AVAILABLE, BLOCKED, CHARGING, "
        "INOPERATIVE, OUTOFORDER, PLANNED, REMOVED, RESERVED, UNKNOWN",
    ),
]


@pytest.mark.parametrize(("payload", "reason"), REJECTED)
def test_rejected_frames_name_the_reason(payload: Any, reason: str) -> None:
    with pytest.raises(BadInputError) as caught:
        normalize(envelope(payload))

    assert caught.value.reason == reason


def test_snapshot_previous_of_the_wrong_shape_is_rejected() -> None:
    with pytest.raises(BadInputError) as caught:
        normalize(envelope(golden_text("snapshot_init.json"), ["NOR_01333"]))

    assert caught.value.reason == (
        "nobil snapshot:init: meta.previous: must map station uuids to states, got array"
    )


def test_reason_does_not_echo_long_values() -> None:
    secret = "apikey=" + "s" * 60
    with pytest.raises(BadInputError) as caught:
        normalize(envelope({"type": secret}))
    assert "s" * 40 not in caught.value.reason


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
small_ints = st.integers(min_value=-2, max_value=3)
connectors = st.lists(
    st.fixed_dictionaries(
        {
            "status": small_ints,
            "error": small_ints,
            "timestamp": st.one_of(st.just(-1), st.integers(min_value=-2, max_value=2**40)),
        }
    ),
    max_size=4,
)
stations = st.fixed_dictionaries(
    {
        "uuid": st.sampled_from(["NOR_00001", "FIN_00002"]),
        "status": small_ints,
        "connectors": connectors,
    }
)


def outcome(env: RawEnvelope) -> list[StateEvent] | None:
    """Normalize; None for a BadInputError. Anything else raising fails the property."""
    try:
        got = normalize(env)
    except BadInputError as exc:
        reason = exc.reason
    else:
        assert all(isinstance(r, StateEvent) for r in got)
        return got
    assert reason.startswith("nobil ")
    return None


@settings(max_examples=300, deadline=None)
@given(json_values, st.one_of(st.just(UNSET), json_values))
def test_any_json_only_raises_bad_input(value: Any, previous: Any) -> None:
    outcome(envelope(json.dumps(value), previous))


@settings(max_examples=300, deadline=None)
@given(
    st.sampled_from(["snapshot:init", "status:update", "status:raw"]),
    st.one_of(json_values, stations, st.lists(stations, max_size=3)),
    st.one_of(st.just(UNSET), json_values, stations),
)
def test_any_data_of_a_known_type_only_raises_bad_input(
    kind: str, data: Any, previous: Any
) -> None:
    outcome(envelope(json.dumps({"type": kind, "data": data}), previous))


@settings(max_examples=200, deadline=None)
@given(stations, st.one_of(st.none(), stations))
def test_update_against_itself_is_silent_and_events_are_real_changes(
    station: dict[str, Any], previous: dict[str, Any] | None
) -> None:
    frame = json.dumps({"type": "status:update", "data": station})
    got = outcome(envelope(frame, station))
    assert got in (None, [])
    changes = outcome(envelope(frame, previous))
    for event in changes or []:
        assert event.previous != event.value
        assert event.ts_ms > 0


@settings(max_examples=300, deadline=None)
@given(st.text())
def test_any_text_only_raises_bad_input(text: str) -> None:
    outcome(envelope(text))
