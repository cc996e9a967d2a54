"""Aggregate rules: every aggregate over every window kind, grace and lateness, timers,
``for`` and ``clear`` over window results, and what templates see."""

from __future__ import annotations

from typing import Any

import pytest

from pipeline.rules.engine import EngineState, RuleEngine, WindowState, alert_fingerprint
from pipeline.windows import PERCENTILE_BUDGET
from tests.unit.pipeline.rules.helpers import at, brief, feed, meas, rule

ALWAYS = {"op": "!=", "value": 123456}
WINDOWS = {
    "tumbling": {"kind": "tumbling", "size": "10s"},
    "hopping": {"kind": "hopping", "size": "10s", "hop": "5s"},
    "sliding": {"kind": "sliding", "size": "10s"},
}
SERIES = [(10, 1), (30, 3), (20, 6), (50, 12), (40, 14), (60, 21)]
KEY = alert_fingerprint("r-aggregate", "mp-1", {})


def aggregate_rule(window: str | dict[str, Any], how: Any, **fields: Any) -> Any:
    shape = WINDOWS[window] if isinstance(window, str) else window
    return rule("aggregate", window=shape, aggregate=how, **fields)


def run(rules: list[Any], series: list[tuple[float, float]]) -> list[Any]:
    return feed(RuleEngine(rules), {}, [meas(v, s) for v, s in series])


# The first window result of SERIES, as (event time in s, value): tumbling [0, 10) holds
# 10@1 30@3 20@6 and closes with the record at 12; hopping's first window [-5, 5) holds 10@1
# 30@3 and closes with the record at 6; sliding gives a result at every record (rate needs two).
FIRST_RESULT = {
    ("tumbling", "avg"): (10, 20.0),
    ("tumbling", "min"): (10, 10.0),
    ("tumbling", "max"): (10, 30.0),
    ("tumbling", "sum"): (10, 60.0),
    ("tumbling", "count"): (10, 3.0),
    ("tumbling", "last"): (10, 20.0),
    ("tumbling", "rate"): (10, 2.0),  # (20 - 10) / 5 s
    ("tumbling", 50): (10, 20.0),
    ("tumbling", 95): (10, 30.0),
    ("hopping", "avg"): (5, 20.0),
    ("hopping", "min"): (5, 10.0),
    ("hopping", "max"): (5, 30.0),
    ("hopping", "sum"): (5, 40.0),
    ("hopping", "count"): (5, 2.0),
    ("hopping", "last"): (5, 30.0),
    ("hopping", "rate"): (5, 10.0),  # (30 - 10) / 2 s
    ("hopping", 50): (5, 10.0),
    ("hopping", 95): (5, 30.0),
    ("sliding", "avg"): (1, 10.0),
    ("sliding", "min"): (1, 10.0),
    ("sliding", "max"): (1, 10.0),
    ("sliding", "sum"): (1, 10.0),
    ("sliding", "count"): (1, 1.0),
    ("sliding", "last"): (1, 10.0),
    ("sliding", "rate"): (3, 10.0),
    ("sliding", 50): (1, 10.0),
    ("sliding", 95): (1, 10.0),
}


@pytest.mark.parametrize(("kind", "how"), list(FIRST_RESULT))
def test_each_aggregate_over_each_window_kind(kind: str, how: str | int) -> None:
    spec: Any = {"percentile": how} if isinstance(how, int) else how
    engine = RuleEngine([aggregate_rule(kind, spec, condition=ALWAYS)])

    out = feed(engine, {}, [meas(v, s) for v, s in SERIES])

    seconds, value = FIRST_RESULT[(kind, how)]
    assert out[0] == ("r-aggregate", "firing", seconds, pytest.approx(value))


def test_tumbling_windows_are_evaluated_when_they_close() -> None:
    r = aggregate_rule("tumbling", "avg", condition={"op": ">", "value": 40})

    # [0,10) avg 20 no; [10,20) avg 45 fires at 20 (closed by the record at 21);
    # [20,30) avg 60 stays; [30,40) avg 10 resolves at 40 (closed by the record at 41)
    out = run([r], [*SERIES, (10, 35), (10, 41)])

    assert out == [
        ("r-aggregate", "firing", 20, 45.0),
        ("r-aggregate", "resolved", 40, 10.0),
    ]


