"""RuleRuntime: timers without further records, a monotone clock, rebuilds, reloads, and the
same transitions whether ``advance`` runs from a wall clock (live) or from event time (replay)."""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Iterator, MutableMapping, Sequence
from typing import Any

import pytest

from pipeline.models import AlertTransition, Measurement, StateEvent
from pipeline.rules.engine import (
    AlertState,
    EngineState,
    RuleEngine,
    WindowState,
    alert_fingerprint,
)
from pipeline.rules.runtime import RuleRuntime
from tests.unit.pipeline.rules.helpers import ADAPTER, T0, at, brief, event, meas, rule


class NoIterState(MutableMapping[str, EngineState]):
    """Like the worker's table view: keyed access only."""

    def __init__(self) -> None:
        self.data: dict[str, EngineState] = {}

    def __getitem__(self, key: str) -> EngineState:
        return self.data[key]

    def __setitem__(self, key: str, value: EngineState) -> None:
        self.data[key] = value

    def __delitem__(self, key: str) -> None:
        del self.data[key]

    def __iter__(self) -> Iterator[str]:
        raise TypeError("not iterable")

    def __len__(self) -> int:
        raise TypeError("no size")


SILENT = rule("absence", match={"metric": "temperature"}, after="15m", grace="30s")
CONNECTOR_ERROR = rule("state", equals="error", for_="5m", grace="10s")


def temp(value: float, seconds: float, entity: str = "sensor-1") -> Measurement:
    return meas(value, seconds, entity=entity, metric="temperature", source="element")


def test_absence_fires_from_advance_and_resolves_on_the_next_record() -> None:
    runtime = RuleRuntime(RuleEngine([SILENT]), NoIterState())

    assert runtime.process(temp(21, 0)) == []
    assert runtime.advance(at(930)) == []  # deadline 900 s, grace 30 s: due at 930 s + 1 ms
    fired = runtime.advance(at(931))
    assert brief(fired) == [("r-absence", "firing", 900, 21.0)]
    assert runtime.advance(at(5000)) == []  # fires once

    assert brief(runtime.process(temp(19, 5000))) == [("r-absence", "resolved", 5000, 19.0)]


def test_connector_error_fires_five_minutes_later_from_the_wall_clock() -> None:
    runtime = RuleRuntime(RuleEngine([CONNECTOR_ERROR]), {})
    runtime.process(event("error", 0, previous="ok"))

    ticks = [runtime.advance(at(s)) for s in range(1, 400)]  # a wall-clock tick per second

    fired = [(s + 1, t) for s, out in enumerate(ticks) for t in out]
    assert [(s, t.state, t.ts_ms) for s, t in fired] == [(311, "firing", at(300))]


def test_clock_never_goes_back() -> None:
    runtime = RuleRuntime(RuleEngine([SILENT]), {})
    assert runtime.clock_ms is None

    runtime.advance(at(100))
    runtime.advance(at(50))
    runtime.process(temp(21, 10))  # an old record does not move the clock back either

    assert runtime.clock_ms == at(100)


def test_a_record_moves_the_clock_for_other_entities() -> None:
    runtime = RuleRuntime(RuleEngine([SILENT]), {})
    runtime.process(temp(21, 0, "a"))

    out = runtime.process(temp(22, 1000, "b"))  # replay: b's record shows time has passed

    assert [(t.entity, t.state, t.ts_ms) for t in out] == [("a", "firing", at(900))]


def test_superseded_timers_are_skipped() -> None:
    th = rule(for_="10s", grace="0s")
    runtime = RuleRuntime(RuleEngine([th]), {})
    runtime.process(meas(50, 0))  # pending, due at 10 s + 1 ms
    runtime.process(meas(10, 5))  # cancelled
    runtime.process(meas(50, 8))  # pending again, due at 18 s + 1 ms

    assert runtime.advance(at(15)) == []
    assert brief(runtime.advance(at(20))) == [("r-threshold", "firing", 18, 50.0)]
    assert runtime.timers == 0


def test_moving_deadlines_keep_one_timer_per_key() -> None:
    runtime = RuleRuntime(RuleEngine([SILENT]), {})

    for s in range(0, 36_000, 10):  # ten hours, a record every 10 s: the deadline moves
        runtime.process(temp(20, s))

    assert runtime.timers == 1
    assert len(runtime._timers._times) == 1  # one bucket, not one per record


