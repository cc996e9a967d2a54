"""The shared decoding step (issue 14): binary frames of every family, limits, control frames,
non-finite numbers, and no frame silently dropped."""

from __future__ import annotations

import base64
import math
from pathlib import Path
from typing import Any

import pytest

from pipeline.errors import BadInputError
from pipeline.models import Measurement, RawEnvelope
from pipeline.normalize import FAMILIES, normalize_envelope, normalize_frame
from pipeline.normalize.common import ControlFrame, Family
from pipeline.normalize.decode import MAX_FRAME_CHARS, MAX_JSON_DEPTH, run

GOLDEN = Path(__file__).parents[3] / "data" / "upstream"
RECEIVED_MS = 1_700_000_000_000


def envelope(source: str, text: str, **meta: Any) -> RawEnvelope:
    return RawEnvelope(source, f"{source}-1", RECEIVED_MS, text, meta)


def binary(source: str, text: str, **meta: Any) -> RawEnvelope:
    return envelope(source, base64.b64encode(text.encode()).decode(), encoding="base64", **meta)


GOLDEN_DATA = [
    ("aliunid", "data_extended.json"),
    ("nobil", "status_update_error.json"),
    ("element", "readings_replay_batch.json"),
    ("valtronics", "server_alert.json"),
    ("hemis", "new_data_points_in_header_ms.json"),
]


def test_every_family_is_covered() -> None:
    assert {family for family, _ in GOLDEN_DATA} == set(FAMILIES)


@pytest.mark.parametrize(("source", "name"), GOLDEN_DATA)
def test_a_binary_frame_of_every_family_decodes_like_its_text(source: str, name: str) -> None:
    """Issue 14: aliunid, Nobil and ELEMENT dead-lettered every binary frame."""
    text = (GOLDEN / source / name).read_text(encoding="utf-8").strip()

    as_text = normalize_envelope(envelope(source, text))
    as_binary = normalize_envelope(binary(source, text))

    assert as_text
    assert as_binary == as_text


@pytest.mark.parametrize(
    ("source", "text", "kind"),
    [
        ("element", "[]", "empty array"),
        ("element", "pong", "pong"),
        ("aliunid", '{"type": "structure", "id": "mp-1", "structure": {}}', "structure"),
        ("valtronics", '{"type": "pong"}', "pong"),
        ("valtronics", '{"type": "heartbeat"}', "heartbeat"),
        (
            "valtronics",
            '{"type": "subscription_confirmed", "channel": "x"}',
            "subscription_confirmed",
        ),
        (
            "valtronics",
            '{"type": "device_update", "device_id": 1, "updates": {}}',
            "device heartbeat",
        ),
        (
            "hemis",
            '{"type": "NEW_DATA", "timestamp": 1, "container": {"dataInfo": {'
            '"sourceTypeInfo": {"sourceGroup": "TMP"}, "sourceId": "s"}, "data": {"header": '
            '{"columns_mapping": {"VALUENB": 0}}, "data_points": []}}}',
            "no data points",
        ),
    ],
)
@pytest.mark.parametrize("as_binary", [False, True])
def test_frames_without_records_are_named_control_frames(
    source: str, text: str, kind: str, as_binary: bool
) -> None:
    """Issue 14: an ELEMENT ``[]`` gave no record and no dead letter, uncounted."""
    got = normalize_frame(binary(source, text) if as_binary else envelope(source, text))

    assert got.records == []
    assert got.control == kind


def test_a_nobil_frame_that_changes_nothing_is_a_control_frame() -> None:
    frame = (
        '{"type": "status:raw", "data": {"uuid": "NOR_1", "connector": 0, "status": 0, '
        '"error": 0, "timestamp": 1700000000000}}'
    )
    got = normalize_frame(envelope("nobil", frame, previous={"status": 0, "error": 0}))

    assert (got.records, got.control) == ([], "no change")


def fake(parse: Any) -> Family:
    return Family("fake", parse)


def test_an_empty_result_without_a_control_signal_is_a_dead_letter() -> None:
    with pytest.raises(BadInputError) as caught:
        run(fake(lambda envelope, document: []), envelope("fake", "{}"))

    assert caught.value.reason == (
        "fake frame: an object that yields no record and is no known control frame"
    )


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_numbers_are_refused_with_a_reason(bad: float) -> None:
    """Some JSON parsers accept NaN/Infinity, numeric strings hold them: never to the rules."""

    def parse(env: RawEnvelope, document: Any) -> list[Any]:
        return [Measurement("fake", "s", "e-1", "temp", bad, "", 1)]

    with pytest.raises(BadInputError) as caught:
        run(fake(parse), envelope("fake", "{}"))

    assert caught.value.reason == f"fake frame: 'temp' of 'e-1' is not a finite number ({bad!r})"


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity", "1e999"])
@pytest.mark.parametrize("source", sorted(FAMILIES))
def test_json_non_finite_literals_are_dead_letters_in_every_family(
    source: str, literal: str
) -> None:
    with pytest.raises(BadInputError) as caught:
        normalize_envelope(envelope(source, f'{{"type": "data", "value": {literal}}}'))

    assert caught.value.reason.startswith(f"{source} frame: not valid JSON (")


def test_control_signal_from_a_parser_is_counted_not_dropped() -> None:
    def parse(env: RawEnvelope, document: Any) -> list[Any]:
        raise ControlFrame("keepalive")

    assert run(fake(parse), envelope("fake", "{}")).control == "keepalive"


@pytest.mark.parametrize(
    ("text", "meta", "reason"),
    [
        ("e30=", {"encoding": "hex"}, "fake frame: unknown meta.encoding 'hex'; expected 'base64'"),
        ("%%%", {"encoding": "base64"}, "fake frame: payload is not valid base64"),
        ("//4=", {"encoding": "base64"}, "fake frame: binary frame is not UTF-8 text (byte 0)"),
        ("x" * (MAX_FRAME_CHARS + 1), {}, f"fake frame: longer than {MAX_FRAME_CHARS} characters"),
        (
            "[" * (MAX_JSON_DEPTH + 1) + "]" * (MAX_JSON_DEPTH + 1),
            {},
            f"fake frame: JSON nests deeper than {MAX_JSON_DEPTH} levels",
        ),
    ],
)
def test_decoding_limits(text: str, meta: dict[str, Any], reason: str) -> None:
    with pytest.raises(BadInputError) as caught:
        run(fake(lambda envelope, document: [document]), envelope("fake", text, **meta))

    assert caught.value.reason == reason


def test_nesting_at_the_limit_is_accepted() -> None:
    text = "[" * MAX_JSON_DEPTH + "]" * MAX_JSON_DEPTH

    got = run(fake(lambda envelope, document: [document]), envelope("fake", text))

    assert len(got.records) == 1
