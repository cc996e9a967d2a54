"""The aliunid simulator's values and frames, without sockets.

The golden frames under tests/data/upstream/aliunid/ are what a seeded simulator sends; the
last test regenerates them, so they cannot drift from the simulator unnoticed.
"""

from __future__ import annotations

import itertools
import math
from pathlib import Path
from typing import Any

import orjson
import pytest

from producers.simulators import SIMULATORS
from producers.simulators.aliunid import AliunidSimulator

GOLDEN = Path(__file__).parents[3] / "data" / "upstream" / "aliunid"
BUSINESS = "9bf32959-1fd4-4fa4-83e0-9e9cd80093af"


def data_by_point(sim: AliunidSimulator, ticks: int) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {p.id: [] for p in sim.points}
    for _ in range(ticks):
        for point_id, text in sim.next_tick_frames():
            frame = orjson.loads(text)
            if frame["type"] == "data":
                assert frame["id"] == point_id
                out[point_id].append(frame["data"])
    return out


def test_registry_maps_kind_to_class() -> None:
    assert SIMULATORS["aliunid"] is AliunidSimulator


def test_seed_makes_ids_and_values_reproducible() -> None:
    a = AliunidSimulator(BUSINESS, "key-1234", seed=5)
    b = AliunidSimulator(BUSINESS, "key-1234", seed=5)
    c = AliunidSimulator(BUSINESS, "key-1234", seed=6)
    assert [p.id for p in a.points] == [p.id for p in b.points]
    assert [p.id for p in a.points] != [p.id for p in c.points]
    assert [a.next_tick_frames() for _ in range(40)] == [b.next_tick_frames() for _ in range(40)]


def test_points_have_unique_uuid_ids_and_names() -> None:
    sim = AliunidSimulator(BUSINESS, "key-1234", measuring_points=10, seed=1)
    assert len({p.id for p in sim.points}) == 10
    assert all(len(p.id) == 36 and p.id == p.id.lower() for p in sim.points)
    assert sim.points[0].name == "EV charging hub"
    assert sim.points[9].name == "Sub-meter 9"


def test_ev_hub_fires_within_5_seconds_and_resolves_within_a_minute() -> None:
    interval = 1.0
    sim = AliunidSimulator(BUSINESS, "key-1234", interval=interval, seed=11)
    kw = [d["sys"]["kW"] for d in data_by_point(sim, 60)[sim.points[0].id]]
    first_high = next(i for i, v in enumerate(kw) if v > 40)
    assert (first_high + 1) * interval <= 5.0
    # ~10 s above 40 kW, then ~10 s below 30 kW, repeating: a > 40 rule fires and resolves
    # three times in 60 s.
    for cycle in range(3):
        start = first_high + 20 * cycle
        assert all(v > 40 for v in kw[start : start + 10]), kw
        assert all(v < 30 for v in kw[start + 10 : start + 20 if start + 20 < 60 else 60]), kw
    assert all(v < 30 for v in kw[:first_high])
    assert kw.count(0) >= 6  # idle ticks report exactly 0 kW


def test_other_points_stay_below_the_demo_threshold_and_vary() -> None:
    sim = AliunidSimulator(BUSINESS, "key-1234", measuring_points=6, seed=2)
    series = data_by_point(sim, 1500)  # more than a simulated day
    for point in sim.points[1:]:
        kw = [d["sys"]["kW"] for d in series[point.id]]
        assert all(0 < v < 40 for v in kw)
        assert max(kw) - min(kw) > 1.0  # a wave, not a constant


@pytest.mark.parametrize("interval", [1.0, 0.05])
def test_energy_increases_consistently_with_power(interval: float) -> None:
    sim = AliunidSimulator(BUSINESS, "key-1234", interval=interval, seed=3)
    for point_id, data in data_by_point(sim, 300).items():
        kwh = [d["sys"]["kWh+"] for d in data]
        assert all(b >= a for a, b in itertools.pairwise(kwh)), point_id
        expected = sum(d["sys"]["kW"] for d in data[1:]) * interval / 3600
        assert math.isclose(kwh[-1] - kwh[0], expected, abs_tol=1e-3)


