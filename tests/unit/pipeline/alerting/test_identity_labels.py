"""Routing matchers, silences and grouping see identity labels, never annotations (issue 14):
an alert's annotations (a reason, a title) must not make it match, nor split a group."""

from __future__ import annotations

from pipeline.alerting.matchers import match_labels, matches_all, parse_matcher
from pipeline.models import AlertTransition


def alert(**annotations: str) -> AlertTransition:
    return AlertTransition(
        fingerprint="a" * 16,
        rule="device-offline",
        state="firing",
        entity="3",
        source="valtronics",
        stream="v-1",
        metric="status",
        value="offline",
        severity="critical",
        ts_ms=1,
        labels={"team": "ops"},
        annotations=annotations,
    )


def test_matchers_do_not_see_annotations() -> None:
    lost = alert(reason="Connection lost")

    assert "reason" not in match_labels(lost)
    assert not matches_all([parse_matcher('reason="Connection lost"')], match_labels(lost))
    assert matches_all([parse_matcher("team=ops")], match_labels(lost))


def test_annotations_do_not_change_what_grouping_sees() -> None:
    assert match_labels(alert(reason="Connection lost")) == match_labels(alert(reason="Back"))
