"""The ELEMENT IoT simulator's devices, history and frames, without sockets.

The golden frames under tests/data/upstream/element/ are what a seeded simulator sends; the last
test regenerates them, so they cannot drift from the simulator unnoticed.
"""

from __future__ import annotations

import itertools
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest

from producers.simulators.element import (
    HOT_CYCLE_TICKS,
    SILENT_CYCLE_TICKS,
    ElementSimulator,
    HistoryEvent,
    format_instant,
)

GOLDEN = Path(__file__).parents[3] / "data" / "upstream" / "element"
KEY = "demo-api-key"
START_MS = 1_700_000_000_000
ISO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")
READING_KEYS = [
    "id",
    "device_id",
    "packet_id",
    "parser_id",
    "location",
    "meta",
    "measured_at",
    "inserted_at",
    "data",
]
PACKET_KEYS = [
    "id",
    "device_id",
    "interface_id",
    "driver",
    "packet_type",
    "payload_encoding",
    "payload",
    "skip_parsers",
    "meta",
    "transceived_at",
    "inserted_at",
]


def run(sim: ElementSimulator, count: int) -> list[list[HistoryEvent]]:
    return [sim.next_tick_events() for _ in range(count)]


def pairs(events: list[HistoryEvent]) -> list[tuple[HistoryEvent, HistoryEvent]]:
    return list(zip(events[::2], events[1::2], strict=True))


def bodies(events: list[HistoryEvent]) -> list[dict[str, Any]]:
    return [orjson.loads(e.text)["body"] for e in events]


def test_seed_makes_ids_values_and_times_reproducible() -> None:
    a = ElementSimulator(KEY, seed=5, start_ms=START_MS)
    b = ElementSimulator(KEY, seed=5, start_ms=START_MS)
    c = ElementSimulator(KEY, seed=6, start_ms=START_MS)
    assert [d.id for d in a.devices] == [d.id for d in b.devices]
    assert [d.id for d in a.devices] != [d.id for d in c.devices]
    assert (a.tag_id, a.stream_id) == (b.tag_id, b.stream_id)
    assert run(a, 30) == run(b, 30)


def test_format_instant_is_iso_utc_with_microseconds() -> None:
    assert format_instant(1_717_681_781_968_992) == "2024-06-06T13:49:41.968992Z"
    assert format_instant(0) == "1970-01-01T00:00:00.000000Z"


@pytest.mark.parametrize("interval", [1.0, 0.05, 0.001])
def test_history_is_strictly_ordered_with_unique_ids(interval: float) -> None:
    sim = ElementSimulator(KEY, devices=7, interval=interval, seed=1, start_ms=START_MS)
    run(sim, 120)
    history = list(sim.history)
    inserted = [e.inserted_us for e in history]
    assert all(a < b for a, b in itertools.pairwise(inserted))
    assert len({e.id for e in history}) == len(history)
    for event in history:
        assert ISO.match(event.inserted_at)
        assert orjson.loads(event.text)["body"]["inserted_at"] == event.inserted_at
        parsed = datetime.fromisoformat(event.inserted_at)
        assert parsed.tzinfo == UTC


def test_each_reading_follows_its_packet() -> None:
    sim = ElementSimulator(KEY, seed=2, start_ms=START_MS)
    for tick in run(sim, 20):
        for packet, reading in pairs(tick):
            assert (packet.socket, reading.socket) == ("packets", "readings")
            p, r = bodies([packet, reading])
            assert r["packet_id"] == p["id"] == p["meta"]["lns_packet_uuid"]
            assert r["device_id"] == p["device_id"]
            assert r["measured_at"] == p["transceived_at"]
            assert p["transceived_at"] < p["inserted_at"] < r["inserted_at"]


def test_events_have_the_documented_shape() -> None:
    sim = ElementSimulator(KEY, seed=3, start_ms=START_MS)
    for event in run(sim, 5)[-1]:
        document = orjson.loads(event.text)
        assert list(document) == ["event", "body"]
        body = document["body"]
        if event.socket == "readings":
            assert document["event"] == "reading_added"
            assert list(body) == READING_KEYS
            assert body["location"] is None
            assert body["meta"] is None
        else:
            assert document["event"] == "packet_added"
            assert list(body) == PACKET_KEYS
            assert body["packet_type"] == "up"
            assert body["payload_encoding"] == "binary"
            assert re.fullmatch(r"[0-9A-F]+", body["payload"])
            assert body["meta"]["region"] == "eu863"
            for gateway in body["meta"]["gateway_stats"]:
                assert list(gateway) == ["router_id_hex", "rssi", "snr", "tmst"]
                assert -120 <= gateway["rssi"] <= -60
                assert -10 <= gateway["snr"] <= 12


def test_sht35_payload_encodes_the_reading() -> None:
    sim = ElementSimulator(KEY, seed=4, start_ms=START_MS)
    for packet, reading in pairs(run(sim, 3)[-1]):
        p, r = bodies([packet, reading])
        if "air_temperature" not in r["data"]:
            continue
        raw = bytes.fromhex(p["payload"])
        assert raw[0] == 2
        assert int.from_bytes(raw[1:3]) == r["data"]["device_id"]
        temperature = 175 * int.from_bytes(raw[5:7]) / 65535 - 45
        humidity = 100 * int.from_bytes(raw[7:9]) / 65535
        assert abs(temperature - r["data"]["air_temperature"]) < 0.01
        assert abs(humidity - r["data"]["air_humidity"]) < 0.01
        assert int.from_bytes(raw[9:11]) / 1000 == pytest.approx(
            r["data"]["battery_voltage"], abs=0.001
        )


