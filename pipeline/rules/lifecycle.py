"""The lifecycle of one alert as pure functions over :class:`~pipeline.rules.state.Phase`.

::

    ok --holds--> pending --held `for`--> firing --clears, held `clear.for`--> ok (resolved)
     ^               |                      |  ^
     +--not holds----+                      +--+ clear interrupted (clears no longer)

An *observation* is a value at an event time: a measurement (threshold), a state event
(state) or a window result (aggregate). A condition is taken to hold from its observation
until an observation says otherwise, so a pending alert has a *deadline* ``since + for`` at
which it fires, and a clearing alert one at ``clear_since + clear.for`` at which it resolves,
whether or not another observation arrives. The deadline is inclusive: an observation at
exactly the deadline still decides (a false one cancels, a true one fires at the deadline);
an observation after it first applies the deadline, then counts.

Transitions applied at a deadline carry the deadline as event time and the value that started
the phase; transitions caused by an observation carry the observation's time and value (a
pending alert confirmed by an observation at its deadline announces the starting value, as a
timer would).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from pipeline.rules.state import Phase

__all__ = ["Change", "Timing", "apply_deadline", "catch_up", "deadline", "expire_due", "observe"]


@dataclass(frozen=True, slots=True)
class Timing:
    """How long a condition must hold to fire (``for_ms``) and the clear to resolve."""

    for_ms: int
    clear_for_ms: int


@dataclass(frozen=True, slots=True)
class Change:
    """A transition to announce.

    Attributes:
        state: ``firing`` or ``resolved``.
        ts_ms: its event time.
        value: the value announced.
        observed_ms: event time of the observation ``value`` comes from (a window's end).
    """

    state: Literal["firing", "resolved"]
    ts_ms: int
    value: float | str
    observed_ms: int


def deadline(phase: Phase | None, timing: Timing) -> int | None:
    """Event time at which ``phase`` changes by itself, or None."""
    if phase is None:
        return None
    if phase.state == "pending":
        return phase.since_ms + timing.for_ms
    if phase.clear_since_ms is not None:
        return phase.clear_since_ms + timing.clear_for_ms
    return None


def apply_deadline(phase: Phase, timing: Timing) -> tuple[Phase | None, Change]:
    """Apply the deadline of ``phase`` (which must have one): fire, or resolve."""
    if phase.state == "pending":
        at = phase.since_ms + timing.for_ms
        return Phase("firing", at, phase.value), Change("firing", at, phase.value, phase.since_ms)
    if phase.clear_since_ms is None or phase.clear_value is None:
        raise ValueError(f"phase has no deadline: {phase!r}")
    at = phase.clear_since_ms + timing.clear_for_ms
    return None, Change("resolved", at, phase.clear_value, phase.clear_since_ms)


def catch_up(
    phase: Phase | None, before_ms: int, timing: Timing, out: list[Change]
) -> tuple[Phase | None, int | None]:
    """Apply every deadline earlier than ``before_ms`` (an observation's time).

    Returns:
        The phase and the last deadline applied (None if none was).
    """
    applied = None
    while True:
        due = deadline(phase, timing)
        if phase is None or due is None or due >= before_ms:
            return phase, applied
        phase, change = apply_deadline(phase, timing)
        out.append(change)
        applied = due


def expire_due(
    phase: Phase | None, now_ms: int, grace_ms: int, timing: Timing, out: list[Change]
) -> tuple[Phase | None, int | None]:
    """Apply every deadline ``d`` with ``d + grace_ms + 1 <= now_ms`` (a timer at ``now_ms``).

    Returns:
        The phase and the last deadline applied (None if none was).
    """
    return catch_up(phase, now_ms - grace_ms, timing, out)


def observe(
    phase: Phase | None,
    ts_ms: int,
    value: float | str,
    holds: bool,
    clears: bool,
    timing: Timing,
    out: list[Change],
) -> Phase | None:
    """The phase after an observation; deadlines before ``ts_ms`` must have been applied.

    Args:
        phase: current phase (None: ok).
        ts_ms, value: the observation.
        holds: whether the firing condition holds.
        clears: whether the clear condition holds (only read while firing).
        timing: ``for`` and ``clear.for``.
        out: receives the transitions.

    Returns:
        The new phase; the same object when nothing changed.
    """
    if phase is None:
        if not holds:
            return None
        if timing.for_ms == 0:
            out.append(Change("firing", ts_ms, value, ts_ms))
            return Phase("firing", ts_ms, value)
        return Phase("pending", ts_ms, value)
    if phase.state == "pending":
        if not holds:
            return None
        if ts_ms - phase.since_ms >= timing.for_ms:
            at = phase.since_ms + timing.for_ms
            out.append(Change("firing", at, phase.value, phase.since_ms))
            return Phase("firing", at, phase.value)
        return phase
    if not clears:
        if phase.clear_since_ms is not None:  # clearing was interrupted
            return Phase("firing", phase.since_ms, phase.value)
        return phase
    if phase.clear_since_ms is None:
        if timing.clear_for_ms == 0:
            out.append(Change("resolved", ts_ms, value, ts_ms))
            return None
        return Phase("firing", phase.since_ms, phase.value, ts_ms, value)
    if ts_ms - phase.clear_since_ms >= timing.clear_for_ms and phase.clear_value is not None:
        at = phase.clear_since_ms + timing.clear_for_ms
        out.append(Change("resolved", at, phase.clear_value, phase.clear_since_ms))
        return None
    return phase