def test_hopping_windows_overlap() -> None:
    r = aggregate_rule("hopping", "max", condition={"op": ">", "value": 40})

    # 50@3 sits in the windows [-5,5) and [0,10); [5,15) no longer holds it
    out = run([r], [(50, 3), (10, 7), (10, 12), (10, 17), (10, 22)])

    assert out == [("r-aggregate", "firing", 5, 50.0), ("r-aggregate", "resolved", 15, 10.0)]


def test_sliding_window_counts_records_of_the_last_size() -> None:
    r = aggregate_rule("sliding", "count", condition={"op": ">", "value": 2})

    out = run([r], [(1, 0), (1, 1), (1, 2), (1, 9), (1, 15)])

    # (-10, 2] holds 3; (5,15] holds the records at 9 and 15
    assert out == [("r-aggregate", "firing", 2, 3.0), ("r-aggregate", "resolved", 15, 2.0)]


def test_rate_is_change_per_second_of_a_counter() -> None:
    r = rule(
        "aggregate",
        match={"source": "aliunid", "metric": "sys.kWh"},
        window={"kind": "tumbling", "size": "1m"},
        aggregate="rate",
        condition={"op": ">", "value": 0.5},
    )
    engine = RuleEngine([r])
    records = [meas(v, s, metric="sys.kWh") for v, s in [(100, 0), (115, 15), (130, 30), (0, 61)]]

    assert feed(engine, {}, records) == [("r-aggregate", "firing", 60, 1.0)]


def test_rate_of_a_single_timestamp_gives_no_result() -> None:
    r = aggregate_rule("tumbling", "rate", condition=ALWAYS)

    assert run([r], [(10, 1), (20, 1), (5, 12)]) == []


def test_percentile_is_nearest_rank() -> None:
    r = aggregate_rule({"kind": "tumbling", "size": "1h"}, {"percentile": 95}, condition=ALWAYS)
    series = [(float(v), v) for v in range(100, 0, -1)]  # 1..100 in reverse time order

    out = run([r], [*series, (0, 3600)])

    assert out == [("r-aggregate", "firing", 3600, 95.0)]


def test_percentile_sample_is_bounded_and_close() -> None:
    r = aggregate_rule({"kind": "tumbling", "size": "1h"}, {"percentile": 50}, condition=ALWAYS)
    engine = RuleEngine([r])
    state: dict[str, EngineState] = {}
    values = [(i * 7919) % 10_000 + 1 for i in range(10_000)]  # 1..10000, shuffled

    for i, v in enumerate(values):
        engine.evaluate(state, meas(v, i * 0.3))
    entry = state[KEY]
    assert isinstance(entry, WindowState)
    (pane,) = entry.panes
    assert pane.count == 10_000
    assert len(pane.sample) > 1  # compacted: values of several weights
    assert sum(len(level) for level in pane.sample) <= PERCENTILE_BUDGET // 2 + 64

    (t,) = engine.evaluate(state, meas(0, 3600))
    assert isinstance(t.value, float)
    assert abs(t.value - 5000) <= 100  # within 1% of the exact median


def test_sliding_window_state_stays_bounded_at_high_rates() -> None:
    r = aggregate_rule(
        {"kind": "sliding", "size": "10s"}, "avg", condition={"op": ">", "value": 1000}
    )
    engine = RuleEngine([r])
    state: dict[str, EngineState] = {}

    for i in range(5000):  # 100 records per second
        engine.evaluate(state, meas(10 + i % 2, i / 100))
    entry = state[KEY]

    assert isinstance(entry, WindowState)
    assert len(entry.panes) <= 256
    assert sum(p.count for p in entry.panes) <= 1000 + 10  # (wm - 10 s, wm], one slot slack


