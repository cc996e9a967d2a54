"""Valtronics config, messages, frame classification, keys, envelopes and token masking."""

from __future__ import annotations

import base64
import logging
from pathlib import Path
from typing import Any

import orjson
import pytest
from pydantic import SecretStr, ValidationError
from websockets.frames import Frame, Opcode

from producers.envelope import decode_envelope, encode_envelope
from producers.simulators.valtronics import make_jwt
from producers.sources.valtronics import (
    DEFAULT_SUBSCRIPTIONS,
    KIND,
    Control,
    ControlKind,
    TokenMaskFilter,
    ValtronicsSource,
    ValtronicsSubscription,
    _Pacer,
    auth_message,
    build_envelope,
    classify,
    frame_key,
    jwt_expiry,
    ping_message,
    server_subscribe_messages,
    subscribe_message,
)
from tests.support.secrets import register_secret

TOKEN = register_secret(make_jwt({"sub": "streamwarden", "exp": 1_900_000_000}))


def source(**overrides: Any) -> ValtronicsSource:
    values: dict[str, Any] = {
        "name": "valtronics-test",
        "kind": "valtronics",
        "url": "ws://127.0.0.1:8000/ws",
        "token": TOKEN,
    }
    values.update(overrides)
    return ValtronicsSource(**values)


def errors_of(**overrides: Any) -> list[str]:
    with pytest.raises(ValidationError) as info:
        source(**overrides)
    return [f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in info.value.errors()]


# --- config ---------------------------------------------------------------------------------------


def test_defaults_subscribe_to_every_documented_channel() -> None:
    config = source()
    assert config.kind == KIND == "valtronics"
    assert isinstance(config.token, SecretStr)
    assert config.token.get_secret_value() == TOKEN
    assert config.protocol == "auto"
    assert [s.channel for s in config.subscriptions] == ["telemetry", "alerts", "devices", "system"]
    assert config.subscriptions == DEFAULT_SUBSCRIPTIONS
    assert (config.keepalive_interval, config.pong_timeout, config.reply_timeout) == (20, 10, 10)
    assert config.send_rate == 20.0
    assert TOKEN not in repr(config)


def test_subscriptions_and_durations_parse() -> None:
    config = source(
        subscriptions=[
            {"channel": "telemetry", "device_id": 1, "filters": {"metrics": ["temperature"]}},
            {"channel": "device_telemetry", "device_id": "TEMP-001"},
        ],
        keepalive_interval="500ms",
        pong_timeout="2s",
    )
    assert config.subscriptions[0].filters == {"metrics": ["temperature"]}
    assert config.subscriptions[1].device_id == "TEMP-001"
    assert (config.keepalive_interval, config.pong_timeout) == (0.5, 2.0)


def test_the_token_is_a_secret_the_sources_loader_knows() -> None:
    from producers.config import secrets_of

    assert secrets_of(source(token="abc-secret/token")) == [
        "abc-secret/token",
        "abc-secret%2Ftoken",
    ]
    assert secrets_of(source(token=None, protocol="server")) == []


def test_token_file_or_server_protocol_replace_the_token(tmp_path: Path) -> None:
    assert source(token=None, token_file=tmp_path / "jwt").token_file == tmp_path / "jwt"
    assert source(token=None, protocol="server").token is None


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (
            {"token": None},
            "token or token_file is required (only protocol: server works without one)",
        ),
        ({"token_file": "/run/jwt"}, "give token or token_file, not both"),
        ({"token": ""}, "token must not be empty"),
        ({"subscriptions": []}, "should have at least 1 item"),
        ({"send_rate": 150}, "less than or equal to 100"),
        ({"apikey": "x"}, "Extra inputs are not permitted"),
        ({"subscriptions": [{"channel": "weather"}]}, "Input should be 'telemetry', 'alerts'"),
        ({"subscriptions": [{"channel": "alerts", "device_id": True}]}, "True is not a device id"),
        (
            {"subscriptions": [{"channel": "alerts", "device_id": " "}]},
            "device id must not be empty",
        ),
        ({"subscriptions": [{"channel": "alerts", "extra": 1}]}, "Extra inputs are not permitted"),
    ],
)
def test_invalid_entries(overrides: dict[str, Any], expected: str) -> None:
    problems = errors_of(**overrides)
    assert any(expected in p for p in problems), problems