def test_every_fourth_device_is_a_co2_sensor() -> None:
    sim = ElementSimulator(KEY, devices=8, seed=4, start_ms=START_MS)
    assert [d.kind for d in sim.devices] == ["sht35"] * 3 + ["ers_co2"] + ["sht35"] * 3 + [
        "ers_co2"
    ]
    readings = [b for b in bodies(run(sim, 2)[-1]) if "data" in b]
    co2 = next(b["data"] for b in readings if b["device_id"] == sim.devices[3].id)
    assert list(co2) == ["temperature", "humidity", "light", "motion", "co2", "vdd"]
    assert 400 <= co2["co2"] <= 1800


def test_hot_device_crosses_30_degrees_on_schedule() -> None:
    sim = ElementSimulator(KEY, seed=5, start_ms=START_MS)
    hot = sim.devices[0].id
    temperatures = []
    for tick in run(sim, 2 * HOT_CYCLE_TICKS):
        (data,) = [b["data"] for b in bodies(tick) if b["device_id"] == hot and "data" in b]
        temperatures.append(data["air_temperature"])
    above = [i + 1 for i, t in enumerate(temperatures) if t > 30]
    assert above == [*range(11, 21), *range(51, 61)]  # ticks 11-20 of every 40
    assert all(20 <= t < 26 for i, t in enumerate(temperatures) if i + 1 not in above)


def test_silent_device_sends_nothing_for_30_ticks_every_minute() -> None:
    sim = ElementSimulator(KEY, seed=6, start_ms=START_MS)
    silent, other = sim.devices[1].id, sim.devices[2].id
    sends = [
        ({e.device_id for e in tick} >= {other}, silent in {e.device_id for e in tick})
        for tick in run(sim, 2 * SILENT_CYCLE_TICKS)
    ]
    assert all(other_sent for other_sent, _ in sends)
    quiet = [i + 1 for i, (_, sent) in enumerate(sends) if not sent]
    assert quiet == [*range(16, 46), *range(76, 106)]
    assert sim.device_silent(1, 16) and not sim.device_silent(1, 46)
    assert not sim.device_silent(0, 16)


def test_history_for_filters_by_socket_and_device() -> None:
    sim = ElementSimulator(KEY, seed=7, start_ms=START_MS)
    run(sim, 3)
    device = sim.devices[2].id
    readings = sim.history_for("readings", [device])
    assert len(readings) == 3
    assert all(orjson.loads(t)["body"]["device_id"] == device for t in readings)
    assert len(sim.history_for("packets")) == 12


def test_tag_holds_the_first_half_and_history_is_bounded() -> None:
    sim = ElementSimulator(KEY, devices=5, seed=8, history_max=10, start_ms=START_MS)
    assert sim.tag_devices == {d.id for d in sim.devices[:3]}
    run(sim, 3)
    assert len(sim.history) == 10
    assert sim.history[-1].inserted_us > sim.history[0].inserted_us


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"devices": 1}, "devices must be >= 2 (a hot one and a silent one), got 1"),
        ({"interval": 0}, "interval must be > 0 seconds, got 0"),
        ({"idle_timeout": 0}, "idle_timeout must be > 0 seconds, got 0"),
        ({"drop_every": 0}, "drop_every must be >= 1 or None, got 0"),
        ({"replay_batch": 0}, "replay_batch must be >= 1, got 0"),
        ({"auth_failure_status": 404}, "auth_failure_status must be 401 or 403, got 404"),
        ({"stream_id": "a/b"}, "stream_id must be a URL path segment, got 'a/b'"),
    ],
)
def test_invalid_arguments(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        ElementSimulator(KEY, **kwargs)


def test_stream_id_can_be_chosen_without_changing_the_rest() -> None:
    chosen = ElementSimulator(KEY, seed=9, start_ms=START_MS, stream_id="demo-stream")
    seeded = ElementSimulator(KEY, seed=9, start_ms=START_MS)
    assert chosen.stream_id == "demo-stream"
    assert chosen.tag_id == seeded.tag_id
    assert [d.id for d in chosen.devices] == [d.id for d in seeded.devices]
    assert run(chosen, 3) == run(seeded, 3)


def test_url_needs_a_started_server() -> None:
    with pytest.raises(RuntimeError, match="simulator not started"):
        _ = ElementSimulator(KEY).url


def golden_frames() -> dict[str, str]:
    """The frames stored under tests/data/upstream/element/, from a seeded simulator."""
    sim = ElementSimulator(KEY, seed=42, start_ms=START_MS)
    hot, office, lab, co2 = (d.id for d in sim.devices)
    ticks = run(sim, 11)

    def one(tick: int, socket: str, device: str) -> str:
        (event,) = [e for e in ticks[tick - 1] if e.socket == socket and e.device_id == device]
        return f"[{event.text}]"

    batch = [e.text for e in ticks[0] if e.socket == "readings"][:3]
    return {
        "reading_added.json": one(1, "readings", lab),
        "reading_added_hot.json": one(11, "readings", hot),
        "reading_added_co2.json": one(1, "readings", co2),
        "packet_added.json": one(1, "packets", office),
        "readings_replay_batch.json": "[" + ",".join(batch) + "]",
    }


@pytest.mark.parametrize("name", sorted(golden_frames()))
def test_golden_frames_are_what_the_simulator_sends(name: str) -> None:
    stored = (GOLDEN / name).read_text(encoding="utf-8")
    assert stored == golden_frames()[name] + "\n"
    assert isinstance(orjson.loads(stored), list)


def test_golden_hot_reading_is_above_the_demo_threshold() -> None:
    (event,) = orjson.loads(golden_frames()["reading_added_hot.json"])
    assert event["body"]["data"]["air_temperature"] > 30
