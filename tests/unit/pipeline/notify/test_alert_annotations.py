"""Annotations of an alert (issue 14) reach notification templates and the "why" line,
never its labels."""

from __future__ import annotations

from pipeline.alerting.templates import alert_view, explain
from pipeline.models import AlertTransition


def alert(**annotations: str) -> AlertTransition:
    return AlertTransition(
        fingerprint="f" * 16,
        rule="device-offline",
        state="firing",
        entity="3",
        source="valtronics",
        stream="v-1",
        metric="status",
        value="offline",
        severity="warning",
        ts_ms=1_764_000_000_000,
        labels={"team": "ops"},
        annotations=annotations,
    )


def test_templates_see_the_record_annotations_apart_from_labels() -> None:
    view = alert_view(alert(reason="Connection lost"))

    assert view["labels"] == {"team": "ops"}
    assert view["annotations"]["reason"] == "Connection lost"


def test_the_why_line_ends_with_the_annotations() -> None:
    why = explain(alert(reason="Connection lost", title="x" * 100))

    assert why["text"] == (
        "Rule device-offline fired: status of 3 is 'offline' "
        f"[reason: Connection lost; title: {'x' * 77}...]."
    )


def test_without_annotations_the_why_line_is_unchanged() -> None:
    assert explain(alert())["text"] == "Rule device-offline fired: status of 3 is 'offline'."