def test_url_must_be_websocket_without_query_and_is_redacted() -> None:
    problems = errors_of(url="ws://h:8000/ws?token=secret-value-123")
    assert problems == [
        "url: Value error, 'ws://h:8000/ws?token=***' must not have a query string or fragment; "
        "the token goes in token or token_file"
    ]
    assert "secret-value-123" not in str(problems)
    assert "is not a WebSocket URL" in errors_of(url="http://h/ws")[0]


def test_subscribe_messages_above_the_documented_1kb_are_refused_at_load() -> None:
    big = {"metrics": [f"metric_{i:04d}" for i in range(80)]}
    problems = errors_of(
        subscriptions=[{"channel": "alerts"}, {"channel": "telemetry", "filters": big}]
    )
    assert len(problems) == 1
    assert "subscriptions[1]: the subscribe message is " in problems[0]
    assert "bytes; the documented limit is 1024 bytes, shorten its filters" in problems[0]


# --- messages -------------------------------------------------------------------------------------


def test_auth_message_puts_type_first() -> None:
    assert orjson.dumps(auth_message("t0k3n")) == b'{"type":"auth","token":"t0k3n"}'


@pytest.mark.parametrize(
    ("subscription", "message"),
    [
        ({"channel": "alerts"}, {"type": "subscribe", "channel": "alerts"}),
        (
            {"channel": "telemetry", "device_id": 1, "filters": {"metrics": ["power"]}},
            {
                "type": "subscribe",
                "channel": "telemetry",
                "device_id": 1,
                "filters": {"metrics": ["power"]},
            },
        ),
        (
            {"channel": "devices", "filters": {}},
            {"type": "subscribe", "channel": "devices", "filters": {}},
        ),
    ],
)
def test_subscribe_message(subscription: dict[str, Any], message: dict[str, Any]) -> None:
    assert subscribe_message(ValtronicsSubscription(**subscription)) == message


def test_server_subscriptions_are_distinct_string_device_ids() -> None:
    subscriptions = [
        ValtronicsSubscription(channel="telemetry", device_id=1),
        ValtronicsSubscription(channel="alerts"),
        ValtronicsSubscription(channel="devices", device_id="1"),
        ValtronicsSubscription(channel="telemetry", device_id="TEMP-002"),
    ]
    assert server_subscribe_messages(subscriptions) == [
        {"type": "subscribe_device", "device_id": "1"},
        {"type": "subscribe_device", "device_id": "TEMP-002"},
    ]


def test_ping_message_has_the_documented_timestamp_form() -> None:
    assert ping_message(1_704_110_400.9) == {"type": "ping", "timestamp": "2024-01-01T12:00:00Z"}


@pytest.mark.parametrize(
    ("token", "expiry"),
    [
        (make_jwt({"exp": 1_700_000_000}), 1_700_000_000.0),
        (make_jwt({"exp": 1.5}), 1.5),
        (make_jwt({"sub": "x"}), None),
        (make_jwt({"exp": True}), None),
        (make_jwt({"exp": "1700000000"}), None),
        ("a.bm90IGpzb24.c", None),  # not JSON
        ("a.WzFd.c", None),  # JSON, not an object
        ("a.!!!.c", None),
        ("opaque-token", None),
    ],
)
def test_jwt_expiry(token: str, expiry: float | None) -> None:
    assert jwt_expiry(token) == expiry


