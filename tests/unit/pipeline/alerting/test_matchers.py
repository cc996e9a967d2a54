"""Matchers: one syntax for routes, silences and inhibition."""

from __future__ import annotations

import pytest

from pipeline.alerting.matchers import MatcherError, match_labels, matches_all, parse_matcher
from pipeline.models import AlertTransition

ALERT = AlertTransition(
    fingerprint="f",
    rule="power-high",
    state="firing",
    entity="mp-12",
    source="aliunid",
    stream="s",
    metric="sys.kW",
    value=1.0,
    severity="critical",
    ts_ms=0,
    labels={"team": "energy", "severity": "label-loses"},
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("severity=critical", True),
        ("severity = critical", True),
        ("severity!=critical", False),
        ("entity=~mp-1[0-9]", True),
        ("entity=~mp-1", False),  # regexes match the whole value
        ("entity!~mp-1", True),
        ("team=energy", True),
        ("missing=", True),  # an absent label is the empty string
        ("missing!=", False),
        ("rule=~power-.*", True),
    ],
)
def test_matching(text: str, expected: bool) -> None:
    assert parse_matcher(text).matches(match_labels(ALERT)) is expected


def test_attributes_win_over_labels_of_the_same_name() -> None:
    assert match_labels(ALERT)["severity"] == "critical"


def test_all_must_match_and_empty_matches_everything() -> None:
    labels = match_labels(ALERT)
    assert matches_all([], labels)
    assert not matches_all([parse_matcher("team=energy"), parse_matcher("rule=x")], labels)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("=x", "does not start with a label name"),
        ("novalue", "has no operator"),
        ("a=~(", "invalid regex"),
        ("a=~" + "x" * 300, "longer than 256"),
    ],
)
def test_errors_say_what_is_wrong(text: str, message: str) -> None:
    with pytest.raises(MatcherError, match=message):
        parse_matcher(text)
