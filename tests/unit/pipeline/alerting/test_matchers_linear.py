"""Issue 16, defect 5: every user regex (routes, silences, inhibitions, mute windows) matches
in linear time. Before the fix ``entity=~([a-z0-9]+-?)+`` against 26 characters took 10 s,
doubling with each character."""

from __future__ import annotations

import time

import pytest

from pipeline.alerting.matchers import MatcherError, parse_matcher

pytestmark = pytest.mark.timeout(30)


@pytest.mark.parametrize("matcher", ["entity=~([a-z0-9]+-?)+", "entity=~(a|aa)+", "entity!~(a*)*b"])
def test_catastrophic_patterns_match_hostile_entities_at_once(matcher: str) -> None:
    parsed = parse_matcher(matcher)
    hostile = "a" * 5_000 + "!"
    started = time.monotonic()
    result = parsed.matches({"entity": hostile})
    assert time.monotonic() - started < 1.0  # Python's re: centuries
    assert result is matcher.startswith("entity!~")


def test_whole_value_semantics_are_kept() -> None:
    m = parse_matcher("entity=~mp-(1|2)")
    assert m.matches({"entity": "mp-1"})
    assert not m.matches({"entity": "mp-12"})
    assert not m.matches({"entity": "xmp-1"})
    assert parse_matcher("team!~en.*").matches({})


@pytest.mark.parametrize(
    ("pattern", "construct"),
    [("(a)\\1", "backreferences"), ("a(?=b)", "lookarounds"), ("(?<!x)y", "lookarounds")],
)
def test_unsupported_constructs_get_a_clear_error(pattern: str, construct: str) -> None:
    with pytest.raises(MatcherError) as caught:
        parse_matcher(f"entity=~{pattern}")
    message = str(caught.value)
    assert "linear-time regex engine (RE2) does not support" in message
    assert construct in message


def test_an_invalid_regex_is_still_named_invalid() -> None:
    with pytest.raises(MatcherError, match="invalid regex"):
        parse_matcher("entity=~(unclosed")
