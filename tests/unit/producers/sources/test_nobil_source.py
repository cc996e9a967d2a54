"""Nobil source: config, URL, snapshot tracking (meta.previous) and envelopes (no sockets)."""

from __future__ import annotations

import base64
import json
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest
from pydantic import ValidationError

from producers.envelope import decode_envelope, encode_envelope
from producers.sources.nobil import (
    KIND,
    EnovaTracker,
    LegacyTracker,
    NobilSource,
    build_envelope,
    build_url,
)

BASE = "ws://realtime.nobil.no/api/v1/stream"


def station(uuid: str, *states: tuple[int, int], status: int = 0) -> dict[str, Any]:
    connectors = [
        {"status": s, "error": e, "timestamp": 1_000 + i} for i, (s, e) in enumerate(states)
    ]
    return {"uuid": uuid, "status": status, "connectors": connectors}


def snapshot(*stations: dict[str, Any]) -> str:
    return json.dumps({"type": "snapshot:init", "data": list(stations)})


def update(data: dict[str, Any]) -> str:
    return json.dumps({"type": "status:update", "data": data})


def raw(uuid: str, connector: int, status: int, error: int = 0, ts: int = 5_000) -> str:
    data = {"uuid": uuid, "connector": connector, "status": status, "error": error, "timestamp": ts}
    return json.dumps({"type": "status:raw", "code": 1, "data": data})


def state(data: dict[str, Any]) -> dict[str, Any]:
    return {"status": data["status"], "connectors": data["connectors"]}


# --- config and URL -------------------------------------------------------------------------


def test_defaults() -> None:
    source = NobilSource(name="nobil", kind="nobil", url=BASE, api_key="k-123")
    assert source.key_param == "apikey"
    assert source.format == "legacy"
    assert source.ping_interval == 30.0
    assert "k-123" not in repr(source)


@pytest.mark.parametrize("param", ["apikey", "key", "access_token"])
def test_url_carries_the_key_in_the_configured_parameter(param: str) -> None:
    key = "k/y+z=1&apikey=evil #?"
    url = build_url(BASE, key, param)
    assert url.startswith(f"{BASE}?{param}=k%2Fy%2Bz%3D1%26apikey%3Devil%20%23%3F")
    assert parse_qsl(urlsplit(url).query) == [(param, key)]


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"url": f"{BASE}?apikey=secret-value"}, "must not have a query string or fragment"),
        ({"url": "http://realtime.nobil.no/api/v1/stream"}, "is not a WebSocket URL"),
        ({"key_param": "token"}, "key_param"),
        ({"format": "v2"}, "format"),
        ({"api_key": ""}, "api_key"),
        ({"surprise": 1}, "surprise"),
    ],
)
def test_invalid_config(changes: dict[str, Any], message: str) -> None:
    values = {"name": "nobil", "kind": "nobil", "url": BASE, "api_key": "k-123", **changes}
    with pytest.raises(ValidationError) as caught:
        NobilSource(**values)
    assert message in str(caught.value)
    assert "secret-value" not in str(caught.value)


# --- legacy tracker -------------------------------------------------------------------------


def test_first_snapshot_has_no_previous_and_no_key() -> None:
    tracker = LegacyTracker()
    seen = tracker.observe(snapshot(station("NOR_00001", (0, 0))))
    assert seen.key is None
    assert seen.meta == {}
    assert tracker.stations == {
        "NOR_00001": {"status": 0, "connectors": [{"status": 0, "error": 0, "timestamp": 1000}]}
    }


def test_update_carries_the_previous_station_state() -> None:
    tracker = LegacyTracker()
    first = station("NOR_00001", (0, 0), (1, 0))
    tracker.observe(snapshot(first))
    second = station("NOR_00001", (1, 0), (1, 0), status=1)

    seen = tracker.observe(update(second))

    assert seen.key == b"NOR_00001"
    assert seen.meta == {"previous": state(first)}
    third = station("NOR_00001", (1, 1), (1, 0), status=2)
    assert tracker.observe(update(third)).meta == {"previous": state(second)}


def test_update_of_an_unknown_station_has_null_previous() -> None:
    tracker = LegacyTracker()
    assert tracker.observe(update(station("FIN_00002", (0, 0)))).meta == {"previous": None}
    tracker.observe(snapshot())
    seen = tracker.observe(update(station("FIN_00003", (0, 0))))
    assert (seen.key, seen.meta) == (b"FIN_00003", {"previous": None})


def test_raw_carries_the_previous_connector_and_patches_it() -> None:
    tracker = LegacyTracker()
    tracker.observe(snapshot(station("NOR_00001", (0, 0), (1, 0))))

    seen = tracker.observe(raw("NOR_00001", 1, 0, ts=9_000))

    assert seen.key == b"NOR_00001"
    assert seen.meta == {"previous": {"status": 1, "error": 0, "timestamp": 1001}}
    # The update that follows the raw change does not report the connector again.
    after = tracker.observe(update(station("NOR_00001", (0, 0), (0, 0))))
    assert after.meta["previous"]["connectors"][1] == {"status": 0, "error": 0, "timestamp": 9000}


