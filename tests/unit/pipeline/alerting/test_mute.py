"""Mute windows in an IANA zone, across daylight-saving changes."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from pipeline.alerting.mute import MuteWindow, parse_days, parse_hours


def utc_ms(*parts: int) -> int:
    return int(datetime(*parts, tzinfo=UTC).timestamp() * 1000)  # type: ignore[arg-type,misc]


NIGHT = MuteWindow.build("night", "Europe/Zurich", [], ["01:00-04:00"])


def test_spring_forward_night_is_two_hours_long() -> None:
    # 2024-03-31 01:00 CET = 00:00 UTC; 04:00 CEST = 02:00 UTC.
    assert not NIGHT.active(utc_ms(2024, 3, 30, 23, 59))
    assert NIGHT.active(utc_ms(2024, 3, 31, 0, 0))
    assert NIGHT.active(utc_ms(2024, 3, 31, 1, 59))
    assert not NIGHT.active(utc_ms(2024, 3, 31, 2, 0))
    assert NIGHT.end_after(utc_ms(2024, 3, 31, 0, 30)) == utc_ms(2024, 3, 31, 2, 0)


def test_fall_back_night_is_four_hours_long() -> None:
    # 2024-10-27 01:00 CEST = 23:00 UTC (26th); 04:00 CET = 03:00 UTC.
    assert not NIGHT.active(utc_ms(2024, 10, 26, 22, 59))
    assert NIGHT.active(utc_ms(2024, 10, 26, 23, 0))
    assert NIGHT.active(utc_ms(2024, 10, 27, 0, 30))  # 02:30 CEST, first pass
    assert NIGHT.active(utc_ms(2024, 10, 27, 1, 30))  # 02:30 CET, second pass
    assert NIGHT.active(utc_ms(2024, 10, 27, 2, 59))
    assert not NIGHT.active(utc_ms(2024, 10, 27, 3, 0))
    assert NIGHT.end_after(utc_ms(2024, 10, 26, 23, 0)) == utc_ms(2024, 10, 27, 3, 0)


def test_range_across_midnight_belongs_to_its_start_day() -> None:
    window = MuteWindow.build("w", "UTC", ["fri"], ["22:00-06:00"])
    assert window.active(utc_ms(2024, 6, 7, 23, 0))  # Friday
    assert window.active(utc_ms(2024, 6, 8, 5, 59))  # Saturday morning, still Friday's range
    assert not window.active(utc_ms(2024, 6, 8, 22, 0))  # Saturday night
    assert window.end_after(utc_ms(2024, 6, 7, 23, 0)) == utc_ms(2024, 6, 8, 6, 0)


def test_touching_ranges_are_followed_to_the_real_end() -> None:
    window = MuteWindow.build("weekend", "UTC", ["sat-sun"], [])
    # Saturday 10:00 -> Monday 00:00.
    assert window.end_after(utc_ms(2024, 6, 8, 10, 0)) == utc_ms(2024, 6, 10, 0, 0)
    assert window.end_after(utc_ms(2024, 6, 10, 10, 0)) is None


def test_always_muted_is_checked_again_a_day_later() -> None:
    window = MuteWindow.build("always", "UTC", [], [])
    assert window.end_after(0) == 24 * 3_600_000


def test_days_and_hours_parsing() -> None:
    assert parse_days(["mon-wed", "Sunday"]) == {0, 1, 2, 6}
    assert parse_days(["sat-mon"]) == {5, 6, 0}
    assert parse_hours("00:00-24:00") == (0, 1440)
    assert parse_hours("22:30-01:15") == (1350, 1515)
    with pytest.raises(ValueError, match="not a day"):
        parse_days(["someday"])
    with pytest.raises(ValueError, match="HH:MM-HH:MM"):
        parse_hours("9-17")
    with pytest.raises(ValueError, match="HH:MM-HH:MM"):
        parse_hours("00:00-24:30")
    with pytest.raises(ValueError, match="empty"):
        parse_hours("10:00-10:00")
