"""The Hemis simulator's frame codec and values, without sockets."""

from __future__ import annotations

import itertools
from collections import Counter
from typing import Any

import orjson
import pytest

from producers.simulators.hemis import (
    CYCLE_TICKS,
    FAULT_IT_ID,
    FAULT_SENSOR_ID,
    FAULT_TICKS,
    HOT_TICKS,
    SERVER_SENSOR_ID,
    HemisSimulator,
    StompFrame,
    StompFrameError,
    StompFrameParser,
    encode_frame,
)

BUILDING = "BLD-4711"
START_S = 1_721_980_800


def simulator(seed: int = 3, **kwargs: Any) -> HemisSimulator:
    ticks = itertools.count()
    return HemisSimulator(
        BUILDING, "token-1234", seed=seed, clock=lambda: START_S + next(ticks), **kwargs
    )


def ticks(sim: HemisSimulator, count: int) -> list[list[tuple[str, dict[str, Any]]]]:
    return [
        [(topic, orjson.loads(body)) for topic, body in sim.next_tick_frames()]
        for _ in range(count)
    ]


# --- frame codec ------------------------------------------------------------------------------


def test_parser_reads_frames_heartbeats_and_split_input() -> None:
    parser = StompFrameParser()
    wire = b"\n\r\nCONNECT\naccept-version:1.2\npasscode:a:b\n\n\x00\nSUBSCRIBE\nid:sub-0\n"
    assert parser.feed(wire) == [
        StompFrame("CONNECT", {"accept-version": "1.2", "passcode": "a:b"}, b"")
    ]
    assert parser.heartbeats == 3
    assert parser.feed(b"destination:jms.topic.B.data\n\n") == []
    assert parser.feed(b"\x00") == [
        StompFrame("SUBSCRIBE", {"id": "sub-0", "destination": "jms.topic.B.data"}, b"")
    ]


def test_parser_content_length_allows_nul_in_body_and_crlf_headers() -> None:
    parser = StompFrameParser()
    frames = parser.feed(b"SEND\r\ncontent-length:3\r\ndestination:x\r\n\r\na\x00b\x00")
    assert frames == [StompFrame("SEND", {"content-length": "3", "destination": "x"}, b"a\x00b")]


def test_parser_unescapes_headers_except_in_connect_and_first_value_wins() -> None:
    parser = StompFrameParser()
    frames = parser.feed(b"SUBSCRIBE\nid:a\\cb\\n\\\\\nid:second\n\n\x00")
    assert frames[0].headers == {"id": "a:b\n\\"}


@pytest.mark.parametrize(
    ("wire", "message"),
    [
        (b"SUBSCRIBE\nno-colon\n\n\x00", "header line without ':' in SUBSCRIBE frame"),
        (b"SUBSCRIBE\nid:\\t\n\n\x00", "undefined header escape '\\t'"),
        (b"SEND\ncontent-length:x\n\n\x00", "bad content-length 'x'"),
        (
            b"SEND\ncontent-length:1\n\nab\x00",
            "frame does not end with NUL after content-length bytes",
        ),
        (b"\xff\xfe\n\n\x00", "headers are not UTF-8"),
    ],
)
def test_parser_rejects_malformed_frames(wire: bytes, message: str) -> None:
    with pytest.raises(StompFrameError, match=message.replace("\\", "\\\\").replace("(", "\\(")):
        StompFrameParser().feed(wire)


def test_parser_bounds_incomplete_frames() -> None:
    parser = StompFrameParser(max_frame_bytes=32)
    with pytest.raises(StompFrameError, match="frame larger than 32 bytes"):
        parser.feed(b"SEND\ndestination:" + b"x" * 40)


def test_encoded_frames_end_with_nul_then_lf_unless_disabled() -> None:
    frame = encode_frame("MESSAGE", [("destination", "a:b"), ("subscription", "s")], b"{}")
    assert frame == b"MESSAGE\ndestination:a\\cb\nsubscription:s\n\n{}\x00\n"
    bare = encode_frame("CONNECTED", [("heart-beat", "1,2")], trailing_lf=False)
    assert bare == b"CONNECTED\nheart-beat:1,2\n\n\x00"
    assert StompFrameParser().feed(frame)[0].headers["destination"] == "a:b"


# --- values -----------------------------------------------------------------------------------


def test_seed_makes_frames_reproducible() -> None:
    a, b, c = simulator(seed=5), simulator(seed=5), simulator(seed=6)
    first = [a.next_tick_frames() for _ in range(CYCLE_TICKS)]
    assert first == [b.next_tick_frames() for _ in range(CYCLE_TICKS)]
    assert first != [c.next_tick_frames() for _ in range(CYCLE_TICKS)]


def test_first_tick_has_every_documented_type_and_a_cycle_adds_new_data() -> None:
    sim = simulator()
    first = {frame["type"] for _, frame in ticks(sim, 1)[0]}
    assert first == {
        "SENSOR_STATE",
        "FACTOR_CURRENT_STATE",
        "ACTUATOR_CURRENT_STATE",
        "ACTUATOR_HARDWARE_STATE",
        "ACTUATOR_TARGET_STATE",
        "FACTOR_TARGET_STATE",
        "DATA_PROVIDER",
        "OBJECTIVE_STATE",
        "IT_STATE",
        "ENTITY_MANAGEMENT",
    }
    rest = Counter(frame["type"] for tick in ticks(sim, CYCLE_TICKS - 1) for _, frame in tick)
    assert rest["NEW_DATA"] >= 4
    assert rest["ENTITY_MANAGEMENT"] == 2  # every 15 ticks