def test_process_returns_timer_transitions_before_the_record_s_own() -> None:
    runtime = RuleRuntime(RuleEngine([SILENT, rule(match={"metric": "temperature"})]), {})
    runtime.process(temp(21, 0, "a"))

    out = runtime.process(temp(50, 1000, "b"))

    assert [(t.rule, t.entity) for t in out] == [("r-absence", "a"), ("r-threshold", "b")]


def test_rebuild_restores_timers_after_a_restart() -> None:
    state: dict[str, EngineState] = {}
    first = RuleRuntime(RuleEngine([CONNECTOR_ERROR, SILENT]), state)
    first.process(event("error", 0))
    first.process(temp(21, 0))

    second = RuleRuntime(RuleEngine([CONNECTOR_ERROR, SILENT]), state)  # e.g. a new worker
    assert second.advance(at(10_000)) == []  # no timers known yet
    second.rebuild(state.items())
    out = second.advance(at(10_000))

    assert sorted(brief(out)) == [
        ("r-absence", "firing", 900, 21.0),
        ("r-state", "firing", 300, "error"),
    ]


def test_rebuild_tolerates_entries_without_deadlines() -> None:
    state: dict[str, EngineState] = {}
    runtime = RuleRuntime(RuleEngine([rule()]), state)
    runtime.process(meas(50, 0))  # firing: no deadline

    runtime.rebuild(state.items())

    assert runtime.timers == 0
    assert runtime.advance(at(10_000)) == []


# --- reload -----------------------------------------------------------------------------------


def threshold(name: str, for_: str, value: float = 40) -> Any:
    return rule(name=name, for_=for_, condition={"op": ">", "value": value})


def test_reload_keeps_unchanged_rules_and_resets_changed_ones() -> None:
    state: dict[str, EngineState] = {}
    runtime = RuleRuntime(RuleEngine([threshold("same", "1m"), threshold("edited", "1m")]), state)
    runtime.process(meas(50, 0))  # both pending since 0 s
    same = alert_fingerprint("same", "mp-1", {})
    edited = alert_fingerprint("edited", "mp-1", {})
    assert runtime.engine.counters["stale"] == 0

    reloaded = runtime.engine.reload(
        [
            threshold("same", "1m").model_copy(update={"summary": "new text keeps state"}),
            threshold("edited", "2m"),
        ]
    )
    runtime.set_engine(reloaded)

    # "same" keeps its pending start and fires at 0 + 1 m from the timer; "edited" has its
    # old pending entry treated as absent: the record at 30 s starts it afresh
    runtime.process(meas(50, 30))
    out = runtime.advance(at(300))
    assert brief(out) == [("same", "firing", 60, 50.0), ("edited", "firing", 150, 50.0)]
    assert reloaded.counters["stale"] >= 1
    entry = state[edited]
    assert isinstance(entry, AlertState)
    assert entry.rule_hash == reloaded.rule_hashes()["edited"]
    assert state[same].rule_hash == reloaded.rule_hashes()["same"]


def test_reload_keeps_a_firing_alert_of_a_changed_rule_firing() -> None:
    state: dict[str, EngineState] = {}
    runtime = RuleRuntime(RuleEngine([threshold("volt", "0s", 40)]), state)
    assert brief(runtime.process(meas(50, 0))) == [("volt", "firing", 0, 50.0)]

    runtime.set_engine(runtime.engine.reload([threshold("volt", "0s", 60)]))

    # 50 is not above the new threshold: the alert resolves instead of staying open for ever
    assert brief(runtime.process(meas(50, 10))) == [("volt", "resolved", 10, 50.0)]


def test_reload_resets_window_state_of_a_changed_aggregate() -> None:
    def agg(size: str) -> Any:
        return rule(
            "aggregate",
            window={"kind": "tumbling", "size": size},
            aggregate="count",
            condition={"op": ">", "value": 2},
        )

    engine = RuleEngine([agg("10s")])
    state: dict[str, EngineState] = {}
    for s in (1, 2):
        engine.evaluate(state, meas(1, s))
    engine = engine.reload([agg("20s")])

    out = [t for s in (3, 25) for t in engine.evaluate(state, meas(1, s))]

    assert out == []  # the two records before the reload are gone: [0, 20) counts one
    entry = next(iter(state.values()))
    assert isinstance(entry, WindowState)
    assert entry.rule_hash == engine.rule_hashes()["r-aggregate"]