@pytest.mark.parametrize("connector", [2, -1, "0", True, None])
def test_raw_for_an_unknown_connector_has_null_previous(connector: Any) -> None:
    tracker = LegacyTracker()
    tracker.observe(snapshot(station("NOR_00001", (0, 0), (1, 0))))
    frame = json.dumps(
        {"type": "status:raw", "data": {"uuid": "NOR_00001", "connector": connector}}
    )
    seen = tracker.observe(frame)
    assert seen.meta == {"previous": None}
    assert tracker.stations is not None
    assert tracker.stations["NOR_00001"] == state(station("NOR_00001", (0, 0), (1, 0)))


def test_snapshot_after_reconnect_lists_changed_and_new_stations_and_resets() -> None:
    tracker = LegacyTracker()
    a, b, c = station("A_00001", (0, 0)), station("B_00002", (1, 0)), station("C_00003", (0, 0))
    tracker.observe(snapshot(a, b, c))
    tracker.observe(update(station("A_00001", (1, 0), status=1)))  # A changed while connected
    a_now = station("A_00001", (1, 0), status=1)
    b_now = station("B_00002", (0, 1), status=2)  # changed while we were away
    d_new = station("D_00004", (0, 0))

    seen = tracker.observe(snapshot(a_now, b_now, d_new))

    assert seen.key is None
    assert seen.meta == {"previous": {"B_00002": state(b), "D_00004": None}}
    # Reset: C is forgotten, the snapshot is the new truth.
    assert tracker.stations is not None
    assert set(tracker.stations) == {"A_00001", "B_00002", "D_00004"}
    assert tracker.observe(update(station("C_00003", (0, 0)))).meta == {"previous": None}
    assert tracker.snapshots_total == 2


def test_snapshot_keeps_only_well_formed_stations() -> None:
    tracker = LegacyTracker()
    frame = json.dumps(
        {
            "type": "snapshot:init",
            "data": [
                station("A_00001", (0, 0)),
                {"uuid": "B_00002"},
                {"connectors": []},
                {"uuid": 7, "connectors": []},
                "x",
            ],
        }
    )
    tracker.observe(frame)
    assert tracker.stations is not None
    assert set(tracker.stations) == {"A_00001"}


@pytest.mark.parametrize(
    ("frame", "key"),
    [
        ("not json", None),
        ("[1, 2]", None),
        ('{"type": "status:update"}', None),
        ('{"type": "status:update", "data": {"uuid": ""}}', None),
        ('{"type": "status:update", "data": {"uuid": "NOR_1"}}', b"NOR_1"),
        ('{"type": "status:other", "data": {"uuid": "NOR_1"}}', b"NOR_1"),
        ('{"type": "snapshot:init", "data": {}}', None),
    ],
)
def test_malformed_frames_get_no_previous(frame: str, key: bytes | None) -> None:
    seen = LegacyTracker().observe(frame)
    assert seen.key == key
    assert seen.meta == {}


# --- enova tracker --------------------------------------------------------------------------


def test_enova_tracker_keys_by_station_and_remembers_each_evse() -> None:
    tracker = EnovaTracker()

    def frame(evse: str, status: str) -> str:
        return json.dumps({"nobilId": "NOR_23314", "evseUId": evse, "status": status})

    assert tracker.observe(frame("e1", "AVAILABLE")).meta == {"previous": None}
    seen = tracker.observe(frame("e1", "CHARGING"))
    assert (seen.key, seen.meta) == (b"NOR_23314", {"previous": "AVAILABLE"})
    assert tracker.observe(frame("e2", "CHARGING")).meta == {"previous": None}
    assert tracker.observe('{"nobilId": "NOR_1"}').meta == {}
    assert tracker.observe('{"nobilId": "NOR_1"}').key == b"NOR_1"
    assert tracker.observe('{"status": "AVAILABLE"}').key is None
    assert tracker.observe("[]").key is None


# --- envelopes ------------------------------------------------------------------------------


def test_envelope_wraps_the_frame_unchanged_with_previous_in_meta() -> None:
    frame = '{"type": "status:update" ,  "data": {"uuid": "NOR_1", "connectors": []}}'
    envelope = build_envelope("nobil-no", frame, 2, {"previous": None})
    assert envelope.source == KIND == "nobil"
    assert envelope.stream == "nobil-no"
    assert envelope.payload == frame
    assert envelope.meta == {"connection": 2, "previous": None}
    assert decode_envelope(encode_envelope(envelope)).meta == {"connection": 2, "previous": None}


def test_binary_frames_are_base64() -> None:
    envelope = build_envelope("s", b"\x00\xff", 1)
    assert envelope.meta == {"connection": 1, "encoding": "base64"}
    assert base64.b64decode(envelope.payload) == b"\x00\xff"