def test_topics_and_timestamps() -> None:
    sim = simulator()
    for index, tick in enumerate(ticks(sim, 20)):
        for topic, frame in tick:
            assert topic == ("management" if frame["type"] == "ENTITY_MANAGEMENT" else "data")
            seconds = frame["timestamp"] < 10**11
            assert frame["type"] in ("DATA_PROVIDER", "NEW_DATA") or not seconds
            ts_s = frame["timestamp"] if seconds else frame["timestamp"] / 1000
            assert ts_s == START_S + index


def test_server_room_is_hot_exactly_in_its_window() -> None:
    interval = 1.0
    sim = simulator(interval=interval)
    hot = []
    for index, tick in enumerate(ticks(sim, 2 * CYCLE_TICKS)):
        (reading,) = [f for _, f in tick if f.get("sensorId") == SERVER_SENSOR_ID]
        value = float(reading["value"])
        assert 23.0 <= value <= 30.4
        if value > 28.0:
            hot.append(index % CYCLE_TICKS)
    assert sorted(set(hot)) == list(HOT_TICKS)
    assert len(hot) == 2 * len(HOT_TICKS)
    # the first crossing is the 9th tick, which the ticker sends 9 s after start at 1.0 s
    assert (HOT_TICKS.start + 1) * interval == 9.0


def test_bureau_sensor_faults_then_recovers() -> None:
    sim = simulator()
    states: list[tuple[int, str, str]] = []
    numeric: set[int] = set()
    for index, tick in enumerate(ticks(sim, CYCLE_TICKS)):
        for _, frame in tick:
            if frame.get("sensorId") == FAULT_SENSOR_ID:
                if isinstance(frame["value"], dict):
                    states.append((index, "sensor", frame["value"]["o"]))
                else:
                    numeric.add(index)
            if frame["type"] == "IT_STATE" and frame["itId"] == FAULT_IT_ID:
                states.append((index, "it", frame["value"]["o"]))
    start, end = FAULT_TICKS.start, FAULT_TICKS.stop
    assert states == [
        (start, "sensor", "KO"),
        (start, "it", "KO"),
        (start + 5, "sensor", "KO"),
        (end, "sensor", "OK"),
        (end, "it", "OK"),
    ]
    assert numeric == set(range(CYCLE_TICKS)) - set(FAULT_TICKS)


def test_data_containers_alternate_type_shape_and_unit() -> None:
    sim = simulator()
    seen = set()
    for tick in ticks(sim, 2 * CYCLE_TICKS):
        for _, frame in tick:
            if frame["type"] in ("DATA_PROVIDER", "NEW_DATA"):
                data = frame["container"]["data"]
                shape = "in" if "data_points" in data["header"] else "beside"
                points = data["header"].get("data_points") or data["data_points"]
                unit = "s" if frame["timestamp"] < 10**11 else "ms"
                assert all((p["d"] < 10**11) == (unit == "s") for p in points)
                seen.add((frame["type"], shape, unit))
    assert len(seen) == 8


def test_containers_can_be_pinned() -> None:
    sim = simulator(container_shape="in-header", provider_timestamps="ms", provider_type="NEW_DATA")
    frames = [f for tick in ticks(sim, 20) for _, f in tick if "container" in f]
    assert {f["type"] for f in frames} == {"NEW_DATA"}
    assert all("data_points" in f["container"]["data"]["header"] for f in frames)
    assert all(f["timestamp"] > 10**11 for f in frames)


def test_switch_press_is_followed_by_a_release() -> None:
    sim = simulator()
    values = [f["value"] for tick in ticks(sim, 16) for _, f in tick if f.get("factorId") == "SWS"]
    assert len(values) == 6
    assert values[1::2] == [0, 0, 0]
    assert all(1 <= v <= 5 for v in values[0::2])


def test_java_style_numbers_and_documented_field_sets() -> None:
    sim = simulator()
    frames = {
        f["type"]: (body, f) for topic, body in sim.next_tick_frames() for f in [orjson.loads(body)]
    }
    body, target = frames["FACTOR_TARGET_STATE"]
    assert '"value":21.0' in body  # floats keep their decimal point, as Jackson writes them
    assert set(target) == {"type", "timestamp", "zoneId", "factorId", "value"}
    _, actuator = frames["ACTUATOR_TARGET_STATE"]
    assert set(actuator["value"]) == {
        "id",
        "itId",
        "actuatorId",
        "value",
        "timestamp",
        "progressive",
        "colorEnable",
        "color",
        "hsvColor",
        "ctEnable",
        "ct",
        "minActionValue",
        "maxActionValue",
        "remote",
        "direct",
    }


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"interval": 0}, "interval must be > 0"),
        ({"token_ttl": 0}, "token_ttl must be > 0"),
        ({"heartbeat_grace": 0.5}, "heartbeat_grace"),
    ],
)
def test_invalid_arguments(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        HemisSimulator(BUILDING, "token-1234", **kwargs)


def test_not_started_simulator_has_no_url() -> None:
    with pytest.raises(RuntimeError, match="not started"):
        _ = simulator().url
