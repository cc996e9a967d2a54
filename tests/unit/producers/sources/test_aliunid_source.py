"""aliunid URL building, frame keying and envelope building (no sockets)."""

from __future__ import annotations

import base64
from urllib.parse import parse_qsl, urlsplit
from uuid import UUID

import pytest

from producers.envelope import decode_envelope, encode_envelope, now_ms
from producers.sources.aliunid import KIND, build_envelope, build_url, frame_key

BASE = "wss://operator.aliunid.com/web/api/data-export/v1/businesses/b-1/measuring-points/live"
MP1 = "e113fba4-9a5d-4ae9-aba9-b92b5b7ddf34"
MP2 = "957f7b09-af00-4b59-b708-e06ae28f7bbb"


def test_url_has_the_api_key_only_when_no_measuring_points() -> None:
    assert build_url(BASE, "abc123") == f"{BASE}?apiKey=abc123"


def test_url_repeats_id_per_measuring_point_in_order() -> None:
    url = build_url(BASE, "abc123", [UUID(MP1), MP2])
    assert url == f"{BASE}?apiKey=abc123&id={MP1}&id={MP2}"


def test_url_percent_encodes_the_key() -> None:
    key = "k/y+z=1&id=evil #?"
    url = build_url(BASE, key, [MP1])
    assert url == f"{BASE}?apiKey=k%2Fy%2Bz%3D1%26id%3Devil%20%23%3F&id={MP1}"
    # A standard parser gets the exact key back and no injected id.
    assert parse_qsl(urlsplit(url).query) == [("apiKey", key), ("id", MP1)]


@pytest.mark.parametrize(
    ("frame", "key"),
    [
        ('{"type":"data","id":"957f7b09","data":{"sys":{"kW":0}}}', b"957f7b09"),
        (b'{"type":"structure","id":"mp-\xc3\xa9","structure":{}}', "mp-é".encode()),
        ('{"type":"data","id":42}', b"42"),
        ('{"type": "data", "data": {}}', None),
        ('{"id": null}', None),
        ('{"id": ""}', None),
        ('{"id": true}', None),
        ('{"id": {"nested": 1}}', None),
        ('["id", "x"]', None),
        ("not json at all", None),
        ('{"type":"data","id":"x",', None),
        ("", None),
    ],
)
def test_frame_key(frame: str | bytes, key: bytes | None) -> None:
    assert frame_key(frame) == key


def test_envelope_wraps_the_frame_unchanged() -> None:
    frame = '{ "type": "data",  "id": "x", "data": {"sys": {"kW": 1.50, "kWh+": 1e3}}, "é": "ü" }'
    before = now_ms()
    envelope = build_envelope("aliunid-demo", frame, 3)
    assert envelope.source == KIND == "aliunid"
    assert envelope.stream == "aliunid-demo"
    assert envelope.payload == frame
    assert envelope.meta == {"connection": 3}
    assert before <= envelope.received_at_ms <= now_ms()
    assert decode_envelope(encode_envelope(envelope)).payload == frame


def test_binary_frames_are_base64_with_encoding_meta() -> None:
    frame = b"\x00\xffbinary"
    envelope = build_envelope("s", frame, 1)
    assert envelope.meta == {"connection": 1, "encoding": "base64"}
    assert base64.b64decode(envelope.payload) == frame
