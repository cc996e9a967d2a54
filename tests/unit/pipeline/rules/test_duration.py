"""The one Duration type: accepted forms, refusals that list the forms, round trip."""

from __future__ import annotations

from datetime import timedelta

import pytest
from pydantic import TypeAdapter, ValidationError

from pipeline.rules.duration import (
    DURATION_FORMS,
    Duration,
    format_duration,
    parse_duration,
)

ADAPTER: TypeAdapter[timedelta] = TypeAdapter(Duration)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("30s", timedelta(seconds=30)),
        ("5m", timedelta(minutes=5)),
        ("1h", timedelta(hours=1)),
        ("1h30m", timedelta(hours=1, minutes=30)),
        ("500ms", timedelta(milliseconds=500)),
        ("2d", timedelta(days=2)),
        ("0s", timedelta(0)),
        ("1d2h3m4s5ms", timedelta(days=1, hours=2, minutes=3, seconds=4, milliseconds=5)),
        ("90s", timedelta(seconds=90)),
    ],
)
def test_accepted_forms(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected
    assert ADAPTER.validate_python(text) == expected


@pytest.mark.parametrize(
    "text", ["5 minutes", "", "30", "1m30", "1s1h", "-5s", "1.5s", "5M", " 5s", "5s ", "ms", "1hh"]
)
def test_refusals_list_the_accepted_forms(text: str) -> None:
    with pytest.raises(ValueError, match="is not a duration") as caught:
        parse_duration(text)

    assert str(caught.value) == f"{text!r} is not a duration; use forms like {DURATION_FORMS}"


@pytest.mark.parametrize("value", ["3651d", "9" * 40 + "d", "9" * 5000 + "s"])
def test_absurd_lengths_are_refused(value: str) -> None:
    with pytest.raises(ValidationError) as caught:
        ADAPTER.validate_python(value)

    assert caught.value.errors()[0]["type"] == "duration_too_long"


@pytest.mark.parametrize("value", [30, 1.5, True, None, ["5s"]])
def test_non_strings_are_not_durations(value: object) -> None:
    with pytest.raises(ValidationError) as caught:
        ADAPTER.validate_python(value)

    error = caught.value.errors()[0]
    assert error["type"] == "duration"
    assert DURATION_FORMS in error["msg"]


@pytest.mark.parametrize("text", ["30s", "5m", "1h", "1h30m", "500ms", "2d", "0s", "1d2h3m4s5ms"])
def test_format_round_trips(text: str) -> None:
    assert format_duration(parse_duration(text)) == text
    assert ADAPTER.dump_python(parse_duration(text), mode="json") == text
