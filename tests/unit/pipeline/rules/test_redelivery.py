"""Redelivery (at-least-once): records the engine already applied come again after a crash.

Aggregate rules must not count them twice; threshold, state and absence rules are idempotent
by construction. Every record has an explicit event time (``at(seconds)`` is epoch ms).
"""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from pipeline.models import Measurement
from pipeline.rules.engine import EngineState, RuleEngine, WindowState, alert_fingerprint
from pipeline.rules.state import decode_state, encode_state
from pipeline.windows import MAX_SEEN_KEYS
from tests.unit.pipeline.rules.helpers import at, event, feed, meas, rule

KEY = alert_fingerprint("r-aggregate", "mp-1", {})
WINDOWS = {
    "tumbling": {"kind": "tumbling", "size": "10s"},
    "hopping": {"kind": "hopping", "size": "10s", "hop": "5s"},
    "sliding": {"kind": "sliding", "size": "10s"},
}
# (value, seconds): mostly in order, one record out of order within a grace of 3 s (at 9.5)
SERIES = [
    (10, 1),
    (60, 2),
    (30, 4),
    (90, 6),
    (20, 9),
    (70, 11),
    (80, 12),
    (50, 9.5),
    (40, 14),
    (10, 17),
    (100, 19),
    (5, 23),
    (5, 26),
    (60, 29),
    (90, 33),
    (10, 38),
    (10, 45),
]
CONDITIONS: dict[Any, dict[str, Any]] = {
    "avg": {"op": ">", "value": 45},
    "sum": {"op": ">", "value": 150},
    "count": {"op": ">", "value": 3},
    "rate": {"op": ">", "value": 3},
    "max": {"op": ">", "value": 85},
    50: {"op": ">", "value": 40},
    95: {"op": ">", "value": 85},
}
CASES = [(kind, how) for kind in WINDOWS for how in CONDITIONS]


def aggregate_rule(kind: str, how: Any, grace: str = "3s") -> Any:
    spec: Any = {"percentile": how} if isinstance(how, int) else how
    return rule(
        "aggregate", window=WINDOWS[kind], aggregate=spec, condition=CONDITIONS[how], grace=grace
    )


def records(series: list[tuple[float, float]]) -> list[Measurement]:
    return [meas(v, s) for v, s in series]


def once(rules: list[Any], recs: list[Any]) -> tuple[list[Any], dict[str, EngineState]]:
    state: dict[str, EngineState] = {}
    return feed(RuleEngine(rules), state, recs), state


# --- the repro ----------------------------------------------------------------------------------


def test_repro_tumbling_avg_fed_twice_resolves_like_once() -> None:
    r = rule(
        "aggregate",
        window={"kind": "tumbling", "size": "1s"},
        aggregate="avg",
        condition={"op": ">", "value": 40},
    )
    # ten high readings in [0, 1 s), then low ones: [1 s, 2 s) avg 30 resolves at 2 s
    high = [meas(50, 0.1 * i) for i in range(10)]
    low = [meas(v, s) for v, s in [(60, 1.0), (30, 1.2), (0, 1.5), (30, 2.1), (30, 3.1)]]
    expected = [("r-aggregate", "firing", 1.0, 50.0), ("r-aggregate", "resolved", 2.0, 30.0)]
    engine = RuleEngine([r])
    state: dict[str, EngineState] = {}

    assert feed(RuleEngine([r]), {}, [*high, *low]) == expected
    # a crash after the 60 at 1.0 s: the readings since the committed offset come again
    out = feed(engine, state, [*high, low[0]])
    out += feed(engine, state, [*high[5:], low[0], *low[1:]])

    assert out == expected
    assert engine.counters["duplicate"] == 1  # the 60 at 1.0 s; the high ones are late
    assert engine.counters["late"] == 5


# --- every aggregate over every window kind ---------------------------------------------------


