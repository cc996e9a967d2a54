"""Rules checked against the record catalogue: a rule that can match nothing gets a warning.

A rule file can be valid and still never fire: ``source: elemnt``, ``metric: air_temprature``
or ``state: eror`` pass the schema, and the rule waits for records no normalizer emits. The
loader calls :func:`catalogue_warnings` (when asked to, e.g. by ``streamwarden rules check``)
and reports each one as ``file:line: warning: key: what``. Warnings do not refuse the file:
families whose upstream names things freely (ELEMENT parser fields, Valtronics telemetry
keys) may send a name the catalogue does not list.

Checked, against :data:`pipeline.normalize.catalogue.CATALOGUE` (``docs/records.md``):

- ``match.source``: a family;
- ``match.metric`` (threshold, aggregate, absence) and ``match.state`` (state rules): a name
  some record of the source (any source when absent) carries;
- ``equals`` / ``changes.from`` / ``changes.to``: a value the state takes, when its values
  are known;
- ``match.labels``: identity labels the source's records carry (an annotation is named as
  such: matching sees identity labels only);
- ``identity``: labels or annotations the source's records carry.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping
from typing import Any

from pipeline.errors import RuleProblem
from pipeline.normalize.catalogue import CATALOGUE, FamilyCatalogue, Name
from pipeline.rules.schema import Rule, StateRule

__all__ = ["catalogue_warnings", "rule_warnings"]

DataPath = tuple[str | int, ...]

_SEE = "see docs/records.md"


def _suggest(text: str, names: Iterable[str]) -> str:
    close = difflib.get_close_matches(text, sorted(set(names)), n=1, cutoff=0.75)
    return f"; did you mean {close[0]!r}?" if close else ""


def _name_problem(
    kind: str, text: str, families: list[FamilyCatalogue], found: Name | None
) -> str | None:
    if found is not None:
        return None
    exact = [
        n.name
        for f in families
        for n in (f.metrics if kind == "metric" else f.states)
        if "*" not in n.name
    ]
    whose = f"no {families[0].source} record" if len(families) == 1 else "no record of any source"
    return f"{whose} has {kind} {text!r}{_suggest(text, exact)} ({_SEE})"


def rule_warnings(rule: Rule) -> list[tuple[DataPath, str]]:
    """``(key path below the rule, message)`` for each part of ``rule`` no record can match."""
    out: list[tuple[DataPath, str]] = []
    source = rule.match.source
    if source is not None and source not in CATALOGUE:
        known = ", ".join(sorted(CATALOGUE))
        message = f"no normalizer emits source {source!r}{_suggest(source, CATALOGUE)}"
        out.append((("match", "source"), f"{message} (known sources: {known})"))
        return out  # nothing else can match either
    families = [CATALOGUE[source]] if source is not None else list(CATALOGUE.values())
    if isinstance(rule, StateRule):
        name = rule.match.state
        entries = [f.state(name) for f in families]
        found = next((e for e in entries if e is not None), None)
        problem = _name_problem("state", name, families, found)
        if problem is not None:
            out.append((("match", "state"), problem))
        elif found is not None and found.values:
            out += _value_warnings(rule, name, found)
    else:
        metric = rule.match.metric
        found = next((m for f in families if (m := f.metric(metric)) is not None), None)
        problem = _name_problem("metric", metric, families, found)
        if problem is not None:
            out.append((("match", "metric"), problem))
    labels = {k for f in families for k in f.labels}
    notes = {k for f in families for k in f.annotations}
    src = families[0].source if len(families) == 1 else "any source's"
    for key in rule.match.labels:
        if key in labels:
            continue
        if key in notes:
            message = (
                f"{key!r} is an annotation of {src} records, not an identity label; "
                "match.labels sees identity labels only"
            )
        else:
            have = ", ".join(sorted(labels)) or "none"
            message = f"no {src} record has label {key!r} (its identity labels: {have})"
        out.append((("match", "labels", key), message))
    if rule.identity is not None and "*" not in notes:
        for position, key in enumerate(rule.identity):
            if key not in labels and key not in notes:
                message = f"no {src} record has a label or annotation {key!r} ({_SEE})"
                out.append((("identity", position), message))
    return out


def _value_warnings(rule: StateRule, name: str, entry: Name) -> list[tuple[DataPath, str]]:
    wanted: list[tuple[DataPath, str]] = []
    if rule.equals is not None:
        wanted.append((("equals",), rule.equals))
    if rule.changes is not None:
        wanted += [(("changes", "from"), rule.changes.from_), (("changes", "to"), rule.changes.to)]
    out = []
    takes = ", ".join(entry.values)
    for path, value in wanted:
        if value not in entry.values:
            out.append(
                (
                    path,
                    f"state {name!r} takes {takes}; {value!r} never occurs"
                    f"{_suggest(value, entry.values)}",
                )
            )
    return out


def catalogue_warnings(
    loaded: Iterable[tuple[Rule, str, DataPath, Mapping[DataPath, Any]]],
) -> list[RuleProblem]:
    """Warnings for rules read by the loader, as ``file:line`` problems.

    Args:
        loaded: per rule: the rule, its file (as displayed), its path in the file
            (``("rules", 0)``) and the loader's index of where each key path was written
            (values with a ``line``).
    """
    from pipeline.rules.loader import format_path  # the loader imports this module lazily

    out: list[RuleProblem] = []
    for rule, file, path, index in loaded:
        for below, message in rule_warnings(rule):
            full = (*path, *below)
            line = _line(index, full, path)
            out.append(RuleProblem(file, line, format_path(full), message))
    return out


def _line(index: Mapping[DataPath, Any], full: DataPath, rule_path: DataPath) -> int:
    """The line of the deepest written key of ``full`` (a glob default has none)."""
    for end in range(len(full), len(rule_path) - 1, -1):
        where = index.get(full[:end])
        if where is not None:
            return int(where.line)
    return 0