def test_closed_window_state_is_dropped() -> None:
    engine = RuleEngine([aggregate_rule("tumbling", "sum", condition=ALWAYS)])
    state: dict[str, EngineState] = {}

    feed(engine, state, [meas(v, s) for v, s in SERIES])
    entry = state[KEY]

    assert isinstance(entry, WindowState)
    assert [p.start_ms for p in entry.panes] == [at(20)]  # only the open window's pane
    assert entry.floor_ms == at(20)  # end of the last window closed


# --- grace and late records -------------------------------------------------------------------


def test_grace_keeps_a_window_open_for_late_records() -> None:
    engine = RuleEngine(
        [aggregate_rule("tumbling", "avg", condition={"op": ">", "value": 50}, grace="2s")]
    )
    state: dict[str, EngineState] = {}

    out = feed(engine, state, [meas(10, 1), meas(50, 11), meas(100, 9), meas(50, 12)])

    # the record at 9 came after 11 but within grace: it counts in [0, 10), closed at 12
    assert out == [("r-aggregate", "firing", 10, 55.0)]
    assert engine.counters["late"] == 0


def test_record_for_a_closed_window_is_late_counted_and_ignored() -> None:
    engine = RuleEngine(
        [aggregate_rule("tumbling", "avg", condition={"op": ">", "value": 50}, grace="2s")]
    )
    state: dict[str, EngineState] = {}
    feed(engine, state, [meas(10, 1), meas(50, 12)])  # [0, 10) closed: avg 10
    before = state[KEY]

    assert feed(engine, state, [meas(1000, 9)]) == []

    assert state[KEY] is before
    assert engine.counters["late"] == 1
    assert engine.late_by_rule["r-aggregate"] == 1


def test_record_whose_window_would_already_have_closed_is_late() -> None:
    engine = RuleEngine([aggregate_rule("tumbling", "avg", condition=ALWAYS, grace="2s")])
    state: dict[str, EngineState] = {}

    feed(engine, state, [meas(10, 35), meas(10, 5)])  # [0,10) never opened, but 10+2 <= 35

    assert engine.counters["late"] == 1


def test_hopping_record_late_for_its_first_window_counts_nowhere() -> None:
    engine = RuleEngine([aggregate_rule("hopping", "count", condition=ALWAYS)])
    state: dict[str, EngineState] = {}
    feed(engine, state, [meas(1, 1), meas(1, 6)])  # closes [-5, 5)

    feed(engine, state, [meas(1, 4)])  # would belong to [-5,5) (closed) and [0,10) (open)

    assert engine.counters["late"] == 1
    entry = state[KEY]
    assert isinstance(entry, WindowState)
    assert sum(p.count for p in entry.panes) == 2  # the records at 1 and 6, not 4


def test_sliding_late_is_older_than_watermark_minus_grace() -> None:
    engine = RuleEngine(
        [aggregate_rule("sliding", "max", condition={"op": ">", "value": 40}, grace="3s")]
    )
    state: dict[str, EngineState] = {}

    out = feed(engine, state, [meas(10, 10), meas(50, 8), meas(99, 6)])

    assert out == [("r-aggregate", "firing", 10, 50.0)]  # 8 >= 10 - 3 counts, at the watermark
    assert engine.counters["late"] == 1  # 6 < 10 - 3


# --- timers, for and clear --------------------------------------------------------------------


def test_tumbling_window_closes_from_a_timer_without_further_records() -> None:
    engine = RuleEngine(
        [aggregate_rule("tumbling", "avg", condition={"op": ">", "value": 40}, grace="30s")]
    )
    state: dict[str, EngineState] = {}
    feed(engine, state, [meas(50, 1), meas(45, 8)])

    due = engine.deadline(KEY, state[KEY])
    assert due == at(10 + 30)
    assert engine.expire(state, KEY, due - 1) == []
    assert brief(engine.expire(state, KEY, due)) == [("r-aggregate", "firing", 10, 47.5)]
    entry = state[KEY]
    assert isinstance(entry, WindowState)
    assert entry.panes == ()
    assert engine.deadline(KEY, entry) is None


