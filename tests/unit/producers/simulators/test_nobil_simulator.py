"""The Nobil simulator's stations, states and frames, without sockets.

The golden frames under tests/data/upstream/nobil/ are what a seeded simulator sends; the last
test regenerates them, so they cannot drift from the simulator unnoticed.
"""

from __future__ import annotations

import itertools
import re
from pathlib import Path
from typing import Any

import orjson
import pytest

from producers.simulators.nobil import (
    ENOVA_STATUSES,
    ERROR_CYCLE_TICKS,
    ERROR_TICKS,
    Connector,
    NobilSimulator,
    Station,
)

GOLDEN = Path(__file__).parents[3] / "data" / "upstream" / "nobil"
KEY = "demo-api-key"
START_MS = 1_700_000_000_000


def ticks(sim: NobilSimulator, count: int) -> list[list[dict[str, Any]]]:
    return [[orjson.loads(t) for t in sim.next_tick_frames()] for _ in range(count)]


def test_seed_makes_stations_and_changes_reproducible() -> None:
    a = NobilSimulator(KEY, seed=5, start_ms=START_MS)
    b = NobilSimulator(KEY, seed=5, start_ms=START_MS)
    c = NobilSimulator(KEY, seed=6, start_ms=START_MS)
    assert a.snapshot_frame() == b.snapshot_frame()
    assert a.snapshot_frame() != c.snapshot_frame()
    assert [a.next_tick_frames() for _ in range(50)] == [b.next_tick_frames() for _ in range(50)]


def test_stations_have_documented_ids_and_connector_states() -> None:
    sim = NobilSimulator(KEY, stations=20, seed=1, start_ms=START_MS)
    uuids = [s.uuid for s in sim.stations]
    assert uuids[0] == "NOR_01333"
    assert len(set(uuids)) == 20
    assert all(re.fullmatch(r"(NOR|SWE|FIN|DNK)_\d{5}", u) for u in uuids)
    connectors = [c for s in sim.stations for c in s.connectors]
    assert {c.status for c in connectors} == {-1, 0, 1}
    assert all(c.error == 0 for c in connectors)
    for c in connectors:  # unknown connectors never reported: timestamp -1
        assert (c.timestamp == -1) == (c.status == -1)
        assert c.timestamp == -1 or START_MS - 6 * 3_600_000 <= c.timestamp < START_MS


def test_snapshot_has_the_documented_shape() -> None:
    sim = NobilSimulator(KEY, seed=2, start_ms=START_MS)
    frame = orjson.loads(sim.snapshot_frame())
    assert list(frame) == ["type", "data"]
    assert frame["type"] == "snapshot:init"
    assert len(frame["data"]) == 6
    for station in frame["data"]:
        assert list(station) == ["uuid", "status", "connectors"]
        for connector in station["connectors"]:
            assert list(connector) == ["status", "error", "timestamp"]


@pytest.mark.parametrize(
    ("states", "status"),
    [
        ([(0, 0), (-1, 0), (-1, 0), (-1, 0), (-1, 0)], 0),  # the docs' status:update sample
        ([(-1, 0), (1, 0)], -1),
        ([(1, 0), (1, 0)], 1),
        ([(0, 1), (0, 0)], 2),
        ([(-1, 1)], 2),
    ],
)
def test_station_status_aggregates_connectors(states: list[tuple[int, int]], status: int) -> None:
    station = Station("NOR_00001", [Connector(s, e, -1, "x") for s, e in states])
    assert station.status == status


def test_demo_connector_is_in_error_for_30_ticks_every_minute() -> None:
    sim = NobilSimulator(KEY, seed=3, start_ms=START_MS)
    errors = []
    for _ in range(2 * ERROR_CYCLE_TICKS):
        sim.next_tick_frames()
        errors.append(sim.stations[0].connectors[0].error)
    first = errors.index(1)
    assert first + 1 == ERROR_TICKS.start + 1 == 11  # the 11th tick: 11 s at interval 1.0
    assert errors[first : first + 30] == [1] * 30
    assert errors[first + 30] == 0
    assert errors[first + 60 : first + 90] == [1] * 30  # and again a minute later
    # A "connector in error for 20 s" rule fires well within 60 s at the default interval.
    assert (first + 1 + 20) * sim.interval <= 60


def test_demo_connector_error_is_announced_by_a_status_update_with_station_error() -> None:
    sim = NobilSimulator(KEY, seed=3, start_ms=START_MS)
    frames = [f for tick in ticks(sim, 11) for f in tick]
    update = next(f for f in reversed(frames) if f["data"]["uuid"] == "NOR_01333")
    assert update["type"] == "status:update"
    assert update["data"]["status"] == 2
    assert update["data"]["connectors"][0] == {
        "status": 0,
        "error": 1,
        "timestamp": START_MS + 11_000,
    }


def test_updates_carry_the_full_station_and_raw_frames_one_connector() -> None:
    sim = NobilSimulator(KEY, seed=4, start_ms=START_MS)
    frames = [f for tick in ticks(sim, 200) for f in tick]
    kinds = {f["type"] for f in frames}
    assert kinds == {"status:update", "status:raw"}
    sizes = {s.uuid: len(s.connectors) for s in sim.stations}
    for frame in frames:
        data = frame["data"]
        if frame["type"] == "status:update":
            assert list(data) == ["uuid", "status", "connectors"]
            assert len(data["connectors"]) == sizes[data["uuid"]]
        else:
            assert list(frame) == ["type", "code", "data"]
            assert frame["code"] == 1
            assert list(data) == ["uuid", "connector", "status", "error", "timestamp"]
            assert 0 <= data["connector"] < sizes[data["uuid"]]
    updates = sum(f["type"] == "status:update" for f in frames)
    assert 90 <= updates <= 130  # about one change every other tick, plus the demo connector


