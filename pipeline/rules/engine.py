"""Rule evaluation: plain Python, event time only, state held by the caller.

:class:`RuleEngine` turns validated rules into evaluators (one class per rule type, from the
registry :data:`~pipeline.rules.evaluators.EVALUATORS`) and indexes them by
``(source, metric)`` for measurements and ``(source, state name)`` for state events, plus a
bucket per name for rules without ``source``, so the cost of a record does not grow with
rules that cannot match it (:meth:`RuleEngine.candidates`). Nothing here reads a clock or
imports faust.

State
    One :data:`~pipeline.rules.state.EngineState` entry per alert, under its fingerprint
    ``alert_fingerprint(rule, entity, identity labels)``, in a caller-owned
    ``MutableMapping[str, EngineState]`` (a dict in tests, a changelog table in the worker,
    stored with :func:`encode_state` / :func:`decode_state`). The engine never iterates it,
    and writes an entry only when it changed: a steady threshold alert costs one read per
    record; window and absence entries change with every record they accept (that is their
    content), so the worker's batching turns those into one write per entity and batch.

Alert lifecycle
    ok -> pending -> firing -> ok, with ``for`` and ``clear.for`` deadlines: see
    :mod:`pipeline.rules.lifecycle`. Threshold rules observe each measurement, state rules
    each state event, aggregate rules each window result, absence rules fire at
    ``last seen + after`` and resolve with the next record.

Watermarks, floors and lateness
    Each entry has a *floor*: records of its entity with an earlier event time are *late*.
    A late record is counted (``counters["late"]``, ``late_by_rule[rule]``), logged (the first
    per rule, then every :data:`LATE_LOG_EVERY`-th) and otherwise ignored: it changes no state.

    - threshold and state rules keep no history, so the floor is the event time of the
      entry's last change (or just after its last applied deadline): a record older than
      that cannot be placed. Without an entry (ok threshold alert) nothing is late.
    - tumbling/hopping: the *watermark* is the latest event time accepted for the entity; a
      window ``[start, end)`` closes once ``watermark >= end + grace`` (or a timer says so);
      a record is late when the first window holding it has closed, i.e. its pane ended
      ``grace`` or more before the watermark, or it is before the end of a window the entry
      already closed. A record late for one window is late for all (never half-counted).
    - sliding: late when older than ``watermark - grace``, or too old for any window still to
      come (``<= watermark - size``), or not after the last applied deadline.
    - absence: late when older than ``last seen - grace``, or not after the time it fired.

Redelivery
    The pipeline is at-least-once, so after a crash a record may come again (its entry was
    stored ahead of the consumer offsets; raw envelopes normalized twice). Threshold, state
    and absence entries are idempotent: a record older than the last change is late, one at
    or after it observes what was already observed, ``last seen`` is a maximum. Known gap: a
    threshold alert that resolved leaves no entry, so a replay reaching back before the
    resolution fires and resolves it again. Aggregate
    entries would count the record twice, so they keep the keys ``(ts_ms, value)`` of the
    records they could still accept (:func:`pipeline.windows.seen_add`, bounded by the
    lateness horizon); a record with a known key is counted (``counters["duplicate"]``) and
    otherwise ignored. A record of one entity and metric with the same event time and value
    as another is thereby taken as the same record.

Deadlines and timers
    Entries that must change without a record expose a *due time* (:meth:`deadline`), the
    clock value at which :meth:`expire` must run: ``bound + grace`` where ``bound`` is the
    first event time that can no longer change the outcome: ``end`` of a window,
    ``deadline + 1`` of a pending/clearing alert (the deadline itself is inclusive),
    ``last_seen + after + 1`` for absence. Waiting ``grace`` lets records up to ``grace``
    late still count. A transition made at a deadline carries the deadline's event time
    (window end, ``since + for``, ``last_seen + after``), never the clock, and applying a
    deadline raises the floor past it, so a straggler cannot contradict it afterwards.

    The same entry changes the same way whether a deadline is applied by :meth:`expire` or
    found overdue by the next record of the entity (:meth:`evaluate` applies deadlines before
    the record, in event-time order); :mod:`pipeline.rules.runtime` builds on that to make
    live and replay agree.

Reload
    Every entry carries :func:`rule_hash` of the definition that wrote it: the evaluation
    fields (type, match, condition, window, aggregate, for, clear, after, equals, changes,
    grace), not the texts, severity, labels or channels, whose edits keep state. An entry
    with another hash (or another rule's tag) is treated as absent, with one exception: an
    alert that was firing stays firing (since and value kept, everything else reset) so it
    resolves under the new definition instead of being left firing downstream for ever.
    Entries of rules that no longer exist are deleted when a timer or
    :meth:`RuleRuntime.rebuild <pipeline.rules.runtime.RuleRuntime.rebuild>` meets them
    (their :meth:`deadline` is 0: due at once); no transition is announced for them.

Identity
    An alert is one rule, one entity and its *identity labels*: the record's labels (stable
    dimensions such as ``phase``, see ``docs/records.md``), or those the rule's ``identity``
    names. Annotations (reasons, titles, ids, message types) never enter the fingerprint, so
    a device that goes offline with one reason and comes back with another is one alert.
    A transition carries the annotations of the record whose observation caused it (a
    "Reconnected" reason on the resolve); one applied at a deadline, those kept in the entry's
    subject (threshold and state rules keep the latest record's, the others the first's).

Upgrade (entries written before identity labels)
    Entries whose subject has ``identity_version`` 0 were keyed by every record label,
    annotations included. :meth:`RuleEngine.deadline` makes them due at once, so the first
    timer run (or :meth:`RuleRuntime.rebuild <pipeline.rules.runtime.RuleRuntime.rebuild>`
    then the first ``advance``) re-keys them before any record is evaluated: the labels the
    family catalogue declares identity labels (or the rule's ``identity``) stay labels, the
    rest become annotations, and the entry moves to its new fingerprint, remembering the old
    one in ``subject.fingerprint``. The alert keeps being announced under its old
    fingerprint, so one that fired before the upgrade resolves downstream. When several old
    entries collapse into one new key (the split this change fixes), the one already firing
    there, or the first, is kept; another firing one is announced resolved at the clock time,
    so nothing is left firing for ever (``counters["upgraded"]``, ``["merged"]``). An edited
    ``identity`` is handled the same way: the rule's entries are of another definition then,
    due at once like any stale entry, and move to the keys the new identity gives
    (``counters["rekeyed"]``) before the usual reload treatment. Known gap: a live reload
    (:meth:`RuleRuntime.set_engine <pipeline.rules.runtime.RuleRuntime.set_engine>`) only
    visits entries with a timer, so a firing alert without one is re-keyed at the next
    :meth:`~pipeline.rules.runtime.RuleRuntime.rebuild` (start, partition assignment); a
    record under the new identity before that starts a second alert.

Templates
    ``summary`` and ``description`` see ``rule``, ``type``, ``entity``, ``source``,
    ``stream``, ``metric`` (the state name for state rules), ``value``, ``unit``, ``labels``,
    ``annotations``, ``state`` (firing/resolved), ``ts_ms``, ``severity``; with a condition ``op``,
    ``threshold`` (and ``low``, ``high`` for ranges); aggregate rules ``aggregate`` (``avg``,
    ``p95``...), ``window`` (kind), ``window_size``, ``window_start_ms``, ``window_end_ms``
    (of the window the value comes from); absence rules ``after``, ``last_seen_ms``; state
    rules ``previous`` (the state before) and ``expected`` (the state the rule is about).

NaN measurements are ignored (they compare false with everything and would resolve alerts).
"""

