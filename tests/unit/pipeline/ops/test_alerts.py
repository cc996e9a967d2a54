"""Alerts as operators see them, from rule engine state entries."""

from __future__ import annotations

from pipeline.alerting.matchers import parse_matcher
from pipeline.models import AlertTransition
from pipeline.ops.alerts import alert_view, select_alerts
from pipeline.rules.state import AbsenceState, AlertState, Phase, Subject

SUBJECT = Subject("mp-1", "aliunid", "s1", "sys.kW", "kW", {"phase": "R"})


def _firing(fingerprint: str) -> AlertTransition:
    return AlertTransition(
        fingerprint=fingerprint,
        rule="power-high",
        state="firing",
        entity="mp-1",
        source="aliunid",
        stream="s1",
        metric="sys.kW",
        value=55.0,
        severity="critical",
        ts_ms=2_000,
        summary="mp-1 draws 55 kW",
        labels={"phase": "R", "team": "energy"},
    )


def test_firing_entry_takes_severity_and_annotations_from_its_transition() -> None:
    entry = AlertState("power-high", 1, SUBJECT, Phase("firing", 2_000, 55.0))
    view = alert_view("fp1", entry, _firing("fp1"))
    assert view is not None
    assert (view.state, view.since_ms, view.value, view.severity) == (
        "firing",
        2_000,
        55.0,
        "critical",
    )
    assert view.annotations == {"summary": "mp-1 draws 55 kW"}
    assert view.labels["team"] == "energy" and view.labels["alertname"] == "power-high"
    assert view.labels["phase"] == "R" and view.labels["metric"] == "sys.kW"


def test_pending_entry_takes_severity_from_the_rules() -> None:
    entry = AlertState("power-high", 1, SUBJECT, Phase("pending", 1_000, 44.0))
    view = alert_view("fp1", entry, None, {"power-high": "warning"}.get)
    assert view is not None
    assert (view.state, view.severity, view.annotations) == ("pending", "warning", {})


def test_entries_without_an_alert_in_progress_are_not_alerts() -> None:
    assert alert_view("fp", AlertState("power-high", 1, SUBJECT)) is None
    assert alert_view("fp", AbsenceState("gone", 1, SUBJECT, 1_000, 3.0)) is None
    absent = alert_view("fp", AbsenceState("gone", 1, SUBJECT, 1_000, 3.0, firing_since_ms=9_000))
    assert absent is not None and (absent.state, absent.since_ms) == ("firing", 9_000)


def test_select_filters_by_state_and_matchers_and_orders_by_since() -> None:
    entries = [
        ("a", AlertState("power-high", 1, SUBJECT, Phase("firing", 3_000, 50.0))),
        ("b", AlertState("power-high", 1, SUBJECT, Phase("pending", 1_000, 45.0))),
        ("c", AlertState("other", 1, SUBJECT, Phase("firing", 2_000, 1.0))),
        ("d", AlertState("other", 1, SUBJECT)),
    ]
    assert [v.fingerprint for v in select_alerts(entries, {})] == ["b", "c", "a"]
    assert [v.fingerprint for v in select_alerts(entries, {}, state="firing")] == ["c", "a"]
    only = select_alerts(entries, {}, matchers=[parse_matcher("rule=~power.*")])
    assert [v.fingerprint for v in only] == ["b", "a"]
    pending = select_alerts(entries, {}, matchers=[parse_matcher("state=pending")])
    assert [v.fingerprint for v in pending] == ["b"]