def test_state_of_removed_rules_is_deleted_when_met() -> None:
    state: dict[str, EngineState] = {}
    runtime = RuleRuntime(RuleEngine([CONNECTOR_ERROR, SILENT]), state)
    runtime.process(event("error", 0))
    runtime.process(temp(21, 0))
    assert len(state) == 2

    runtime.set_engine(runtime.engine.reload([SILENT]))
    runtime.rebuild(list(state.items()))
    out = runtime.advance(at(1))

    assert out == []
    assert [e.rule for e in state.values()] == ["r-absence"]


# --- live and replay agree --------------------------------------------------------------------

DETERMINISM_RULES = [
    ADAPTER.validate_python(data)
    for data in [
        {
            "name": "th",
            "type": "threshold",
            "match": {"metric": "kw"},
            "condition": {"op": ">", "value": 40},
            "for": "3s",
            "clear": {"condition": {"op": "<", "value": 35}, "for": "2s"},
            "grace": "2s",
        },
        {
            "name": "tu",
            "type": "aggregate",
            "match": {"metric": "kw"},
            "window": {"kind": "tumbling", "size": "10s"},
            "aggregate": "avg",
            "condition": {"op": ">", "value": 40},
            "grace": "3s",
        },
        {
            "name": "ho",
            "type": "aggregate",
            "match": {"metric": "kw"},
            "window": {"kind": "hopping", "size": "10s", "hop": "5s"},
            "aggregate": "max",
            "condition": {"op": ">", "value": 50},
            "for": "5s",
            "grace": "2s",
        },
        {
            "name": "sl",
            "type": "aggregate",
            "match": {"metric": "kw"},
            "window": {"kind": "sliding", "size": "8s"},
            "aggregate": {"percentile": 90},
            "condition": {"op": ">", "value": 50},
            "clear": {"for": "3s"},
            "grace": "2s",
        },
        {
            "name": "ra",
            "type": "aggregate",
            "match": {"metric": "kw"},
            "window": {"kind": "tumbling", "size": "20s"},
            "aggregate": "rate",
            "condition": {"op": ">", "value": 0.5},
            "grace": "4s",
        },
        {"name": "ab", "type": "absence", "match": {"metric": "kw"}, "after": "20s", "grace": "2s"},
        {
            "name": "st",
            "type": "state",
            "match": {"state": "error"},
            "equals": "error",
            "for": "10s",
            "clear": {"for": "5s"},
            "grace": "2s",
        },
    ]
]
MAX_DELAY_MS = 1500  # below the smallest grace (2 s): the runtime's contract


def arrivals(seed: int) -> list[tuple[int, Measurement | StateEvent]]:
    """``(arrival ms, record)`` sorted by arrival: event time plus a transport delay."""
    rng = random.Random(seed)
    out: list[tuple[int, Measurement | StateEvent]] = []
    for entity in ("m1", "m2", "m3"):
        t = rng.randrange(0, 2000)
        value = 40.0
        while t < 300_000:
            value = min(70.0, max(20.0, value + rng.uniform(-8, 8)))
            m = Measurement("aliunid", "hub", entity, "kw", round(value, 1), "kW", T0 + t, {})
            out.append((T0 + t + rng.randrange(MAX_DELAY_MS), m))
            # mostly 1 s apart; sometimes silent for long, or for just past a deadline
            # (absence 20 s, for 3 s...) so that timers and records meet inside the grace
            t += rng.choice([1000, 1000, 1000, 700, 1300, 30_000, 20_700, 21_500, 3_400])
    for entity in ("NOR_1/0", "NOR_1/1"):
        t = rng.randrange(0, 5000)
        while t < 300_000:
            value_ = rng.choice(["ok", "error", "error"])
            e = StateEvent("nobil", "no", entity, "error", value_, None, T0 + t, {})
            out.append((T0 + t + rng.randrange(MAX_DELAY_MS), e))
            t += rng.choice([rng.randrange(2000, 40_000), 10_500, 11_200])
    out.sort(key=lambda pair: pair[0])
    return out