@pytest.mark.parametrize(("kind", "how"), CASES)
def test_each_record_delivered_twice_changes_nothing(kind: str, how: Any) -> None:
    r = aggregate_rule(kind, how)
    expected, expected_state = once([r], records(SERIES))
    engine = RuleEngine([r])
    state: dict[str, EngineState] = {}

    out = feed(engine, state, [rec for rec in records(SERIES) for _ in range(2)])

    assert expected, "the series should make transitions"
    assert out == expected
    assert state == expected_state
    assert engine.counters["duplicate"] == len(SERIES)
    assert engine.counters["late"] == 0


@pytest.mark.parametrize(("kind", "how"), CASES)
@pytest.mark.parametrize(("crash", "committed"), [(5, 0), (8, 3), (12, 9), (16, 14)])
def test_replay_after_a_crash_gives_the_transitions_of_one_delivery(
    kind: str, how: Any, crash: int, committed: int
) -> None:
    r = aggregate_rule(kind, how)
    recs = records(SERIES)
    expected, expected_state = once([r], recs)
    engine = RuleEngine([r])
    state: dict[str, EngineState] = {}

    # applied up to `crash`, state stored; offsets committed only up to `committed`
    out = feed(engine, state, recs[:crash])
    out += feed(engine, state, recs[committed:])

    assert out == expected
    assert state == expected_state
    assert engine.counters["duplicate"] + engine.counters["late"] == crash - committed


@pytest.mark.parametrize("kind", list(WINDOWS))
def test_whole_series_fed_again_adds_nothing(kind: str) -> None:
    r = aggregate_rule(kind, "count")
    expected, expected_state = once([r], records(SERIES))
    engine = RuleEngine([r])
    state: dict[str, EngineState] = {}

    out = feed(engine, state, records(SERIES))
    out += feed(engine, state, records(SERIES))

    assert out == expected
    assert state == expected_state
    assert engine.counters["duplicate"] + engine.counters["late"] == len(SERIES)


# --- what is still counted, what is late ------------------------------------------------------


@pytest.mark.parametrize("kind", list(WINDOWS))
def test_distinct_out_of_order_records_within_grace_still_count(kind: str) -> None:
    r = aggregate_rule(kind, "count", grace="5s")
    engine = RuleEngine([r])
    state: dict[str, EngineState] = {}

    # 3 and 5 come after 8, within grace; 10@6 and 11@6 share a time but not a value
    feed(engine, state, records([(1, 1), (1, 8), (1, 3), (10, 6), (11, 6), (1, 5)]))

    entry = state[KEY]
    assert isinstance(entry, WindowState)
    assert sum(p.count for p in entry.panes) == 6
    assert engine.counters["duplicate"] == 0
    assert engine.counters["late"] == 0

    feed(engine, state, records([(1, 3), (11, 6), (1, 8)]))  # out-of-order duplicates

    assert sum(p.count for p in state[KEY].panes) == 6  # type: ignore[union-attr]
    assert engine.counters["duplicate"] == 3


def test_duplicate_after_its_window_closed_is_late_not_counted() -> None:
    r = aggregate_rule("tumbling", "count", grace="2s")
    engine = RuleEngine([r])
    state: dict[str, EngineState] = {}
    feed(engine, state, records([(1, 1), (1, 4), (1, 12)]))  # [0, 10) closes at 12: count 2
    before = state[KEY]

    assert feed(engine, state, records([(1, 4)])) == []

    assert state[KEY] is before
    assert engine.counters["late"] == 1
    assert engine.counters["duplicate"] == 0


def test_duplicate_counter_and_state_unchanged() -> None:
    r = aggregate_rule("sliding", "sum")
    engine = RuleEngine([r])
    state: dict[str, EngineState] = {}
    feed(engine, state, records([(10, 1), (20, 2), (30, 3)]))
    before = state[KEY]

    feed(engine, state, records([(20, 2), (30, 3), (10, 1)]))

    assert state[KEY] is before  # not even rewritten
    assert engine.counters["duplicate"] == 3
    assert engine.counters["late"] == 0