from __future__ import annotations

import functools
import hashlib
import logging
from collections import Counter
from collections.abc import Iterable, MutableMapping
from typing import Any, Final

import msgspec

from pipeline.models import AlertTransition, Measurement
from pipeline.normalize.catalogue import CATALOGUE
from pipeline.rules.evaluators import (
    AnyEvaluator,
    Record,
    firing_of,
    make_evaluator,
    rule_hash,
)
from pipeline.rules.lifecycle import Change
from pipeline.rules.schema import Rule
from pipeline.rules.state import (
    IDENTITY_VERSION,
    AbsenceState,
    AlertState,
    EngineState,
    Phase,
    StateFormatError,
    Subject,
    WindowState,
    decode_state,
    encode_state,
)

__all__ = [
    "LATE_LOG_EVERY",
    "STALE_DUE_MS",
    "AbsenceState",
    "AlertState",
    "EngineState",
    "Phase",
    "Record",
    "RuleEngine",
    "StateFormatError",
    "Subject",
    "WindowState",
    "alert_fingerprint",
    "decode_state",
    "encode_state",
    "rule_hash",
]

logger = logging.getLogger(__name__)

LATE_LOG_EVERY: Final = 1000
"""After the first late record of a rule is logged, every this-many-th is."""
STALE_DUE_MS: Final = 0
"""Due time of an entry written by another definition or a removed rule: at once."""


