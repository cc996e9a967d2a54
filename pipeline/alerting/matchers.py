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

Regexes run against upstream-controlled values (entity names), so they are compiled with RE2
(``google-re2``), whose matching time is linear in the input: no pattern can backtrack
exponentially (``entity=~([a-z0-9]+-?)+`` took 10 s on 26 characters with Python's ``re``).
RE2 refuses backreferences (``\1``), lookarounds (``(?=``, ``(?!``, ``(?<=``) and possessive or
atomic groups; such a pattern gets an error that says so.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import re2  # type: ignore[import-untyped]

from pipeline.models import AlertTransition

__all__ = [
    "MATCHER_FORMS",
    "Matcher",
    "MatcherError",
    "compile_linear",
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
    _regex: Any = field(default=None, repr=False, compare=False)  # an RE2 pattern

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
        regex = compile_linear(value, text)
    return Matcher(name, op, value, stripped, regex)


_RE2_OPTIONS = re2.Options()
_RE2_OPTIONS.log_errors = False  # RE2 would print every refused pattern to stderr


def compile_linear(pattern: str, text: str | None = None) -> Any:
    """Compile a user regex with RE2 (linear-time matching; see the module docstring).

    Args:
        pattern: the regex.
        text: the matcher as written, for the error message (default: the pattern).

    Raises:
        MatcherError: the pattern is not a valid regex, or uses a construct RE2 does not
            support (the message names it and says why).
    """
    shown = pattern if text is None else text
    try:
        re.compile(pattern)  # compiling (not matching) is safe; gives Python's wording
    except re.error as exc:
        raise MatcherError(f"{shown!r}: invalid regex: {exc}") from None
    try:
        return re2.compile(pattern, _RE2_OPTIONS)
    except re2.error as exc:
        detail = exc.args[0].decode() if exc.args and isinstance(exc.args[0], bytes) else exc
        raise MatcherError(
            f"{shown!r}: regex uses a construct the linear-time regex engine (RE2) does not "
            f"support ({detail}); backreferences, lookarounds and possessive or atomic groups "
            "are not available"
        ) from None


def match_labels(alert: AlertTransition) -> dict[str, str]:
    """The labels matchers see for ``alert``: its labels plus its identifying attributes."""
    labels = dict(alert.labels)
    for attribute in _ATTRIBUTES:
        labels[attribute] = str(getattr(alert, attribute))
    return labels


def matches_all(matchers: Iterable[Matcher], labels: Mapping[str, str]) -> bool:
    """Whether every matcher matches (an empty list matches everything)."""
    return all(m.matches(labels) for m in matchers)