def test_seen_keys_are_pruned_as_the_watermark_advances() -> None:
    r = aggregate_rule("tumbling", "count", grace="2s")
    engine = RuleEngine([r])
    state: dict[str, EngineState] = {}

    feed(engine, state, [meas(1, s / 2) for s in range(200)])  # two a second for 100 s

    entry = state[KEY]
    assert isinstance(entry, WindowState)
    # only records that are not late yet: panes not closed at 99.5 s with grace 2 s: [90, 100)
    assert len(entry.seen) == 20


def test_past_the_key_cap_older_records_become_late_never_double_counted() -> None:
    r = rule(
        "aggregate",
        window={"kind": "tumbling", "size": "1h"},
        aggregate="count",
        condition={"op": ">", "value": 1e9},
    )
    engine = RuleEngine([r])
    state: dict[str, EngineState] = {}
    n = MAX_SEEN_KEYS + 100
    feed(engine, state, [meas(1, s) for s in range(n)])

    feed(engine, state, [meas(1, 0), meas(1, 99), meas(1, 100), meas(1, n - 1)])

    entry = state[KEY]
    assert isinstance(entry, WindowState)
    assert len(entry.seen) == MAX_SEEN_KEYS
    assert entry.seen_from_ms == at(100)
    assert sum(p.count for p in entry.panes) == n
    assert engine.counters["late"] == 2  # 0 and 99: keys dropped
    assert engine.counters["duplicate"] == 2  # 100 and n - 1: keys held


def test_window_state_written_before_seen_keys_still_decodes() -> None:
    engine = RuleEngine([aggregate_rule("tumbling", "count")])
    state: dict[str, EngineState] = {}
    feed(engine, state, records([(1, 1), (1, 2)]))
    entry = state[KEY]
    assert isinstance(entry, WindowState)
    old = msgspec.msgpack.decode(encode_state(entry))[:-2]  # without seen, seen_from_ms

    decoded = decode_state(msgspec.msgpack.encode(old))

    assert isinstance(decoded, WindowState)
    assert decoded.seen == ()
    assert decoded.seen_from_ms is None
    assert decoded.panes == entry.panes


# --- the other rule types are idempotent already ----------------------------------------------

THRESHOLD_SERIES = [(50, 1), (55, 2), (60, 4), (45, 7), (10, 8), (20, 9), (70, 12), (80, 20)]
STATE_SERIES = [("ok", 1), ("error", 2), ("error", 3), ("error", 9), ("ok", 10), ("error", 12)]


def other_rules() -> list[tuple[Any, list[Any]]]:
    return [
        (rule(for_="3s"), records(THRESHOLD_SERIES)),
        (
            rule(for_="2s", clear={"for": "2s"}),
            records(THRESHOLD_SERIES),
        ),
        (rule("state", for_="5s"), [event(v, s) for v, s in STATE_SERIES]),
        (
            rule("absence", after="5s", match={"source": "aliunid", "metric": "sys.kW"}),
            records(THRESHOLD_SERIES),
        ),
    ]


REPLAYS = [
    pytest.param(index, crash, committed)
    for index in range(4)
    for crash, committed in [(3, 0), (5, 2), (7, 4), (8, 5)]
]


@pytest.mark.parametrize(("index", "crash", "committed"), REPLAYS)
def test_threshold_state_and_absence_rules_are_idempotent_under_replay(
    index: int, crash: int, committed: int
) -> None:
    r, recs = other_rules()[index]
    expected, expected_state = once([r], recs)
    engine = RuleEngine([r])
    state: dict[str, EngineState] = {}

    out = feed(engine, state, recs[:crash])
    out += feed(engine, state, recs[committed:])

    assert expected, "the series should make transitions"
    assert out == expected
    assert state == expected_state
    assert engine.counters["duplicate"] == 0  # nothing to detect: replay changes nothing


@pytest.mark.parametrize("index", range(4))
def test_threshold_state_and_absence_rules_ignore_each_record_twice(index: int) -> None:
    r, recs = other_rules()[index]
    expected, expected_state = once([r], recs)
    state: dict[str, EngineState] = {}

    out = feed(RuleEngine([r]), state, [rec for rec in recs for _ in range(2)])

    assert out == expected
    assert state == expected_state
