"""ELEMENT IoT source: config, socket URLs, replay cursor and envelopes (no sockets)."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta, timezone
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest
from pydantic import ValidationError

from producers.sources.element import (
    KIND,
    ElementSource,
    ReplayCursor,
    build_envelope,
    build_url,
    format_after,
)
from tests.support.secrets import register_secret

HOST = "wss://element-iot.com"
T1 = "2024-06-06T13:49:42.049158Z"
T2 = "2024-06-06T13:49:43.000001Z"


def source(**changes: Any) -> ElementSource:
    values: dict[str, Any] = {
        "name": "element",
        "kind": "element",
        "url": HOST,
        "api_key": register_secret("k-123456"),
        "scope": "stream",
        "scope_id": "s1",
    }
    values.update(changes)
    return ElementSource(**values)


def frame(*events: tuple[str, str | None, str | None]) -> str:
    """(id, device_id, inserted_at) per event; None leaves the field out."""
    items = []
    for ident, device, inserted in events:
        body = {"id": ident, "device_id": device, "inserted_at": inserted}
        items.append({"event": "reading_added", "body": {k: v for k, v in body.items() if v}})
    return json.dumps(items)


# --- config and URL -------------------------------------------------------------------------


def test_defaults() -> None:
    got = source()
    assert got.socket == "readings"
    assert got.keepalive == "protocol"
    assert got.ping_interval == 30.0
    assert got.idle_timeout is None
    assert got.after is None
    assert "k-123456" not in repr(got)


@pytest.mark.parametrize(
    ("scope", "scope_id", "socket", "path"),
    [
        ("device", "d-1", "readings", "/api/v1/devices/d-1/readings/socket"),
        ("device", "d-1", "packets", "/api/v1/devices/d-1/packets/socket"),
        ("tag", "t-1", "readings", "/api/v1/tags/t-1/readings/socket"),
        ("stream", "s-1", "packets", "/api/v1/streams/s-1/packets/socket"),
        ("mandate", None, "readings", "/api/v1/readings/socket"),
        ("mandate", None, "packets", "/api/v1/packets/socket"),
    ],
)
def test_socket_paths(scope: Any, scope_id: str | None, socket: Any, path: str) -> None:
    url = build_url(f"{HOST}/", "k", scope=scope, scope_id=scope_id, socket=socket)
    assert url == f"{HOST}{path}?auth=k"


def test_url_encodes_key_after_and_preload() -> None:
    key = "k/y+z=1&after=evil"
    url = build_url(
        "ws://h:1/prefix",
        key,
        scope="tag",
        scope_id="t1",
        socket="packets",
        after="2020-02-05T12:30:21.000000+00:00",
        preload=("device.interfaces", "device.fields"),
    )
    parts = urlsplit(url)
    assert parts.path == "/prefix/api/v1/tags/t1/packets/socket"
    assert parse_qsl(parts.query) == [
        ("auth", key),
        ("after", "2020-02-05T12:30:21.000000+00:00"),
        ("preload", "device.interfaces,device.fields"),
    ]
    assert "%2B00%3A00" in parts.query  # a literal + would arrive as a space


def test_build_url_needs_a_scope_id() -> None:
    with pytest.raises(ValueError, match="scope 'tag' needs a scope_id"):
        build_url(HOST, "k", scope="tag", scope_id=None, socket="readings")


def test_format_after_is_utc_with_microseconds() -> None:
    instant = datetime(2024, 6, 6, 15, 49, 42, 49158, tzinfo=timezone(timedelta(hours=2)))
    assert format_after(instant) == T1


def test_after_is_parsed_from_iso_text() -> None:
    assert source(after="2024-06-06T13:49:42.049158Z").after == datetime(
        2024, 6, 6, 13, 49, 42, 49158, tzinfo=UTC
    )


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"scope_id": None}, "scope_id\n  Value error, required for scope 'stream'"),
        ({"scope": "mandate"}, "scope_id\n  Value error, not allowed for scope 'mandate'"),
        ({"scope_id": "a/b"}, "scope_id"),
        ({"scope": "group"}, "scope"),
        ({"socket": "events"}, "socket"),
        ({"ping_interval": None}, "must be below 60s, got null"),
        ({"ping_interval": "90s"}, "must be below 60s, got 90s"),
        ({"after": "2024-06-06T13:49:42"}, "timezone"),
        ({"keepalive": "tcp"}, "keepalive"),
        ({"url": f"{HOST}/api?auth=secret-value"}, "must not have a query string"),
    ],
)
def test_invalid_config(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError) as caught:
        source(**changes)
    assert message in str(caught.value)
    assert "secret-value" not in str(caught.value)


def test_mandate_needs_no_scope_id() -> None:
    assert source(scope="mandate", scope_id=None).scope == "mandate"


# --- replay cursor --------------------------------------------------------------------------


def test_cursor_keys_by_the_first_device_and_advances_to_the_latest_insert() -> None:
    cursor = ReplayCursor()
    info = cursor.inspect(frame(("r1", "dev-a", T2), ("r2", "dev-b", T1)))
    assert info.key == b"dev-a"
    assert not info.duplicate
    assert cursor.after is None  # inspect alone does not move it
    cursor.advance(info.stamps)
    assert cursor.after == T2
    cursor.advance(cursor.inspect(frame(("r3", "dev-a", T1))).stamps)
    assert cursor.after == T2  # an older event does not move it back


def test_cursor_starts_from_the_configured_after() -> None:
    cursor = ReplayCursor(T1)
    assert cursor.after == T1
    assert not cursor.inspect(frame(("r1", "d", T1))).duplicate  # no id seen at T1 yet


def test_replayed_events_at_the_cursor_are_duplicates() -> None:
    cursor = ReplayCursor()
    cursor.advance(cursor.inspect(frame(("r1", "d", T1), ("r2", "d", T1))).stamps)

    whole = cursor.inspect(frame(("r2", "d", T1)))
    assert whole.duplicate
    assert whole.duplicate_ids == ("r2",)

    mixed = cursor.inspect(frame(("r1", "d", T1), ("r3", "d", T1), ("r4", "d", T2)))
    assert not mixed.duplicate
    assert mixed.duplicate_ids == ("r1",)

    assert not cursor.inspect(frame(("r9", "d", T1))).duplicate  # same instant, new id
    cursor.advance(cursor.inspect(frame(("r4", "d", T2))).stamps)
    assert not cursor.inspect(frame(("r1", "d", T1))).duplicate  # only the cursor's instant


@pytest.mark.parametrize(
    "text",
    ["pong", "{}", "[]", "[1]", '[{"body": 5}]', '[{"body": {"inserted_at": "soon"}}]', "[{"],
)
def test_cursor_ignores_frames_without_stamps(text: str) -> None:
    cursor = ReplayCursor()
    info = cursor.inspect(text)
    assert info.key is None
    assert info.stamps == ()
    assert not info.duplicate
    cursor.advance(info.stamps)
    assert cursor.after is None


def test_naive_inserted_at_is_read_as_utc() -> None:
    cursor = ReplayCursor()
    cursor.advance(cursor.inspect(frame(("r1", "d", "2024-06-06T13:49:42"))).stamps)
    assert cursor.after == "2024-06-06T13:49:42"
    assert cursor.inspect(frame(("r1", "d", "2024-06-06T13:49:42+00:00"))).duplicate


# --- envelopes ------------------------------------------------------------------------------


def test_envelope_wraps_the_frame_unchanged() -> None:
    text = frame(("r1", "d", T1))
    envelope = build_envelope("element-stream", text, 4, {"duplicates": ["r0"]})
    assert envelope.source == KIND == "element"
    assert envelope.payload == text
    assert envelope.meta == {"connection": 4, "duplicates": ["r0"]}
    assert build_envelope("s", text, 1).meta == {"connection": 1}


def test_binary_frames_are_base64() -> None:
    envelope = build_envelope("s", b"\x01\x02", 1)
    assert envelope.meta == {"connection": 1, "encoding": "base64"}
    assert base64.b64decode(envelope.payload) == b"\x01\x02"
