"""Recurring mute windows: days of the week and local time ranges in an IANA time zone.

A window is active at an instant when, in its time zone, the local day is one of ``days``
and the local time falls in one of ``hours`` (``start <= t < end``). A range whose end is not
after its start crosses midnight and belongs to the day it starts on (``fri 22:00-06:00``
covers Friday 22:00 to Saturday 06:00). ``24:00`` means the end of the day.

Times are wall-clock times, resolved through :mod:`zoneinfo` on the day they happen, so a
window keeps its local hours across daylight-saving changes (``01:00-04:00`` in
Europe/Zurich lasts 2 h on the spring-forward night and 4 h on the fall-back night). A range
edge inside a skipped hour moves forward by the skipped amount (02:30 becomes 03:30); an edge
inside a repeated hour is its first occurrence.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

__all__ = ["DAY_NAMES", "HOURS_PATTERN", "MuteWindow", "parse_days", "parse_hours"]

DAY_NAMES = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
"""Accepted day names (full names such as ``monday`` are accepted too)."""

HOURS_PATTERN = r"^([01]\d|2[0-3]):([0-5]\d)-([01]\d|2[0-3]|24):([0-5]\d)$"
"""``HH:MM-HH:MM`` (``24:00`` allowed as an end)."""

_HOURS_RE = re.compile(HOURS_PATTERN)
_FULL_NAMES = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
_DAY_MINUTES = 24 * 60
_MAX_CHAINED = 16


def _day_index(text: str) -> int:
    name = text.strip().lower()
    if name in DAY_NAMES:
        return DAY_NAMES.index(name)
    if name in _FULL_NAMES:
        return _FULL_NAMES.index(name)
    raise ValueError(f"{text!r} is not a day; use mon, tue, wed, thu, fri, sat, sun")


def parse_days(items: Iterable[str]) -> frozenset[int]:
    """``["mon-fri", "sun"]`` -> weekday numbers (Monday is 0). Ranges may wrap (``sat-mon``).

    Raises:
        ValueError: an unknown day name.
    """
    days: set[int] = set()
    for item in items:
        first, sep, last = item.partition("-")
        start = _day_index(first)
        end = _day_index(last) if sep else start
        day = start
        while True:
            days.add(day)
            if day == end:
                break
            day = (day + 1) % 7
    return frozenset(days)


def parse_hours(text: str) -> tuple[int, int]:
    """``"22:00-06:00"`` -> ``(1320, 1800)``: start and end in minutes after the start day's
    midnight; an end not after the start is moved to the next day.

    Raises:
        ValueError: not ``HH:MM-HH:MM``, or start equals end.
    """
    match = _HOURS_RE.match(text.strip())
    if match is None or (match.group(3) == "24" and match.group(4) != "00"):
        raise ValueError(f"{text!r} is not a time range; write HH:MM-HH:MM such as 22:00-06:00")
    start = int(match.group(1)) * 60 + int(match.group(2))
    end = int(match.group(3)) * 60 + int(match.group(4))
    if end == start:
        raise ValueError(f"{text!r} is empty; start and end must differ")
    if end <= start:
        end += _DAY_MINUTES
    return start, end


@dataclass(frozen=True)
class MuteWindow:
    """A compiled mute window.

    Attributes:
        name: its name in ``channels.yaml``.
        time_zone: the IANA zone its days and hours are in.
        days: weekday numbers (Monday 0); all seven when the config lists none.
        ranges: ``(start, end)`` minutes after the local midnight of the day they start;
            one whole-day range when the config lists none.
    """

    name: str
    time_zone: ZoneInfo
    days: frozenset[int]
    ranges: tuple[tuple[int, int], ...]

    @classmethod
    def build(
        cls, name: str, time_zone: str, days: Iterable[str], hours: Iterable[str]
    ) -> MuteWindow:
        """Compile from config values.

        Raises:
            ValueError: unknown day, bad range; zoneinfo errors for an unknown zone.
        """
        parsed_days = parse_days(days) or frozenset(range(7))
        ranges = tuple(parse_hours(h) for h in hours) or ((0, _DAY_MINUTES),)
        return cls(name, ZoneInfo(time_zone), parsed_days, ranges)

    def _interval_containing(self, t_ms: int) -> int | None:
        """End (epoch ms) of the range occurrence containing ``t_ms``, or None."""
        local = datetime.fromtimestamp(t_ms / 1000, self.time_zone)
        today = local.date()
        best: int | None = None
        for day in (today - timedelta(days=1), today):
            if day.weekday() not in self.days:
                continue
            for start, end in self.ranges:
                start_ms = self._epoch_ms(day, start)
                end_ms = self._epoch_ms(day, end)
                if start_ms <= t_ms < end_ms and (best is None or end_ms > best):
                    best = end_ms
        return best

    def _epoch_ms(self, day: date, minutes: int) -> int:
        naive = datetime(day.year, day.month, day.day) + timedelta(minutes=minutes)
        aware = naive.replace(tzinfo=self.time_zone)
        # A wall time inside a skipped hour: fold=0 uses the offset before the jump, which
        # moves it forward by the skipped amount (see the module docstring).
        return int(aware.timestamp() * 1000)

    def active(self, t_ms: int) -> bool:
        """Whether the window is active at ``t_ms``."""
        return self._interval_containing(t_ms) is not None

    def end_after(self, t_ms: int) -> int | None:
        """The first instant at or after ``t_ms`` when the window is not active, following
        ranges that touch or overlap; ``None`` when it is not active at ``t_ms``. A window
        that never ends (every day, all day) returns ``t_ms`` plus one day, so the caller
        checks again then."""
        end = self._interval_containing(t_ms)
        if end is None:
            return None
        for _ in range(_MAX_CHAINED):
            following = self._interval_containing(end)
            if following is None:
                return end
            end = following
        return t_ms + _DAY_MINUTES * 60_000