# --- frames ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("frame", "control"),
    [
        ('{"type": "pong"}', Control(ControlKind.PONG)),
        ('{"type": "pong", "timestamp": "2026-05-04T16:10:00.1"}', Control(ControlKind.PONG)),
        ('{"type": "auth_response", "success": true}', Control(ControlKind.AUTH_OK)),
        (
            '{"type": "auth_response", "success": false, "message": "Invalid token", "error": "invalid_token"}',
            Control(ControlKind.AUTH_FAILED, "Invalid token (invalid_token)"),
        ),
        ('{"type": "auth_response"}', Control(ControlKind.AUTH_FAILED, "no reason given")),
        (
            '{"type": "subscription_confirmed", "device_id": "1"}',
            Control(ControlKind.CONFIRMED, device_id="1"),
        ),
        (
            '{"error": "Unknown message type: auth"}',
            Control(ControlKind.NO_AUTH, "Unknown message type: auth"),
        ),
        (
            '{"error": "Unknown message type: subscribe"}',
            Control(ControlKind.ERROR_REJECTED, "Unknown message type: subscribe"),
        ),
        ('{"error": "Device not found"}', Control(ControlKind.ERROR_REJECTED, "Device not found")),
        (
            '{"error": "Invalid JSON format"}',
            Control(ControlKind.ERROR_REJECTED, "Invalid JSON format"),
        ),
        (
            '{"error": "Internal server error"}',
            Control(ControlKind.ERROR_TRANSIENT, "Internal server error"),
        ),
        ('{"error": "Something else"}', Control(ControlKind.ERROR_OTHER, "Something else")),
        (
            '{"type": "error", "success": false, "error": {"code": "RATE_LIMIT_EXCEEDED", "message": "Rate limit exceeded", "details": {"limit": 100}}}',
            Control(
                ControlKind.ERROR_RATE_LIMIT, "RATE_LIMIT_EXCEEDED: Rate limit exceeded", limit=100
            ),
        ),
        (
            '{"success": false, "error": {"code": "RATE_LIMIT_EXCEEDED", "details": {"limit": "x"}}}',
            Control(ControlKind.ERROR_RATE_LIMIT, "RATE_LIMIT_EXCEEDED"),
        ),
        (
            '{"type": "error", "error": {"code": "AUTHENTICATION_ERROR", "message": "Authentication required"}}',
            Control(ControlKind.ERROR_AUTH, "AUTHENTICATION_ERROR: Authentication required"),
        ),
        (
            '{"type": "error", "error": {"code": "VALIDATION_ERROR", "message": "Message is 2000 bytes"}}',
            Control(ControlKind.ERROR_REJECTED, "VALIDATION_ERROR: Message is 2000 bytes"),
        ),
        (
            '{"type": "error", "error": {"code": "RESOURCE_NOT_FOUND", "message": "Device not found"}}',
            Control(ControlKind.ERROR_REJECTED, "RESOURCE_NOT_FOUND: Device not found"),
        ),
        (
            '{"type": "error", "error": {"code": "INTERNAL_ERROR"}}',
            Control(ControlKind.ERROR_TRANSIENT, "INTERNAL_ERROR"),
        ),
        (
            '{"type": "error", "error": {"code": "TEAPOT"}}',
            Control(ControlKind.ERROR_OTHER, "TEAPOT"),
        ),
        ('{"type": "telemetry_update", "device_id": 1}', Control(ControlKind.DATA)),
        ('{"type": "heartbeat", "status": "alive"}', Control(ControlKind.DATA)),
        ('{"type": "error", "error": "flat"}', Control(ControlKind.DATA)),
        ("[1, 2]", Control(ControlKind.DATA)),
        ("not json", Control(ControlKind.DATA)),
    ],
)
def test_classify(frame: str, control: Control) -> None:
    try:
        document = orjson.loads(frame)
    except orjson.JSONDecodeError:
        document = None
    assert classify(document if isinstance(document, dict) else None) == control