def alert_fingerprint(rule: str, entity: str, labels: dict[str, str]) -> str:
    """Stable identity of an alert: 16 hex digits of BLAKE2b over rule, entity, sorted
    identity labels (never annotations: see "Identity" above)."""
    if labels:
        return _fingerprint(rule, entity, labels)
    return _unlabelled_fingerprint(rule, entity)


@functools.lru_cache(maxsize=65_536)
def _unlabelled_fingerprint(rule: str, entity: str) -> str:
    """Label-less fingerprints, remembered: hashing was a tenth of an evaluation."""
    return _fingerprint(rule, entity, {})


def _fingerprint(rule: str, entity: str, labels: dict[str, str]) -> str:
    parts = [rule, entity]
    for key in sorted(labels):
        parts.append(key)
        parts.append(labels[key])
    return hashlib.blake2b("\x1f".join(parts).encode(), digest_size=8).hexdigest()


_CANDIDATES_CACHED_MAX = 4096
"""(kind, source, metric or state name) combinations whose candidate rules are remembered."""


class RuleEngine:
    """Evaluates measurements and state events against rules.

    Args:
        rules: validated rules (from :func:`pipeline.rules.loader.load_rules`). Templates
            are compiled here, once.

    Attributes:
        counters: ``late`` (records ignored as late), ``duplicate`` (records of an aggregate
            rule ignored as already applied: redelivered), ``stale`` (entries of another
            definition met), ``expired`` (entries changed by a timer).
        late_by_rule: late records per rule name.
    """

    def __init__(self, rules: Iterable[Rule]) -> None:
        self._evaluators: list[AnyEvaluator] = [make_evaluator(rule) for rule in rules]
        self._by_name: dict[str, AnyEvaluator] = {ev.name: ev for ev in self._evaluators}
        self._by_source: dict[tuple[str, str, str], list[AnyEvaluator]] = {}
        self._any_source: dict[tuple[str, str], list[AnyEvaluator]] = {}
        for ev in self._evaluators:
            if ev.source is None:
                self._any_source.setdefault((ev.kind, ev.match_name), []).append(ev)
            else:
                self._by_source.setdefault((ev.kind, ev.source, ev.match_name), []).append(ev)
        # Remembered per (kind, source, metric or state name): built once, not per record.
        self._candidates_for = functools.lru_cache(maxsize=_CANDIDATES_CACHED_MAX)(
            self._index_lookup
        )
        self.counters: Counter[str] = Counter()
        self.late_by_rule: Counter[str] = Counter()

    @property
    def rules(self) -> list[Rule]:
        """The rules, in the order given."""
        return [ev.rule for ev in self._evaluators]

    def rule_hashes(self) -> dict[str, int]:
        """Rule name -> :func:`rule_hash`."""
        return {ev.name: ev.hash for ev in self._evaluators}

    def reload(self, rules: Iterable[Rule]) -> RuleEngine:
        """A new engine for ``rules`` that reads the same state (counters carry over).

        State of rules whose :func:`rule_hash` is unchanged is kept as it is; state of changed
        rules is treated as absent except a firing alert, which stays firing; state of
        removed rules is deleted when a timer or a rebuild meets it. Nothing needs migrating:
        the hash in every entry decides.
        """
        engine = RuleEngine(rules)
        engine.counters.update(self.counters)
        engine.late_by_rule.update(self.late_by_rule)
        old, new = self.rule_hashes(), engine.rule_hashes()
        logger.info(
            "rules reloaded unchanged=%d changed=%d added=%d removed=%d",
            sum(1 for n, h in new.items() if old.get(n) == h),
            sum(1 for n, h in new.items() if n in old and old[n] != h),
            sum(1 for n in new if n not in old),
            sum(1 for n in old if n not in new),
        )
        return engine

    def _candidates(self, record: Record) -> tuple[AnyEvaluator, ...]:
        if isinstance(record, Measurement):
            return self._candidates_for("measurement", record.source, record.metric)
        return self._candidates_for("state", record.source, record.name)

    def _index_lookup(self, kind: str, source: str, name: str) -> tuple[AnyEvaluator, ...]:
        return (
            *self._by_source.get((kind, source, name), ()),
            *self._any_source.get((kind, name), ()),
        )

    def candidates(self, record: Record) -> list[str]:
        """Names of the rules the index hands to ``record`` before globs and labels."""
        return [ev.name for ev in self._candidates(record)]

    def evaluate(
        self, state: MutableMapping[str, EngineState], record: Record
    ) -> list[AlertTransition]:
        """Evaluate one record against the rules that can match it.

        Deadlines of the record's own alerts that it shows to be past are applied first (see
        the module docstring), so the result does not depend on whether a timer ran.

        Args:
            state: engine state by fingerprint; read, and written only on change.
            record: a measurement or state event; ``ts_ms`` is its event time.

        Returns:
            The transitions this record caused, in rule order; usually empty.
        """
        out: list[AlertTransition] = []
        if isinstance(record, Measurement) and record.value != record.value:  # NaN
            return out
        for ev in self._candidates(record):
            if ev.matches(record):
                self._evaluate_rule(ev, state, record, out)
        return out

    def _evaluate_rule(
        self,
        ev: AnyEvaluator,
        state: MutableMapping[str, EngineState],
        record: Record,
        out: list[AlertTransition],
    ) -> None:
        labels, notes = ev.identify(record)
        key = alert_fingerprint(ev.name, record.entity, labels)
        stored = state.get(key)
        entry: Any = self._current(ev, stored)
        if entry is not None and ev.is_late(entry, record.ts_ms):
            self._late(ev, record, ev.floor(entry))
            return
        if entry is not None and ev.is_duplicate(entry, record):
            self.counters["duplicate"] += 1
            return
        ev.record_notes, ev.record_ts = notes, record.ts_ms
        try:
            new = ev.on_record(key, entry, record, out)
        finally:
            ev.record_notes = ev.record_ts = None
        self._store(state, key, stored, new)

    def deadline(self, key: str, entry: EngineState) -> int | None:
        """Clock time (ms) at which :meth:`expire` must run for ``entry``, or None.

        The time is ``bound + grace`` (see the module docstring): a timer calls
        :meth:`expire` once its clock reaches it. Entries of removed rules or of another
        definition are due at once (:data:`STALE_DUE_MS`) so they get cleaned up.
        """
        ev = self._by_name.get(entry.rule)
        if ev is None or not ev.owns(entry) or entry.subject.identity_version < IDENTITY_VERSION:
            return STALE_DUE_MS
        owned: Any = entry
        due: int | None = ev.deadline(owned)
        return due

    def expire(
        self, state: MutableMapping[str, EngineState], key: str, now_ms: int
    ) -> list[AlertTransition]:
        """Apply what is due at clock time ``now_ms`` to the entry under ``key``.

        Transitions carry the event time of their deadline, not ``now_ms``. An entry of a
        removed rule is deleted; one of another definition is reset (a firing alert kept).

        Returns:
            The transitions, oldest first; empty when nothing was due.
        """
        stored = state.get(key)
        if stored is None:
            return []
        out: list[AlertTransition] = []
        ev = self._by_name.get(stored.rule)
        if ev is None:
            self.counters["stale"] += 1
            del state[key]
            return out
        if stored.subject.identity_version < IDENTITY_VERSION or not ev.owns(stored):
            moved = self._rekey(ev, state, key, stored, now_ms)
            if moved is not None:
                return moved
        entry: Any = self._current(ev, stored)
        new = ev.expire(key, entry, now_ms, out) if entry is not None else None
        if new is not stored:
            self.counters["expired"] += 1
        self._store(state, key, stored, new)
        return out

    def _rekey(
        self,
        ev: AnyEvaluator,
        state: MutableMapping[str, EngineState],
        key: str,
        stored: EngineState,
        now_ms: int,
    ) -> list[AlertTransition] | None:
        """Move an entry to the key the rule's identity gives now (see "Upgrade" above).

        For entries written before identity labels, and for entries of another definition
        (an edited ``identity`` changes every key). Returns the transitions, or None when the
        key stays and the entry still needs its usual treatment (a stale definition).
        """
        old = stored.subject
        legacy = old.identity_version < IDENTITY_VERSION
        pool = {**old.annotations, **old.labels}
        if ev.identity is None:
            declared = CATALOGUE[old.source].labels if old.source in CATALOGUE else {}
            labels = {k: v for k, v in pool.items() if k in declared}
        else:
            labels = {k: pool[k] for k in ev.identity if k in pool}
        new_key = alert_fingerprint(stored.rule, old.entity, labels)
        if new_key == key and not legacy:
            return None
        self.counters["upgraded" if legacy else "rekeyed"] += 1
        subject = msgspec.structs.replace(
            old,
            labels=labels,
            annotations={k: v for k, v in pool.items() if k not in labels},
            identity_version=IDENTITY_VERSION,
            fingerprint=old.fingerprint or ("" if new_key == key else key),
        )
        entry = msgspec.structs.replace(stored, subject=subject)
        if new_key == key:
            state[key] = entry
            return []
        del state[key]
        there = state.get(new_key)
        if there is None:
            state[new_key] = entry
            return []
        self.counters["merged"] += 1
        if firing_of(there) is None and firing_of(entry) is not None:
            state[new_key], entry = entry, there
        firing = firing_of(entry)
        if firing is None:
            return []
        since, value = firing
        at = max(now_ms, since)
        return [
            ev.transition(
                entry.subject.fingerprint or key, entry.subject, Change("resolved", at, value, at)
            )
        ]

    def _current(self, ev: AnyEvaluator, stored: EngineState | None) -> EngineState | None:
        if stored is None or ev.owns(stored):
            return stored
        self.counters["stale"] += 1
        return ev.carry(stored)

    @staticmethod
    def _store(
        state: MutableMapping[str, EngineState],
        key: str,
        stored: EngineState | None,
        new: EngineState | None,
    ) -> None:
        if new is stored:
            return
        if new is None:
            del state[key]
        else:
            state[key] = new

    def _late(self, ev: AnyEvaluator, record: Record, floor_ms: int | None) -> None:
        self.counters["late"] += 1
        self.late_by_rule[ev.name] += 1
        count = self.late_by_rule[ev.name]
        if count == 1 or count % LATE_LOG_EVERY == 0:
            logger.warning(
                "late record ignored rule=%s entity=%s ts_ms=%d floor_ms=%s grace_ms=%d "
                "late_for_rule=%d",
                ev.name,
                record.entity,
                record.ts_ms,
                floor_ms,
                ev.grace_ms,
                count,
            )
