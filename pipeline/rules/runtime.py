"""Drive a :class:`~pipeline.rules.engine.RuleEngine` with records and a clock: live or replay.

:class:`RuleRuntime` owns what the engine leaves to its caller: a *clock* and a heap of due
times, so that deadlines (a pending ``for``, a window that must close, an absence) fire even
when no further record arrives. Both drivers use the same two calls:

- live (the faust worker): :meth:`~RuleRuntime.process` for every record, and
  :meth:`~RuleRuntime.advance` with the wall-clock time from a timer, e.g. every second;
- replay (``streamwarden replay`` over recorded records): :meth:`~RuleRuntime.process` for
  every record in order, then ``advance(end_ms)`` to let timers run to the end of the
  recording.

Semantics, exactly:

- The clock (:attr:`~RuleRuntime.clock_ms`) is the largest time seen so far: every
  ``advance(now_ms)`` argument and every processed record's ``ts_ms``. It never goes back; an
  earlier ``now_ms`` is ignored. In replay it is event time; live it is wall-clock time, or a
  record's event time if that is ahead (a record from the future moves the clock for every
  entity, as it would in replay).
- ``process(record)`` = ``advance(record.ts_ms)``, then ``engine.evaluate`` on the record,
  then the entries that record made due at once. Its result lists the transitions in that
  order.
- ``advance(now_ms)`` raises the clock and calls ``engine.expire`` for every entry whose
  due time (``engine.deadline``) is at or before the clock, in order of due time then key.
  Transitions carry the event time of their deadline, never the clock.

Why live and replay agree: an entry's due time is ``bound + grace``, the point after which no
record that is not late can change the outcome, and the engine applies an overdue deadline
before a record of the same entity exactly as a timer would. So the transitions of every
alert (in order), the late counts and the final state do not depend on when ``advance`` is
called, as long as no record reaches the runtime more than ``grace`` (of its rule) behind the
clock. Live, that means the transport delay stays within ``grace``; in replay that records are
out of order by at most ``grace``. A record later than that may count as late in one driver
and not the other. The interleaving of transitions of *different* alerts in the returned lists
can differ (a live timer may fire between two records where replay waits for the next
record); consumers key by fingerprint.

Timers (:class:`~pipeline.rules.due.DueIndex`, a multiset of ``(due, key)`` entries): the
runtime keeps every entry that has a deadline covered by an entry of its key at or before
that deadline. A write that gives an entry its first deadline, or an earlier one, adds an
entry; one that moves the deadline later adds nothing (the earlier entry is re-checked when it
comes due and rescheduled then), so a record that moves an absence deadline costs no timer.
A popped key whose entry is gone, has no deadline or is not due yet is skipped (rescheduled
at its real deadline in the last case). :meth:`~RuleRuntime.rebuild` refills the timers from
the state, e.g. after a partition assignment; :meth:`~RuleRuntime.set_engine` swaps in a
reloaded engine.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, MutableMapping
from typing import Final

from pipeline.models import AlertTransition
from pipeline.rules.due import DueIndex
from pipeline.rules.engine import EngineState, Record, RuleEngine

__all__ = ["RuleRuntime"]


_UNKNOWN: Final = object()
"""What a key held before an engine call, when the engine wrote it without reading it."""


class _Tracked(MutableMapping[str, EngineState]):
    """The caller's state, noting which keys the engine wrote (so their timers follow) and
    what each accessed key held before (so an unchanged deadline needs no new timer)."""

    def __init__(self, inner: MutableMapping[str, EngineState]) -> None:
        self.inner = inner
        self.touched: dict[str, EngineState | None] = {}
        self.before: dict[str, object] = {}

    def __getitem__(self, key: str) -> EngineState:
        try:
            value = self.inner[key]
        except KeyError:
            if key not in self.before:
                self.before[key] = None
            raise
        if key not in self.before:
            self.before[key] = value
        return value

    def get(self, key: str, default: EngineState | None = None) -> EngineState | None:  # type: ignore[override]
        """``Mapping.get`` without the KeyError round trip: most records of a quiet rule read
        a key that does not exist (an exception through three layers cost ~6% of the stage)."""
        value = self.inner.get(key)
        if key not in self.before:
            self.before[key] = value
        return default if value is None else value

    def __setitem__(self, key: str, value: EngineState) -> None:
        if key not in self.before:
            self.before[key] = _UNKNOWN
        self.inner[key] = value
        self.touched[key] = value

    def __delitem__(self, key: str) -> None:
        if key not in self.before:
            self.before[key] = _UNKNOWN
        del self.inner[key]
        self.touched[key] = None

    def __iter__(self) -> Iterator[str]:
        return iter(self.inner)

    def __len__(self) -> int:
        return len(self.inner)


class RuleRuntime:
    """A rule engine, its state and a timer heap; see the module docstring.

    Args:
        engine: the rules.
        state: engine state by fingerprint (a dict, or the worker's table view); the runtime
            never iterates it.
    """

    def __init__(self, engine: RuleEngine, state: MutableMapping[str, EngineState]) -> None:
        self._engine = engine
        self._state = _Tracked(state)
        self._timers = DueIndex()
        self._clock: int | None = None

    @property
    def engine(self) -> RuleEngine:
        """The engine in use."""
        return self._engine

    @property
    def clock_ms(self) -> int | None:
        """The largest time seen (``advance`` arguments, record times); None before any."""
        return self._clock

    @property
    def next_due_ms(self) -> int | None:
        """Earliest due time of a timer entry (possibly a stale one), or None."""
        return self._timers.earliest()

    @property
    def timers(self) -> int:
        """Timer entries held, including stale ones not yet due (dropped when they come)."""
        return len(self._timers)

    def set_engine(self, engine: RuleEngine) -> None:
        """Use a reloaded engine; the due times of scheduled keys are recomputed.

        Entries that had no due time under the old engine are not visited; those of changed
        rules are reset when their entity's next record comes, those of removed rules stay
        until a :meth:`rebuild`.
        """
        self._engine = engine
        scheduled = sorted(self._timers.keys())
        self._timers.clear()
        for key in scheduled:
            entry = self._state.inner.get(key)
            if entry is not None:
                self._schedule(key, engine.deadline(key, entry))

    def rebuild(self, items: Iterable[tuple[str, EngineState]]) -> None:
        """Forget every timer and schedule those of ``items`` (all entries of the state)."""
        self._timers.clear()
        for key, entry in items:
            self._schedule(key, self._engine.deadline(key, entry))

    def process(self, record: Record) -> list[AlertTransition]:
        """Advance to the record's event time, evaluate it, and run what it made due."""
        out = self.advance(record.ts_ms)
        out.extend(self._engine.evaluate(self._state, record))
        self._follow_writes()
        out.extend(self._run_due())
        return out

    def advance(self, now_ms: int) -> list[AlertTransition]:
        """Raise the clock to ``now_ms`` and expire every entry due by then.

        Returns:
            The transitions, in order of due time then key.
        """
        if self._clock is None or now_ms > self._clock:
            self._clock = now_ms
        return self._run_due()

    def _run_due(self) -> list[AlertTransition]:
        out: list[AlertTransition] = []
        clock = self._clock
        if clock is None:
            return out
        inner = self._state.inner
        for _due, key in self._timers.pop_due(clock):
            entry = inner.get(key)
            if entry is None:
                continue
            actual = self._engine.deadline(key, entry)
            if actual is None:
                continue
            if actual > clock:  # moved later since: this was the entry covering it
                self._schedule(key, actual)
                continue
            out.extend(self._engine.expire(self._state, key, clock))
            self._follow_writes()
            entry = inner.get(key)
            again = None if entry is None else self._engine.deadline(key, entry)
            if again is not None and again <= clock:  # a bug in an evaluator: fail loudly
                raise RuntimeError(f"entry {key} is still due after expire at {clock}")
            # The popped entry covered the old deadline; the new one (later) needs its own.
            self._schedule(key, again)
        return out

    def _follow_writes(self) -> None:
        """Add a timer entry for each written key whose deadline is new or moved earlier.

        A deadline that stayed or moved later is still covered by the entry that covered
        the old one (see the module docstring): most records touch an open window or push an
        absence deadline on, and cost no timer.
        """
        tracked = self._state
        touched, before = tracked.touched, tracked.before
        if touched:
            deadline = self._engine.deadline
            for key, entry in touched.items():
                if entry is None:
                    continue
                due = deadline(key, entry)
                if due is None:
                    continue
                previous = before.get(key, _UNKNOWN)
                if previous is not None and previous is not _UNKNOWN:
                    covered = deadline(key, previous)  # type: ignore[arg-type]
                    if covered is not None and covered <= due:
                        continue
                self._timers.schedule(key, due)
            touched.clear()
        before.clear()

    def _schedule(self, key: str, due: int | None) -> None:
        if due is not None:
            self._timers.schedule(key, due)
