"""Label matchers shared by routes, silences and inhibition rules.

One syntax everywhere (Alertmanager's)::

    severity=critical        equal
    team!=energy             not equal
    entity=~mp-(1|2)         regex, matched against the whole value
    rule!~test-.*            regex does not match

A matcher looks at an alert's *match labels*: its labels plus the attributes ``rule``,
``severity``, ``entity``, ``source``, ``stream`` and ``metric`` (attributes win over a label of
the same name, so ``severity=critical`` always means the rule's severity). A label the alert
does not have matches as the empty string, so ``team=`` selects alerts without a team and
``team!=`` alerts with one.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Literal

from pipeline.models import AlertTransition

__all__ = [
    "MATCHER_FORMS",
    "Matcher",
    "MatcherError",
    "match_labels",
    "matches_all",
    "parse_matcher",
]

MATCHER_FORMS = "label=value, label!=value, label=~regex, label!~regex"
"""Accepted matcher forms, quoted in every matcher error."""

MAX_REGEX_LENGTH = 256
"""Longest regex accepted in a matcher."""

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.\-]*")
_ATTRIBUTES = ("rule", "severity", "entity", "source", "stream", "metric")

Op = Literal["=", "!=", "=~", "!~"]


class MatcherError(ValueError):
    """A matcher string is not valid; the message says why and lists the accepted forms."""


@dataclass(frozen=True)
class Matcher:
    """One parsed matcher. ``text`` is the matcher as written (shown in listings)."""

    name: str
    op: Op
    value: str
    text: str
    _regex: re.Pattern[str] | None = field(default=None, repr=False, compare=False)

    def matches(self, labels: Mapping[str, str]) -> bool:
        """Whether ``labels`` (match labels, see the module docstring) satisfy this matcher."""
        actual = labels.get(self.name, "")
        if self.op == "=":
            return actual == self.value
        if self.op == "!=":
            return actual != self.value
        assert self._regex is not None
        found = self._regex.fullmatch(actual) is not None
        return found if self.op == "=~" else not found


def parse_matcher(text: str) -> Matcher:
    """Parse ``label=value``, ``label!=value``, ``label=~regex`` or ``label!~regex``.

    Surrounding spaces are ignored; the value is everything after the operator, taken as is
    (quotes are not removed, so write ``team=energy``, not ``team="energy"``).

    Raises:
        MatcherError: no label name, no operator, or an invalid or too long regex.
    """
    stripped = text.strip()
    name_match = _NAME.match(stripped)
    if name_match is None:
        raise MatcherError(
            f"{text!r} does not start with a label name; use forms like {MATCHER_FORMS}"
        )
    name = name_match.group()
    rest = stripped[name_match.end() :].lstrip()
    op: Op
    for candidate in ("=~", "!~", "!=", "="):
        if rest.startswith(candidate):
            op = candidate
            break
    else:
        raise MatcherError(f"{text!r} has no operator; use forms like {MATCHER_FORMS}")
    value = rest[len(op) :].strip()
    regex = None
    if op in ("=~", "!~"):
        if len(value) > MAX_REGEX_LENGTH:
            raise MatcherError(f"{text!r}: regex is longer than {MAX_REGEX_LENGTH} characters")
        try:
            regex = re.compile(value)
        except re.error as exc:
            raise MatcherError(f"{text!r}: invalid regex: {exc}") from None
    return Matcher(name, op, value, stripped, regex)


def match_labels(alert: AlertTransition) -> dict[str, str]:
    """The labels matchers see for ``alert``: its labels plus its identifying attributes."""
    labels = dict(alert.labels)
    for attribute in _ATTRIBUTES:
        labels[attribute] = str(getattr(alert, attribute))
    return labels


def matches_all(matchers: Iterable[Matcher], labels: Mapping[str, str]) -> bool:
    """Whether every matcher matches (an empty list matches everything)."""
    return all(m.matches(labels) for m in matchers)
