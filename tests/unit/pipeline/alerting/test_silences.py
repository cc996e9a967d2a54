"""Silences: add, list, expire through the JSON file; the worker's view reloads on change."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import pytest

from pipeline.alerting.matchers import match_labels
from pipeline.alerting.silences import (
    RETENTION_MS,
    SilenceError,
    SilenceFileStore,
    add_silence,
    expire_silence,
    list_silences,
)
from pipeline.models import AlertTransition

HOUR = 3_600_000

ALERT = AlertTransition(
    fingerprint="f",
    rule="charger-offline",
    state="firing",
    entity="NOR_01333/0",
    source="nobil",
    stream="s",
    metric="status",
    value="offline",
    severity="warning",
    ts_ms=0,
)


def _add(path: Path, *matchers: str, start: int = 0, end: int = HOUR, now: int = 0) -> str:
    return add_silence(
        path,
        list(matchers),
        starts_at_ms=start,
        ends_at_ms=end,
        comment="maintenance",
        author="ops",
        now_ms=now,
    ).id


def test_add_list_expire(tmp_path: Path) -> None:
    path = tmp_path / "state" / "silences.json"  # the folder is created
    first = _add(path, "rule=charger-offline", "entity=~NOR_.*")
    second = _add(path, "team=grid", start=2 * HOUR, end=3 * HOUR)
    listed = list_silences(path, now_ms=HOUR // 2)
    assert [(s.id, state) for s, state in listed] == [(first, "active"), (second, "pending")]
    assert listed[0][0].matchers == ("rule=charger-offline", "entity=~NOR_.*")
    assert (listed[0][0].comment, listed[0][0].author) == ("maintenance", "ops")

    expired = expire_silence(path, first[:4], now_ms=HOUR // 2)
    assert expired.ends_at_ms == HOUR // 2
    assert [s.id for s, _ in list_silences(path, now_ms=HOUR // 2)] == [second]
    assert [state for _, state in list_silences(path, now_ms=HOUR // 2, include_expired=True)] == [
        "expired",
        "pending",
    ]
    # The file is plain, readable JSON.
    assert json.loads(path.read_text())["version"] == 1
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".silences.json.")]


def test_add_reports_every_problem(tmp_path: Path) -> None:
    with pytest.raises(SilenceError) as info:
        add_silence(
            tmp_path / "s.json",
            ["novalue", "a=~("],
            starts_at_ms=10,
            ends_at_ms=5,
            comment=" ",
            author="",
            now_ms=0,
        )
    assert str(info.value).splitlines() == [
        "'novalue' has no operator; use forms like label=value, label!=value, label=~regex, label!~regex",
        "'a=~(': invalid regex: missing ), unterminated subpattern at position 0",
        "the end must be after the start",
        "a comment is required: say why the alerts are silenced",
        "an author is required",
    ]
    with pytest.raises(SilenceError, match="give at least one matcher"):
        add_silence(
            tmp_path / "s.json", [], starts_at_ms=0, ends_at_ms=9, comment="c", author="a", now_ms=0
        )
    with pytest.raises(SilenceError, match="in the past"):
        add_silence(
            tmp_path / "s.json",
            ["a=b"],
            starts_at_ms=0,
            ends_at_ms=9,
            comment="c",
            author="a",
            now_ms=10,
        )


def test_expire_needs_one_unique_live_silence(tmp_path: Path) -> None:
    path = tmp_path / "s.json"
    sid = _add(path, "a=b")
    with pytest.raises(SilenceError, match="too short"):
        expire_silence(path, "ab", now_ms=1)
    with pytest.raises(SilenceError, match="no silence has an id starting with 'ffffffff'"):
        expire_silence(path, "ffffffff" if not sid.startswith("ffffffff") else "00000000", now_ms=1)
    expire_silence(path, sid, now_ms=1)
    with pytest.raises(SilenceError, match="already expired"):
        expire_silence(path, sid, now_ms=2)


def test_expired_silences_are_dropped_after_retention(tmp_path: Path) -> None:
    path = tmp_path / "s.json"
    old = _add(path, "a=b", end=HOUR)
    _add(path, "c=d", end=HOUR + RETENTION_MS + 10, now=HOUR + RETENTION_MS + 1)
    ids = [s.id for s, _ in list_silences(path, now_ms=0, include_expired=True)]
    assert old not in ids and len(ids) == 1


def test_store_reloads_when_the_file_changes(tmp_path: Path) -> None:
    path = tmp_path / "s.json"
    store = SilenceFileStore(path)
    assert store.silences(0) == []  # no file yet
    _add(path, "entity=~NOR_.*")
    assert store.silences(500) == []  # checked at most once a second of the caller's time
    active = store.silences(1_000)
    assert len(active) == 1 and active[0].applies(match_labels(ALERT), 1_000)
    assert not active[0].applies(match_labels(ALERT), HOUR)


def test_a_broken_file_keeps_the_last_good_silences(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "s.json"
    _add(path, "entity=x")
    store = SilenceFileStore(path)
    assert len(store.silences(0)) == 1
    path.write_text("{not json", encoding="utf-8")
    os.utime(path, ns=(1, 1))  # a different modification time even on coarse clocks
    with caplog.at_level(logging.WARNING):
        assert len(store.silences(5_000)) == 1
    assert "silences file not loaded, keeping the previous silences" in caplog.text
    with pytest.raises(SilenceError, match="not a silences file"):
        list_silences(path, now_ms=0)
