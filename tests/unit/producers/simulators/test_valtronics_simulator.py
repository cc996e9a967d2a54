"""The Valtronics simulator's protocol core, values and frames, without sockets.

The golden frames under tests/data/upstream/valtronics/ are what a seeded simulator with a
fixed clock sends; the last test regenerates them, so they cannot drift from the simulator.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest

from producers.simulators.valtronics import (
    FLAKY_DEVICE_ID,
    HOT_DEVICE_ID,
    AlertRaised,
    CommandResponse,
    DeviceHeartbeat,
    Event,
    Heartbeat,
    SimClient,
    StatusChanged,
    SystemNotification,
    SystemStatus,
    Telemetry,
    ValtronicsSimulator,
    make_jwt,
)
from producers.sources.valtronics import jwt_expiry

GOLDEN = Path(__file__).parents[3] / "data" / "upstream" / "valtronics"
TOKEN = "demo-token-0123456789"
BASE_S = 1_767_225_600.25  # 2026-01-01T00:00:00.250Z


def clocked(variant: str = "doc", **kwargs: Any) -> ValtronicsSimulator:
    """A simulator whose clock is BASE_S + tick seconds (reproducible timestamps)."""
    holder: list[ValtronicsSimulator] = []
    sim = ValtronicsSimulator(
        TOKEN,
        variant=variant,  # type: ignore[arg-type]
        seed=kwargs.pop("seed", 42),
        clock=lambda: BASE_S + holder[0].tick,
        **kwargs,
    )
    holder.append(sim)
    return sim


def doc_client(sim: ValtronicsSimulator, *subscriptions: dict[str, Any]) -> SimClient:
    client = sim.new_client("/ws")
    assert sim.receive(client, json.dumps({"type": "auth", "token": TOKEN})) == [
        '{"type":"auth_response","success":true}'
    ]
    for subscription in subscriptions:
        assert sim.receive(client, json.dumps({"type": "subscribe", **subscription})) == []
    return client


def server_client(sim: ValtronicsSimulator, *devices: Any) -> SimClient:
    client = sim.new_client("/ws")
    for device in devices:
        reply = sim.receive(client, json.dumps({"type": "subscribe_device", "device_id": device}))
        assert [orjson.loads(r)["type"] for r in reply] == ["subscription_confirmed"]
    return client


def run_ticks(sim: ValtronicsSimulator, ticks: int) -> list[list[Event]]:
    return [sim.next_tick_events() for _ in range(ticks)]


def first(events: list[list[Event]], predicate: Callable[[Event], bool]) -> tuple[int, Event]:
    """(1-based tick, event) of the first event matching ``predicate``."""
    for tick, tick_events in enumerate(events, start=1):
        for event in tick_events:
            if predicate(event):
                return tick, event
    raise AssertionError("no such event")


def temperatures(events: list[list[Event]], device_id: int) -> dict[int, float]:
    out = {}
    for tick, tick_events in enumerate(events, start=1):
        for event in tick_events:
            if isinstance(event, Telemetry) and event.device_id == device_id:
                out[tick] = dict((n, v) for n, v, _ in event.readings)["temperature"]
    return out


# --- values and demo behaviour ------------------------------------------------------------------


def test_seed_makes_values_reproducible() -> None:
    a, b, c = (ValtronicsSimulator(TOKEN, seed=s, clock=lambda: BASE_S) for s in (5, 5, 6))
    assert run_ticks(a, 90) == run_ticks(b, 90)
    assert run_ticks(a, 90) != run_ticks(c, 180)[90:]


def test_hot_device_exceeds_30_degrees_within_5_ticks_and_cools_down() -> None:
    events = run_ticks(clocked(), 120)
    temps = temperatures(events, HOT_DEVICE_ID)
    hot = sorted(t for t, v in temps.items() if v > 30)
    # Ticks 5-14 of every 30: a "temperature > 30" rule fires after ~5 s and resolves after ~15 s.
    assert hot == [t for c in range(0, 120, 30) for t in range(c + 5, c + 15)]
    assert all(22 <= v <= 27 for t, v in temps.items() if t not in hot)
    tick, alert = first(
        events, lambda e: isinstance(e, AlertRaised) and e.alert_type == "threshold"
    )
    assert tick == 5
    assert isinstance(alert, AlertRaised)
    assert (alert.device_id, alert.severity, alert.threshold) == (HOT_DEVICE_ID, "critical", 30.0)
    assert alert.actual == temps[5]


def test_only_the_hot_device_ever_exceeds_30_degrees() -> None:
    sim = clocked(devices=6)
    events = run_ticks(sim, 600)
    for device in sim.devices[1:]:
        temps = temperatures(events, device.id)
        assert temps and all(v < 30 for v in temps.values()), device.name
        assert max(temps.values()) - min(temps.values()) > 0.5  # varies


def test_flaky_device_goes_offline_for_30_ticks_then_returns() -> None:
    events = run_ticks(clocked(), 120)
    changes = [
        (tick, e.old, e.new, e.reason)
        for tick, tick_events in enumerate(events, start=1)
        for e in tick_events
        if isinstance(e, StatusChanged)
    ]
    assert changes == [
        (10, "online", "offline", "Connection lost"),
        (40, "offline", "online", "Connection restored"),
        (70, "online", "offline", "Connection lost"),
        (100, "offline", "online", "Connection restored"),
    ]
    silent = set(range(10, 40)) | set(range(70, 100))
    assert set(temperatures(events, FLAKY_DEVICE_ID)) == set(range(1, 121)) - silent
    tick, alert = first(
        events, lambda e: isinstance(e, AlertRaised) and e.alert_type == "connectivity"
    )
    assert tick == 10
    assert isinstance(alert, AlertRaised)
    assert (alert.device_id, alert.severity) == (FLAKY_DEVICE_ID, "warning")


def test_offline_status_carries_the_last_telemetry_time() -> None:
    events = run_ticks(clocked(), 12)
    _, change = first(events, lambda e: isinstance(e, StatusChanged))
    assert isinstance(change, StatusChanged)
    assert change.last_seen == BASE_S + 9


def test_server_only_events_and_system_status_follow_their_schedule() -> None:
    events = run_ticks(clocked(), 60)
    kinds = {
        kind: [t for t, te in enumerate(events, start=1) for e in te if isinstance(e, kind)]
        for kind in (SystemStatus, CommandResponse, SystemNotification)
    }
    assert kinds[SystemStatus] == list(range(5, 61, 5))
    assert kinds[CommandResponse] == [25]
    assert kinds[SystemNotification] == [50]
    beats = [
        (t, e.device_id)
        for t, te in enumerate(events, 1)
        for e in te
        if isinstance(e, DeviceHeartbeat)
    ]
    assert (14, 1) in beats
    assert all((t + d) % 15 == 0 for t, d in beats)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"devices": 2}, "devices must be >= 3, got 2"),
        ({"interval": 0}, "interval must be > 0 seconds, got 0"),
        ({"heartbeat_interval": -1}, "heartbeat_interval must be > 0 seconds, got -1"),
        ({"variant": "rest"}, "variant must be 'doc' or 'server', got 'rest'"),
        ({"max_message_bytes": 0}, "max_message_bytes and max_messages_per_second must be >= 1"),
    ],
)
def test_invalid_arguments(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ValtronicsSimulator(TOKEN, **kwargs)


def test_doc_variant_needs_a_token_server_variant_does_not() -> None:
    with pytest.raises(ValueError, match="token must not be empty for the doc variant"):
        ValtronicsSimulator("")
    assert ValtronicsSimulator(variant="server").variant == "server"


def test_url_needs_a_started_server() -> None:
    with pytest.raises(RuntimeError, match="simulator not started"):
        _ = ValtronicsSimulator(TOKEN).url


# --- doc protocol ---------------------------------------------------------------------------------


def test_doc_auth_accepts_only_known_unexpired_tokens() -> None:
    sim = clocked()
    client = sim.new_client()
    refused = sim.receive(client, '{"type": "auth", "token": "wrong-token"}')
    assert [orjson.loads(r) for r in refused] == [
        {
            "type": "auth_response",
            "success": False,
            "message": "Invalid token",
            "error": "invalid_token",
        }
    ]
    expired = make_jwt({"exp": BASE_S - 1})
    sim.add_token(expired)
    assert (
        orjson.loads(sim.receive(client, json.dumps({"type": "auth", "token": expired}))[0])[
            "message"
        ]
        == "Token expired"
    )
    assert not client.authenticated
    valid = make_jwt({"exp": BASE_S + 60})
    sim.add_token(valid)
    assert sim.receive(client, json.dumps({"type": "auth", "token": valid})) == [
        '{"type":"auth_response","success":true}'
    ]
    assert client.expires_at == jwt_expiry(valid) == BASE_S + 60
    assert (sim.auth_succeeded, sim.auth_failed) == (1, 2)


def test_doc_requires_auth_before_subscribing_but_answers_pings() -> None:
    sim = clocked()
    client = sim.new_client()
    assert sim.receive(client, '{"type": "ping", "timestamp": "2024-01-01T12:00:00Z"}') == [
        '{"type":"pong"}'
    ]
    reply = orjson.loads(sim.receive(client, '{"type": "subscribe", "channel": "alerts"}')[0])
    assert reply["type"] == "error"
    assert reply["error"] == {"code": "AUTHENTICATION_ERROR", "message": "Authentication required"}
    assert client.subscriptions == []


@pytest.mark.parametrize(
    ("message", "code", "text"),
    [
        (
            {"type": "subscribe", "channel": "weather"},
            "VALIDATION_ERROR",
            "Unknown channel: weather",
        ),
        (
            {"type": "subscribe", "channel": "alerts", "filters": [1]},
            "VALIDATION_ERROR",
            "filters must be an object",
        ),
        (
            {"type": "subscribe", "channel": "telemetry", "device_id": 99},
            "RESOURCE_NOT_FOUND",
            "Device not found",
        ),
        (
            {"type": "get_device_status", "device_id": 1},
            "VALIDATION_ERROR",
            "Unknown message type: get_device_status",
        ),
        ([1, 2], "VALIDATION_ERROR", "Message must be a JSON object"),
    ],
)
def test_doc_refuses_bad_requests(message: Any, code: str, text: str) -> None:
    sim = clocked()
    client = doc_client(sim)
    reply = orjson.loads(sim.receive(client, json.dumps(message))[0])
    assert reply["error"]["code"] == code
    assert reply["error"]["message"] == text
    assert client.subscriptions == []
    assert sim.errors_sent[code] == 1


def test_doc_refuses_invalid_json() -> None:
    sim = clocked()
    reply = orjson.loads(sim.receive(doc_client(sim), "{nope")[0])
    assert reply["error"] == {"code": "VALIDATION_ERROR", "message": "Invalid JSON format"}


def test_doc_size_limit_refuses_and_does_not_process() -> None:
    sim = clocked(max_message_bytes=80)
    client = doc_client(sim)
    message = json.dumps(
        {"type": "subscribe", "channel": "telemetry", "filters": {"metrics": ["x" * 60]}}
    )
    reply = orjson.loads(sim.receive(client, message)[0])
    size = len(message.encode())
    assert reply["error"] == {
        "code": "VALIDATION_ERROR",
        "message": f"Message is {size} bytes; the limit is 80 bytes",
        "details": {"size_bytes": size, "limit_bytes": 80},
    }
    assert client.subscriptions == []


def test_doc_rate_limit_refuses_messages_beyond_the_window() -> None:
    sim = clocked(max_messages_per_second=3)
    client = sim.new_client()
    replies = [sim.receive(client, '{"type": "ping"}') for _ in range(5)]
    assert replies[:3] == [['{"type":"pong"}']] * 3
    for reply in replies[3:]:
        error = orjson.loads(reply[0])["error"]
        assert error == {
            "code": "RATE_LIMIT_EXCEEDED",
            "message": "Rate limit exceeded",
            "details": {"limit": 3, "window_s": 1},
        }
    assert sim.pings_received == 3
    client.recent.clear()  # the one-second window moved on
    assert sim.receive(client, '{"type": "ping"}') == ['{"type":"pong"}']


def test_doc_batch_is_unpacked_and_limited_to_50() -> None:
    sim = clocked()
    client = doc_client(sim)
    batch = {
        "type": "batch",
        "messages": [{"type": "ping"}, {"type": "subscribe", "channel": "alerts"}],
    }
    assert sim.receive(client, json.dumps(batch)) == ['{"type":"pong"}']
    assert client.subscriptions == [("alerts", None, {})]
    too_many = {"type": "batch", "messages": [{"type": "ping"}] * 51}
    error = orjson.loads(sim.receive(client, json.dumps(too_many))[0])["error"]
    assert error["message"] == "Batch has 51 messages; the limit is 50"


def test_doc_unsubscribe_removes_matching_subscriptions() -> None:
    sim = clocked()
    client = doc_client(
        sim,
        {"channel": "telemetry", "device_id": 1},
        {"channel": "telemetry", "device_id": 2},
        {"channel": "alerts"},
    )
    assert (
        sim.receive(client, '{"type": "unsubscribe", "channel": "telemetry", "device_id": 1}') == []
    )
    assert client.subscriptions == [("telemetry", 2, {}), ("alerts", None, {})]
    sim.receive(client, '{"type": "unsubscribe", "channel": "telemetry"}')
    assert client.subscriptions == [("alerts", None, {})]


def test_doc_channel_path_subscribes_after_auth() -> None:
    sim = clocked()
    client = sim.new_client("/ws/notifications")
    assert client.subscriptions == []
    sim.receive(client, json.dumps({"type": "auth", "token": TOKEN}))
    assert client.subscriptions == [("alerts", None, {})]
    with pytest.raises(ValueError, match="path '/ws/weather' is not served"):
        sim.new_client("/ws/weather")


def test_doc_rendering_follows_subscriptions_and_filters() -> None:
    sim = clocked()
    events = run_ticks(sim, 12)
    client = doc_client(
        sim,
        {"channel": "telemetry", "device_id": 1, "filters": {"metrics": ["temperature"]}},
        {"channel": "alerts", "filters": {"severity": ["critical"]}},
        {"channel": "devices", "filters": {"device_id": [3], "status_types": ["offline"]}},
    )
    frames = [orjson.loads(f) for te in events for e in te for f in sim.render(client, e)]
    telemetry = [f for f in frames if f["type"] == "telemetry_update"]
    assert len(telemetry) == 12
    assert {f["device_id"] for f in telemetry} == {1}
    assert all(set(f["telemetry"]) == {"temperature"} for f in telemetry)
    assert [(f["type"], f["severity"]) for f in frames if f["type"] == "alert"] == [
        ("alert", "critical")
    ]
    assert [
        (f["device_id"], f["new_status"]) for f in frames if f["type"] == "device_status_update"
    ] == [(3, "offline")]
    assert not [f for f in frames if f["type"] == "system_status_update"]
    unauthenticated = sim.new_client()
    assert [f for te in events for e in te for f in sim.render(unauthenticated, e)] == []


# --- server protocol ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("message", "reply"),
    [
        ('{"type": "auth", "token": "x"}', {"error": "Unknown message type: auth"}),
        (
            '{"type": "subscribe", "channel": "alerts"}',
            {"error": "Unknown message type: subscribe"},
        ),
        ('{"device_id": 1}', {"error": "Unknown message type: None"}),
        ("not json", {"error": "Invalid JSON format"}),
        ("[1, 2]", {"error": "Internal server error"}),
        ('{"type": "get_device_status", "device_id": 99}', {"error": "Device not found"}),
        ('{"type": "subscribe_device", "device_id": [1]}', {"error": "Internal server error"}),
    ],
)
def test_server_errors_are_bare(message: str, reply: dict[str, Any]) -> None:
    sim = clocked("server")
    assert [orjson.loads(r) for r in sim.receive(sim.new_client(), message)] == [reply]


@pytest.mark.parametrize(
    "message",
    [
        '{"type": "subscribe_device"}',
        '{"type": "subscribe_device", "device_id": 0}',
        '{"type": "unsubscribe_device", "device_id": "1"}',
        '{"type": "get_device_status", "device_id": ""}',
    ],
)
def test_server_ignores_falsy_or_unknown_ids_silently(message: str) -> None:
    sim = clocked("server")
    assert sim.receive(sim.new_client(), message) == []


def test_server_ping_subscribe_unsubscribe_and_status() -> None:
    sim = clocked("server")
    client = sim.new_client()
    pong = orjson.loads(sim.receive(client, '{"type": "ping"}')[0])
    assert pong == {"type": "pong", "timestamp": "2026-01-01T00:00:00.250000"}
    assert sim.receive(client, '{"type": "subscribe_device", "device_id": "3"}') == [
        '{"type": "subscription_confirmed", "device_id": "3"}'
    ]
    assert sim.receive(client, '{"type": "unsubscribe_device", "device_id": "3"}') == [
        '{"type": "unsubscription_confirmed", "device_id": "3"}'
    ]
    assert client.device_keys == []
    status = orjson.loads(sim.receive(client, '{"type": "get_device_status", "device_id": "1"}')[0])
    assert status == {
        "type": "device_status",
        "device_id": "1",
        "status": "online",
        "last_seen": None,
        "timestamp": "2026-01-01T00:00:00.250000",
    }


def test_server_integer_subscription_is_confirmed_but_gets_no_telemetry() -> None:
    sim = clocked("server")
    events = run_ticks(sim, 3)
    by_int = server_client(sim, 1)
    by_str = server_client(sim, "1")
    int_frames = [f for te in events for e in te for f in sim.render(by_int, e)]
    str_frames = [f for te in events for e in te for f in sim.render(by_str, e)]
    assert not [f for f in int_frames if '"telemetry_update"' in f]
    assert len([f for f in str_frames if '"telemetry_update"' in f]) == 3 * 3  # one per metric


def test_server_path_device_subscription_and_duplicate_device_updates() -> None:
    sim = clocked("server")
    events = run_ticks(sim, 10)
    by_path = sim.new_client("/ws/3")
    other = sim.new_client("/ws")
    change = next(e for te in events for e in te if isinstance(e, StatusChanged))
    assert len(sim.render(by_path, change)) == 2  # to the subscribers and to everyone
    assert len(sim.render(other, change)) == 1
    telemetry = next(e for e in events[0] if isinstance(e, Telemetry) and e.device_id == 3)
    assert len(sim.render(by_path, telemetry)) == 3
    assert sim.render(other, telemetry) == []
    assert sim.render(other, SystemStatus(BASE_S, 1.0, 2.0, 3.0)) == []


def test_server_frames_use_python_json_and_naive_utc_times() -> None:
    sim = clocked("server")
    events = run_ticks(sim, 1)
    client = server_client(sim, "1", "2")
    frames = [f for e in events[0] for f in sim.render(client, e)]
    one = next(f for f in frames if '"device_id": 1,' in f)
    two = next(f for f in frames if '"device_id": 2,' in f)
    assert '"unit": "\\u00b0C"' in one
    assert '"timestamp": "2026-01-01T00:00:01.250000"' in one
    assert '"timestamp": "2026-01-01T00:00:01.250000+00:00"' in two  # device-side aware time


def test_make_jwt_round_trips_the_expiry() -> None:
    exp = int(time.time()) + 3600
    token = make_jwt({"sub": "streamwarden", "exp": exp})
    assert token.count(".") == 2
    assert token.startswith("eyJ")
    assert jwt_expiry(token) == exp


# --- golden frames --------------------------------------------------------------------------------


def golden_frames() -> dict[str, str]:
    """The frames stored under tests/data/upstream/valtronics/, from seeded simulators."""
    doc = clocked("doc")
    events = run_ticks(doc, 60)
    flat_events = list(events)

    def pick(kind: type, **fields: Any) -> Any:
        for tick_events in flat_events:
            for event in tick_events:
                if isinstance(event, kind) and all(
                    getattr(event, k) == v for k, v in fields.items()
                ):
                    return event
        raise AssertionError(f"no {kind.__name__} {fields}")

    client = doc_client(
        doc,
        {"channel": "telemetry"},
        {"channel": "alerts"},
        {"channel": "devices"},
        {"channel": "system"},
    )
    flat_client = doc_client(doc, {"channel": "device_telemetry", "device_id": 2})
    refused = doc.new_client()
    limited = ValtronicsSimulator(TOKEN, seed=1, clock=lambda: BASE_S, max_messages_per_second=1)
    limited_client = limited.new_client()
    limited.receive(limited_client, '{"type": "ping"}')
    small = ValtronicsSimulator(TOKEN, seed=1, clock=lambda: BASE_S, max_message_bytes=16)
    telemetry = pick(Telemetry, device_id=1)
    offline = pick(StatusChanged, new="offline")
    frames = {
        "doc_auth_response_ok.json": doc.receive(
            doc.new_client(), json.dumps({"type": "auth", "token": TOKEN})
        )[0],
        "doc_auth_response_failed.json": doc.receive(refused, '{"type": "auth", "token": "nope"}')[
            0
        ],
        "doc_telemetry_update.json": doc.render(client, telemetry)[0],
        "doc_telemetry_update_flat.json": doc.render(flat_client, pick(Telemetry, device_id=2))[0],
        "doc_alert.json": doc.render(client, pick(AlertRaised, alert_type="threshold"))[0],
        "doc_device_status_update.json": doc.render(client, offline)[0],
        "doc_system_status_update.json": doc.render(client, pick(SystemStatus))[0],
        "doc_pong.json": doc.receive(
            client, '{"type": "ping", "timestamp": "2026-01-01T00:00:00Z"}'
        )[0],
        "doc_error_rate_limit.json": limited.receive(limited_client, '{"type": "ping"}')[0],
        "doc_error_too_large.json": small.receive(
            small.new_client(), '{"type": "auth", "token": "x"}'
        )[0],
        "doc_error_not_found.json": doc.receive(
            client, '{"type": "subscribe", "channel": "telemetry", "device_id": 99}'
        )[0],
    }
    server = clocked("server")
    sevents = run_ticks(server, 60)
    flat_events[:] = sevents
    sclient = server_client(server, "1", "2", "3", "4")
    frames.update(
        {
            "server_telemetry_update.json": server.render(sclient, pick(Telemetry, device_id=1))[0],
            "server_telemetry_update_aware.json": server.render(
                sclient, pick(Telemetry, device_id=2)
            )[0],
            "server_device_update_status.json": server.render(
                sclient, pick(StatusChanged, new="offline")
            )[0],
            "server_device_update_heartbeat.json": server.render(sclient, pick(DeviceHeartbeat))[0],
            "server_device_update_command.json": server.render(sclient, pick(CommandResponse))[0],
            "server_alert.json": server.render(sclient, pick(AlertRaised, alert_type="threshold"))[
                0
            ],
            "server_system_notification.json": server.render(sclient, pick(SystemNotification))[0],
            "server_heartbeat.json": server.render(sclient, Heartbeat(BASE_S + 30))[0],
            "server_pong.json": server.receive(sclient, '{"type": "ping"}')[0],
            "server_subscription_confirmed.json": server.receive(
                sclient, '{"type": "subscribe_device", "device_id": "4"}'
            )[0],
            "server_unsubscription_confirmed.json": server.receive(
                sclient, '{"type": "unsubscribe_device", "device_id": "4"}'
            )[0],
            "server_device_status.json": server.receive(
                sclient, '{"type": "get_device_status", "device_id": 3}'
            )[0],
            "server_error_unknown_type.json": server.receive(
                sclient, json.dumps({"type": "auth", "token": TOKEN})
            )[0],
        }
    )
    return frames


def write_golden_frames() -> None:  # pragma: no cover - run by hand after changing the simulator
    GOLDEN.mkdir(parents=True, exist_ok=True)
    for name, text in golden_frames().items():
        (GOLDEN / name).write_text(text + "\n", encoding="utf-8")


def test_golden_frames_are_what_the_simulator_sends() -> None:
    generated = golden_frames()
    assert sorted(p.name for p in GOLDEN.glob("*.json")) == sorted(generated)
    for name, text in generated.items():
        assert (GOLDEN / name).read_text(encoding="utf-8") == text + "\n", name
        assert TOKEN not in text
        assert isinstance(orjson.loads(text), dict)