def test_for_counts_window_results_and_fires_from_a_timer() -> None:
    r = aggregate_rule("tumbling", "avg", condition={"op": ">", "value": 40}, for_="20s")
    engine = RuleEngine([r])
    state: dict[str, EngineState] = {}

    assert feed(engine, state, [meas(50, 1), meas(50, 11)]) == []  # result at 10: pending
    assert feed(engine, state, [meas(50, 21)]) == []  # result at 20: still pending
    # no more records: the window [20, 30) is due at 30 (before the for deadline, due at
    # 30 + 1 ms); its result at exactly 10 + 20 s confirms the pending alert
    due = engine.deadline(KEY, state[KEY])
    assert due == at(30)
    assert brief(engine.expire(state, KEY, due)) == [("r-aggregate", "firing", 30, 50.0)]


def test_pending_fires_from_timer_when_windows_stop() -> None:
    r = aggregate_rule("tumbling", "avg", condition={"op": ">", "value": 40}, for_="20s")
    engine = RuleEngine([r])
    state: dict[str, EngineState] = {}
    feed(engine, state, [meas(50, 1)])

    out = engine.expire(state, KEY, at(60))

    assert brief(out) == [("r-aggregate", "firing", 30, 50.0)]  # result at 10 held for 20 s


def test_clear_with_its_own_for_over_windows() -> None:
    r = aggregate_rule(
        "tumbling",
        "avg",
        condition={"op": ">", "value": 40},
        clear={"condition": {"op": "<", "value": 35}, "for": "15s"},
    )
    series = [(50, 1), (38, 11), (30, 21), (39, 31), (30, 41), (30, 51), (30, 61)]

    engine = RuleEngine([r])
    state: dict[str, EngineState] = {}

    # results: 50 at 10 fires; 38 at 20 is between the thresholds; 30 at 30 starts clearing;
    # 39 at 40 interrupts it; 30 at 50 restarts it; 30 at 60 has held only 10 s
    assert feed(engine, state, [meas(v, s) for v, s in series]) == [
        ("r-aggregate", "firing", 10, 50.0)
    ]
    # no further record: the clear deadline 50 + 15 s comes before the window [60, 70) closes
    assert brief(engine.expire(state, KEY, at(80))) == [("r-aggregate", "resolved", 65, 30.0)]


# --- transitions ------------------------------------------------------------------------------


def test_templates_see_aggregate_and_window() -> None:
    r = aggregate_rule(
        "hopping",
        {"percentile": 99.9},
        condition={"op": ">", "value": 5},
        severity="critical",
        labels={"team": "energy"},
        summary=(
            "{{ aggregate }}|{{ window }}|{{ window_size }}|{{ window_start_ms }}|"
            "{{ window_end_ms }}|{{ threshold }}|{{ value }}|{{ type }}"
        ),
        description="{{ state }} {{ labels.team }} {{ unit }}",
    )

    t = None
    engine = RuleEngine([r])
    state: dict[str, EngineState] = {}
    for record in [meas(10, 1), meas(10, 6)]:
        for transition in engine.evaluate(state, record):
            t = transition

    assert t is not None
    assert t.summary == f"p99.9|hopping|10s|{at(-5)}|{at(5)}|5|10.0|aggregate"
    assert t.description == "firing energy kW"
    assert (t.severity, t.labels, t.metric, t.ts_ms) == (
        "critical",
        {"team": "energy"},
        "sys.kW",
        at(5),
    )


def test_default_summary_names_the_aggregate() -> None:
    r = aggregate_rule("sliding", "max", condition={"op": ">", "value": 5})

    (t,) = RuleEngine([r]).evaluate({}, meas(10, 1))

    assert t.summary == "r-aggregate: mp-1 max of sys.kW = 10.0 kW"


def test_entities_have_separate_windows() -> None:
    r = aggregate_rule("tumbling", "sum", condition={"op": ">", "value": 15})
    engine = RuleEngine([r])
    state: dict[str, EngineState] = {}
    records = [
        meas(10, 1, entity="a"),
        meas(10, 2, entity="b"),
        meas(10, 3, entity="a"),
        meas(0, 11, entity="a"),
        meas(0, 11, entity="b"),
    ]

    out = [(t.entity, t.state, t.value) for r_ in records for t in engine.evaluate(state, r_)]

    assert out == [("a", "firing", 20.0)]
    assert len(state) == 2
