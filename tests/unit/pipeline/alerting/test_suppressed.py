"""Every suppressed notification is logged once with why (silence id, inhibiting alert, mute
window, rate limit), told to the listener once, and still counted at every decision."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest

from pipeline.alerting.silences import Silence, StaticSilences
from pipeline.models import AlertTransition

MINUTE = 60_000
HOUR = 60 * MINUTE
Alert = Callable[..., AlertTransition]
Harness = Callable[..., Any]


def _lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "pipeline.alerting.suppressed" and r.levelno == logging.INFO
    ]


def _listen(h: Any) -> list[tuple[str, list[str], str]]:
    heard: list[tuple[str, list[str], str]] = []
    h.dispatcher.suppressions.listener = lambda channel, alerts, why: heard.append(
        (channel, [a.entity for a in alerts], why)
    )
    return heard


def test_silenced_alert_is_logged_once_with_the_silence_id(
    harness: Harness, make_alert: Alert, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    silence = Silence("5f0c" + "0" * 28, ("entity=mp-1",), 0, HOUR, "maintenance", "ops", 0, 0)
    h = harness(silences=StaticSilences([silence]))
    heard = _listen(h)
    h.fire(make_alert("mp-1", ts_ms=MINUTE), now_ms=MINUTE)
    for minute in range(2, 12):  # re-checked every group_interval while silenced
        h.at(minute * MINUTE)
    assert h.stats.channel("console")["silenced"] >= 2  # counted at every decision
    lines = _lines(caplog)
    assert len(lines) == 1, lines
    assert f"why=silence {silence.id}" in lines[0]
    assert "channel=console" in lines[0] and "entity=mp-1" in lines[0]
    assert heard == [("console", ["mp-1"], f"silence {silence.id}")]


def test_inhibited_alert_names_the_inhibiting_alert(
    harness: Harness, make_alert: Alert, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    h = harness(
        "inhibit_rules:\n  - source: [severity=critical]\n    target: [severity=warning]\n"
        "    equal: [entity]\n"
    )
    heard = _listen(h)
    crit = make_alert("mp-1", ts_ms=0, rule="power-critical", severity="critical")
    h.fire(crit, now_ms=0)
    h.fire(make_alert("mp-1", ts_ms=10_000, rule="power-high"), now_ms=10_000)
    h.at(70_000)
    h.at(130_000)
    assert heard == [("console", ["mp-1"], f"inhibited by alert {crit.fingerprint}")]
    assert len(_lines(caplog)) == 1


def test_rate_limited_notifications_say_so(
    harness: Harness, make_alert: Alert, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    h = harness("channels:\n  pager:\n    url_env: P\n    rate_limit: {max: 1, per: 1h}\n")
    heard = _listen(h)
    for i in range(3):
        h.fire(make_alert(f"mp-{i}", ts_ms=i, channels=("pager",)), now_ms=1_000 + i)
    assert heard == [
        ("pager", ["mp-1"], "rate limit (firing)"),
        ("pager", ["mp-2"], "rate limit (firing)"),
    ]
    assert h.stats.channel("pager")["suppressed"] == 2
    assert len(_lines(caplog)) == 2


def test_muted_group_names_the_mute_window(
    harness: Harness, make_alert: Alert, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    h = harness(
        "defaults:\n  mute_windows: [nights]\nmute_windows:\n  nights:\n"
        "    time_zone: UTC\n    hours: ['01:00-04:00']\n"
    )
    heard = _listen(h)
    at = int(datetime(2024, 5, 1, 1, 30, tzinfo=UTC).timestamp() * 1000)
    assert h.fire(make_alert(ts_ms=at), now_ms=at) == []
    assert heard == [("console", ["mp-1"], "mute window nights")]
    assert "why=mute window nights" in _lines(caplog)[0]