def test_raw_frames_sometimes_announce_the_change_before_the_update() -> None:
    sim = NobilSimulator(KEY, seed=4, start_ms=START_MS)
    announced = 0
    for number, tick in enumerate(ticks(sim, 200), start=1):
        now = START_MS + number * 1000
        for first, second in itertools.pairwise(tick):
            raw, update = first["data"], second["data"]
            if (
                first["type"] == "status:raw"
                and second["type"] == "status:update"
                and raw["uuid"] == update["uuid"]
                and raw["timestamp"] == now
            ):
                connector = update["connectors"][raw["connector"]]
                assert {k: raw[k] for k in ("status", "error", "timestamp")} == connector
                announced += 1
    assert announced >= 10


def test_timestamps_advance_with_simulated_time() -> None:
    sim = NobilSimulator(KEY, seed=4, interval=0.5, start_ms=START_MS)
    for tick in range(1, 40):
        for frame in (orjson.loads(t) for t in sim.next_tick_frames()):
            if frame["type"] == "status:update":
                newest = max(c["timestamp"] for c in frame["data"]["connectors"])
                assert newest == START_MS + tick * 500


def test_enova_mode_sends_one_frame_per_evse_change() -> None:
    legacy = NobilSimulator(KEY, seed=8, start_ms=START_MS)
    enova = NobilSimulator(KEY, seed=8, start_ms=START_MS, format="enova")
    evse_of = {(s.uuid, i): c.evse_uid for s in enova.stations for i, c in enumerate(s.connectors)}
    seen: set[str] = set()
    for _ in range(120):
        legacy_updates = [
            orjson.loads(t) for t in legacy.next_tick_frames() if '"status:update"' in t
        ]
        frames = [orjson.loads(t) for t in enova.next_tick_frames()]
        assert len(frames) == len(legacy_updates)  # same scenario in both formats
        for frame, update in zip(frames, legacy_updates, strict=True):
            assert list(frame) == ["nobilId", "evseUId", "status"]
            assert frame["nobilId"] == update["data"]["uuid"]
            assert frame["status"] in ENOVA_STATUSES
            assert frame["evseUId"] in evse_of.values()
            seen.add(frame["status"])
    assert seen == {"AVAILABLE", "CHARGING", "OUTOFORDER"}
    assert enova.snapshot_frame()  # available, but never sent on connect in enova mode


def test_enova_defaults_path_and_key_parameter() -> None:
    sim = NobilSimulator(KEY, format="enova")
    assert sim.path == "/client/hubs/nobil"
    assert sim.key_params == ("access_token",)
    legacy = NobilSimulator(KEY)
    assert legacy.path == "/api/v1/stream"
    assert legacy.key_params == ("apikey", "key")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"stations": 0}, "stations must be >= 1, got 0"),
        ({"interval": 0}, "interval must be > 0 seconds, got 0"),
        ({"format": "v2"}, "format must be 'legacy' or 'enova', got 'v2'"),
        ({"key_params": ["apikey", ""]}, "key_params must be non-empty names"),
    ],
)
def test_invalid_arguments(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        NobilSimulator(KEY, **kwargs)


def test_url_needs_a_started_server() -> None:
    with pytest.raises(RuntimeError, match="simulator not started"):
        _ = NobilSimulator(KEY).url


def golden_frames() -> dict[str, str]:
    """The frames stored under tests/data/upstream/nobil/, from seeded simulators."""
    sim = NobilSimulator(KEY, seed=42, start_ms=START_MS)
    frames = {"snapshot_init.json": sim.snapshot_frame()}
    texts = [t for _ in range(11) for t in sim.next_tick_frames()]
    frames["status_update.json"] = next(t for t in texts if '"status:update"' in t)
    frames["status_raw.json"] = next(t for t in texts if '"status:raw"' in t)
    frames["status_update_error.json"] = next(
        t for t in reversed(texts) if '"status:update"' in t and "NOR_01333" in t
    )
    enova = NobilSimulator(KEY, seed=42, start_ms=START_MS, format="enova")
    enova_texts = [t for _ in range(11) for t in enova.next_tick_frames()]
    frames["enova_status.json"] = enova_texts[0]
    frames["enova_outoforder.json"] = enova_texts[-1] if "OUTOFORDER" in enova_texts[-1] else ""
    return frames


@pytest.mark.parametrize("name", sorted(golden_frames()))
def test_golden_frames_are_what_the_simulator_sends(name: str) -> None:
    stored = (GOLDEN / name).read_text(encoding="utf-8")
    assert stored == golden_frames()[name] + "\n"
    assert orjson.loads(stored)


def test_golden_error_frame_is_the_demo_connector_going_to_error() -> None:
    frame = orjson.loads(golden_frames()["status_update_error.json"])
    assert frame["data"]["uuid"] == "NOR_01333"
    assert frame["data"]["connectors"][0]["error"] == 1
    outoforder = orjson.loads(golden_frames()["enova_outoforder.json"])
    assert outoforder["nobilId"] == "NOR_01333"
    assert outoforder["status"] == "OUTOFORDER"