def test_long_upstream_error_text_is_shortened() -> None:
    control = classify({"error": "x" * 500})
    assert len(control.text) == 200
    assert control.text.endswith("...")


@pytest.mark.parametrize(
    ("frame", "key"),
    [
        ('{"type": "telemetry_update", "device_id": 1, "telemetry": {}}', b"1"),
        ('{"type": "device_update", "device_id": "TEMP-001"}', b"TEMP-001"),
        ('{"type": "alert", "alert": {"device_id": 7}}', b"7"),
        ('{"type": "alert", "channel": "alerts", "device_id": 2}', b"2"),
        (b'{"type": "subscription_confirmed", "device_id": "\xc3\xa9"}', "é".encode()),
        ('{"type": "heartbeat"}', None),
        ('{"type": "pong"}', None),
        ('{"device_id": true}', None),
        ('{"device_id": ""}', None),
        ('{"device_id": 1.5}', None),
        ('{"alert": "x"}', None),
        ("[1]", None),
        ("{broken", None),
    ],
)
def test_frame_key(frame: str | bytes, key: bytes | None) -> None:
    assert frame_key(frame) == key


def test_envelope_wraps_the_frame_unchanged() -> None:
    frame = '{"type": "telemetry_update", "device_id": 1, "data": {"unit": "\\u00b0C"}}  '
    envelope = build_envelope("valtronics-demo", frame, 2)
    assert (envelope.source, envelope.stream, envelope.payload) == (
        "valtronics",
        "valtronics-demo",
        frame,
    )
    assert envelope.meta == {"connection": 2}
    assert decode_envelope(encode_envelope(envelope)).payload == frame


def test_binary_frames_are_base64_with_encoding_meta() -> None:
    envelope = build_envelope("s", b"\x00\xff", 1)
    assert envelope.meta == {"connection": 1, "encoding": "base64"}
    assert base64.b64decode(envelope.payload) == b"\x00\xff"


# --- secrets and pacing ---------------------------------------------------------------------------


def websockets_log_line(text: str) -> str:
    """What websockets' debug log prints for an outgoing text frame (elided when long)."""
    return f"> {Frame(Opcode.TEXT, text.encode())}"


@pytest.mark.parametrize(
    "token",
    [
        TOKEN,
        make_jwt({"sub": "a-much-longer-subject-" * 10, "exp": 1}),
        "opaque-demo-token-Zq81nXv3PpL0",
    ],
)
def test_mask_filter_hides_the_token_even_in_elided_frame_logs(token: str) -> None:
    line = websockets_log_line(orjson.dumps(auth_message(token)).decode())
    masked = TokenMaskFilter().redact(line)  # no known secrets: patterns only
    assert '"token":"***' in masked
    for size in (8, 12):
        fragments = {token[i : i + size] for i in range(len(token) - size + 1)}
        assert not any(f in masked for f in fragments), masked
    assert masked.startswith('> TEXT \'{"type":"auth"')


def test_mask_filter_masks_known_secrets_and_jwts_in_records() -> None:
    mask = TokenMaskFilter(["plain-secret-value"])
    record = logging.LogRecord(
        "x", logging.INFO, __file__, 1, "a=%s b=%s", ("plain-secret-value", TOKEN), None
    )
    assert mask.filter(record)
    assert record.getMessage() == "a=*** b=***"
    untouched = logging.LogRecord("x", logging.INFO, __file__, 1, "token count=%d", (3,), None)
    mask.filter(untouched)
    assert (untouched.msg, untouched.args) == ("token count=%d", (3,))


def test_pacer_slows_down_to_half_the_stated_limit_but_not_below_one() -> None:
    pacer = _Pacer(20.0)
    pacer.slow_down(None)
    assert pacer.rate == 10.0
    pacer.slow_down(4)
    assert pacer.rate == 2.0
    pacer.slow_down(None)
    pacer.slow_down(None)
    assert pacer.rate == 1.0