def test_frames_have_the_documented_shape() -> None:
    sim = AliunidSimulator(BUSINESS, "key-1234", seed=4)
    frames = [orjson.loads(text) for _, text in sim.next_tick_frames()]
    assert [f["type"] for f in frames] == ["data"] * 3
    for frame in frames:
        assert set(frame) == {"type", "id", "data"}
        assert set(frame["data"]) == {"sys"}
        assert set(frame["data"]["sys"]) == {"kW", "kWh+"}


def test_structure_is_sent_again_every_30_ticks() -> None:
    sim = AliunidSimulator(BUSINESS, "key-1234", seed=4)
    types = [[orjson.loads(t)["type"] for _, t in sim.next_tick_frames()] for _ in range(60)]
    with_structure = [i + 1 for i, tick in enumerate(types) if "structure" in tick]
    assert with_structure == [30, 60]
    assert types[29] == ["structure"] * 3 + ["data"] * 3


def test_whole_numbers_are_written_as_integers() -> None:
    sim = AliunidSimulator(BUSINESS, "key-1234", seed=11)
    texts = [t for _ in range(20) for pid, t in sim.next_tick_frames() if pid == sim.points[0].id]
    assert any('"kW":0,' in t for t in texts)
    assert not any('"kW":0.0' in t for t in texts)


def test_extended_schema_adds_consistent_phase_blocks() -> None:
    sim = AliunidSimulator(BUSINESS, "key-1234", seed=9, extended_schema=True)
    series = data_by_point(sim, 50)
    for data in series[sim.points[1].id]:
        assert set(data) == {"sys", "l1", "l2", "l3"}
        assert set(data["sys"]) == {"Hz", "kWh+", "kWh-", "kvarh+", "kvarh-", "kW", "kVA", "kvar"}
        phases = [data[label] for label in ("l1", "l2", "l3")]
        assert [p["phase"] for p in phases] == ["R", "S", "T"]
        for p in phases:
            assert set(p) == {"phase", "V", "A", "kWh+", "kWh-", "kW", "kVA", "kvar"}
            assert 220 < p["V"] < 240
        assert math.isclose(sum(p["kW"] for p in phases), data["sys"]["kW"], abs_tol=0.01)
        assert data["sys"]["kVA"] >= data["sys"]["kW"]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"measuring_points": 0}, "measuring_points must be >= 1, got 0"),
        ({"interval": 0}, "interval must be > 0 seconds, got 0"),
    ],
)
def test_invalid_arguments(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        AliunidSimulator(BUSINESS, "key-1234", **kwargs)


def test_url_needs_a_started_server() -> None:
    with pytest.raises(RuntimeError, match="simulator not started"):
        _ = AliunidSimulator(BUSINESS, "key-1234").url


def golden_frames() -> dict[str, str]:
    """The frames stored under tests/data/upstream/aliunid/, from seeded simulators."""
    sim = AliunidSimulator(BUSINESS, "demo-api-key", seed=42)
    hub, building = sim.points[0], sim.points[1]
    ticks = [sim.next_tick_frames() for _ in range(20)]
    extended = AliunidSimulator(BUSINESS, "demo-api-key", seed=42, extended_schema=True)
    first_extended = extended.next_tick_frames()
    return {
        "structure.json": sim._structure_frame(hub),
        "data.json": next(t for pid, t in ticks[0] if pid == building.id),
        "data_idle.json": next(t for pid, t in ticks[18] if pid == hub.id),
        "data_extended.json": next(t for pid, t in first_extended if pid == building.id),
    }


@pytest.mark.parametrize("name", sorted(golden_frames()))
def test_golden_frames_are_what_the_simulator_sends(name: str) -> None:
    stored = (GOLDEN / name).read_text(encoding="utf-8")
    assert stored == golden_frames()[name] + "\n"
    frame = orjson.loads(stored)
    assert frame["type"] in ("data", "structure")