def replay(records: Sequence[tuple[int, Any]]) -> tuple[list[AlertTransition], RuleRuntime]:
    runtime = RuleRuntime(RuleEngine(DETERMINISM_RULES), {})
    out: list[AlertTransition] = []
    for _, record in records:
        out.extend(runtime.process(record))
    out.extend(runtime.advance(T0 + 400_000))
    return out, runtime


def live(
    records: Sequence[tuple[int, Any]], seed: int, tick_ms: int | None
) -> tuple[list[AlertTransition], RuleRuntime]:
    """Ticks every ``tick_ms`` of wall clock (arrival time), or at random points if None."""
    rng = random.Random(seed)
    state: dict[str, EngineState] = {}
    runtime = RuleRuntime(RuleEngine(DETERMINISM_RULES), state)
    out: list[AlertTransition] = []
    next_tick = T0
    previous_arrival = T0
    for arrival, record in records:
        if tick_ms is not None:
            while next_tick <= arrival:
                out.extend(runtime.advance(next_tick))
                next_tick += tick_ms
        elif rng.random() < 0.5:
            out.extend(runtime.advance(rng.randint(previous_arrival, arrival)))
        out.extend(runtime.process(record))
        previous_arrival = arrival
    out.extend(runtime.advance(T0 + 400_000))
    return out, runtime


def per_alert(transitions: Sequence[AlertTransition]) -> dict[str, list[AlertTransition]]:
    grouped: dict[str, list[AlertTransition]] = defaultdict(list)
    for t in transitions:
        grouped[t.fingerprint].append(t)
    return dict(grouped)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_live_and_replay_give_identical_transitions(seed: int) -> None:
    records = arrivals(seed)
    expected, reference = replay(records)

    fired = {t.rule for t in expected if t.state == "firing"}
    assert fired == {"th", "tu", "ho", "sl", "ra", "ab", "st"}  # every rule type took part

    for tick_ms in (1000, 250, 7000, None):
        got, runtime = live(records, seed, tick_ms)
        assert per_alert(got) == per_alert(expected), tick_ms
        key = lambda t: (t.ts_ms, t.fingerprint, t.state)  # noqa: E731
        assert sorted(got, key=key) == sorted(expected, key=key)
        assert runtime.engine.counters["late"] == reference.engine.counters["late"]
        assert runtime._state.inner == reference._state.inner


def test_timer_transitions_carry_deadline_times_not_tick_times() -> None:
    records = arrivals(4)
    seen = {(r.entity, r.ts_ms) for _, r in records}

    transitions, _ = live(records, 4, 7000)

    absence = [t for t in transitions if t.rule == "ab" and t.state == "firing"]
    assert absence
    for t in absence:  # last seen + after, whatever the 7 s tick that found it
        assert (t.entity, t.ts_ms - 20_000) in seen


def without_timers(records: Sequence[tuple[int, Any]]) -> list[AlertTransition]:
    """The oracle: after every step, expire whatever entry of the whole state is due, found by
    asking the engine about every entry (no timer index at all)."""
    engine = RuleEngine(DETERMINISM_RULES)
    state: dict[str, EngineState] = {}
    out: list[AlertTransition] = []

    def expire_due(clock: int) -> None:
        while True:
            due = [
                (deadline, key)
                for key, entry in state.items()
                if (deadline := engine.deadline(key, entry)) is not None and deadline <= clock
            ]
            if not due:
                return
            out.extend(engine.expire(state, min(due)[1], clock))

    clock = T0
    for _, record in records:
        clock = max(clock, record.ts_ms)
        expire_due(clock)
        out.extend(engine.evaluate(state, record))
        expire_due(clock)
    expire_due(T0 + 400_000)
    return out


@pytest.mark.parametrize("seed", [1, 2, 5])
def test_the_timer_index_misses_no_deadline(seed: int) -> None:
    """Timers cover every deadline although a moved-later deadline adds no timer entry."""
    records = arrivals(seed)
    expected = per_alert(without_timers(records))

    for tick_ms in (1000, None):
        got, _runtime = live(records, seed, tick_ms)
        assert per_alert(got) == expected, tick_ms
    assert per_alert(replay(records)[0]) == expected
