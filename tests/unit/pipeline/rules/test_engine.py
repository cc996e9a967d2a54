"""Rule engine, threshold rules and what all types share: lifecycle, hysteresis, timers,
lateness, matching, the index, templates.

Adapted from the first engine (deliberate API changes): entries are now ``EngineState`` structs
(``AlertState`` carries rule, hash, subject, ``phase`` and ``floor_ms``), the per-rule hook the
index test spies on is ``_evaluate_rule``, and state round-trips as msgpack (test_state.py).
"""

from __future__ import annotations

import hashlib
import logging
import math
from collections.abc import Sequence
from typing import Any

import pytest
from pydantic import TypeAdapter

from pipeline.models import AlertTransition, Measurement
from pipeline.rules.engine import (
    AlertState,
    EngineState,
    Phase,
    RuleEngine,
    Subject,
    alert_fingerprint,
)
from pipeline.rules.evaluators import RESOLVED_FLOOR_KEPT_MS
from pipeline.rules.schema import Rule, ThresholdRule
from pipeline.rules.state import IDENTITY_VERSION
from tests.unit.pipeline.rules.helpers import T0, event

ADAPTER: TypeAdapter[ThresholdRule] = TypeAdapter(Rule)


def rule(**overrides: Any) -> ThresholdRule:
    base: dict[str, Any] = {
        "name": "power-high",
        "type": "threshold",
        "match": {"source": "aliunid", "metric": "sys.kW"},
        "condition": {"op": ">", "value": 40},
        "summary": "{{ entity }} {{ state }} {{ value }}",
        "grace": "0s",
    }
    return ADAPTER.validate_python({**base, **overrides})


def meas(
    value: float,
    ts_ms: int,
    *,
    entity: str = "mp-1",
    metric: str = "sys.kW",
    source: str = "aliunid",
    stream: str = "ev-hub",
    labels: dict[str, str] | None = None,
) -> Measurement:
    return Measurement(source, stream, entity, metric, float(value), "kW", ts_ms, labels or {})


class RecordingState(dict[str, EngineState]):
    """A dict that records every write, to check the engine writes only on change."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[tuple[str, str]] = []

    def __setitem__(self, key: str, value: EngineState) -> None:
        assert isinstance(value, AlertState)
        self.writes.append(("set", value.phase.state if value.phase else "ended"))
        super().__setitem__(key, value)

    def __delitem__(self, key: str) -> None:
        self.writes.append(("del", key))
        super().__delitem__(key)


def live(state: dict[str, EngineState]) -> dict[str, EngineState]:
    """The entries of alerts in progress: without those an ended alert keeps for a while,
    holding only its floor (so replayed records are late, see ``test_redelivery``)."""
    return {
        k: v
        for k, v in state.items()
        if not (isinstance(v, AlertState) and v.phase is None and v.seen is None)
    }


def run(
    engine: RuleEngine,
    state: dict[str, EngineState],
    events: Sequence[tuple[float, int]],
    **kw: Any,
) -> list[tuple[int, str]]:
    """Feed (value, seconds after T0) events; return (seconds, state) of each transition."""
    out: list[tuple[int, str]] = []
    for value, seconds in events:
        for transition in engine.evaluate(state, meas(value, T0 + seconds * 1000, **kw)):
            out.append((seconds, transition.state))
    return out


# --- lifecycle --------------------------------------------------------------------------------


def test_instant_fire_and_resolve() -> None:
    engine = RuleEngine([rule()])
    state: dict[str, EngineState] = {}

    fired = engine.evaluate(state, meas(41.5, T0))
    steady = engine.evaluate(state, meas(45, T0 + 1000))
    resolved = engine.evaluate(state, meas(40, T0 + 2000))

    fingerprint = alert_fingerprint("power-high", "mp-1", {})
    assert fired == [
        AlertTransition(
            fingerprint=fingerprint,
            rule="power-high",
            state="firing",
            entity="mp-1",
            source="aliunid",
            stream="ev-hub",
            metric="sys.kW",
            value=41.5,
            severity="warning",
            ts_ms=T0,
            summary="mp-1 firing 41.5",
            description="",
            channels=("console",),
            labels={},
        )
    ]
    assert steady == []
    assert [(t.state, t.value, t.ts_ms, t.summary) for t in resolved] == [
        ("resolved", 40.0, T0 + 2000, "mp-1 resolved 40.0")
    ]
    assert resolved[0].fingerprint == fingerprint
    assert live(state) == {}
    kept = state[fingerprint]
    assert isinstance(kept, AlertState) and kept.floor_ms == T0 + 2000
    # The ended alert's floor is dropped once no redelivery can reach back that far.
    assert engine.deadline(fingerprint, kept) == T0 + 2000 + RESOLVED_FLOOR_KEPT_MS
    assert engine.expire(state, fingerprint, T0 + 2000 + RESOLVED_FLOOR_KEPT_MS) == []
    assert state == {}


def test_for_keeps_pending_until_held_long_enough() -> None:
    engine = RuleEngine([rule(**{"for": "2s"})])
    state: dict[str, EngineState] = {}

    assert run(engine, state, [(41, 0), (42, 1)]) == []
    (entry,) = state.values()
    assert entry == AlertState(
        "power-high",
        engine.rule_hashes()["power-high"],
        Subject("mp-1", "aliunid", "ev-hub", "sys.kW", "kW", {}, identity_version=IDENTITY_VERSION),
        Phase("pending", T0, 41.0),
        floor_ms=T0,
    )

    assert run(engine, state, [(43, 2)]) == [(2, "firing")]
    (entry,) = state.values()
    assert isinstance(entry, AlertState) and entry.phase is not None
    assert entry.phase.state == "firing"
    assert entry.phase.since_ms == T0 + 2000


def test_pending_that_breaks_never_fires_and_restarts() -> None:
    engine = RuleEngine([rule(**{"for": "2s"})])
    state: dict[str, EngineState] = {}

    assert run(engine, state, [(41, 0), (41, 1), (39, 2)]) == []
    assert live(state) == {}
    assert run(engine, state, [(41, 3), (41, 4)]) == []  # only 1 s since the restart
    assert run(engine, state, [(41, 5)]) == [(5, "firing")]


def test_late_event_does_not_count_towards_for() -> None:
    engine = RuleEngine([rule(**{"for": "2s"})])
    state: dict[str, EngineState] = {}

    assert run(engine, state, [(41, 10), (41, 5), (41, 11)]) == []
    assert run(engine, state, [(41, 12)]) == [(12, "firing")]
    assert engine.counters["late"] == 1  # the record at 5 s, older than the pending start


def test_steady_state_repeats_nothing_and_writes_nothing() -> None:
    engine = RuleEngine([rule(**{"for": "1s"})])
    state = RecordingState()

    above = [(41.0 + i % 3, i) for i in range(100)]
    below = [(10.0, 100 + i) for i in range(100)]

    assert run(engine, state, above + below) == [(1, "firing"), (100, "resolved")]
    assert state.writes == [
        ("set", "pending"),
        ("set", "firing"),
        ("set", "ended"),
    ]


def test_hysteresis_holds_firing_between_thresholds() -> None:
    engine = RuleEngine([rule(clear={"condition": {"op": "<", "value": 35}})])
    state: dict[str, EngineState] = {}

    events = [(41, 0), (38, 1), (36, 2), (39, 3), (34.9, 4), (38, 5), (41, 6)]

    assert run(engine, state, events) == [(0, "firing"), (4, "resolved"), (6, "firing")]


def test_clear_for_needs_clear_condition_to_hold() -> None:
    engine = RuleEngine([rule(clear={"condition": {"op": "<", "value": 35}, "for": "5s"})])
    state = RecordingState()

    events = [(41, 0), (30, 1), (30, 3), (38, 4), (30, 5), (30, 9)]
    assert run(engine, state, events) == [(0, "firing")]  # interrupted at 4 s, restarted at 5 s

    assert run(engine, state, [(30, 10)]) == [(10, "resolved")]
    assert [w[1] for w in state.writes] == ["firing", "firing", "firing", "firing", "ended"]
    assert live(state) == {}


def test_default_clear_with_its_own_for() -> None:
    engine = RuleEngine([rule(clear={"for": "2s"})])
    state: dict[str, EngineState] = {}

    events = [(41, 0), (40, 1), (40, 2), (40, 3)]

    assert run(engine, state, events) == [(0, "firing"), (3, "resolved")]


def test_overlapping_clear_condition_cannot_resolve_while_firing_condition_holds() -> None:
    engine = RuleEngine([rule(clear={"condition": {"op": ">", "value": 30}})])
    state: dict[str, EngineState] = {}

    assert run(engine, state, [(41, 0), (50, 1), (35, 2)]) == [(0, "firing"), (2, "resolved")]


def test_nan_is_ignored() -> None:
    engine = RuleEngine([rule()])
    state: dict[str, EngineState] = {}

    assert run(engine, state, [(41, 0), (math.nan, 1)]) == [(0, "firing")]
    assert len(state) == 1


@pytest.mark.parametrize(
    ("condition", "events", "expected"),
    [
        (
            {"op": "between", "low": 10, "high": 20},
            [(5, 0), (10, 1), (20, 2), (20.5, 3), (15, 4)],
            [(1, "firing"), (3, "resolved"), (4, "firing")],
        ),
        (
            {"op": "outside", "low": 210, "high": 250},
            [(230, 0), (250, 1), (250.1, 2), (250, 3), (209, 4)],
            [(2, "firing"), (3, "resolved"), (4, "firing")],
        ),
        ({"op": "==", "value": 1}, [(0, 0), (1, 1), (1.5, 2)], [(1, "firing"), (2, "resolved")]),
        ({"op": "!=", "value": 1}, [(1, 0), (2, 1), (1, 2)], [(1, "firing"), (2, "resolved")]),
        ({"op": ">=", "value": 5}, [(4, 0), (5, 1), (4.9, 2)], [(1, "firing"), (2, "resolved")]),
        ({"op": "<", "value": 5}, [(5, 0), (4.9, 1), (5, 2)], [(1, "firing"), (2, "resolved")]),
        ({"op": "<=", "value": 5}, [(6, 0), (5, 1), (5.1, 2)], [(1, "firing"), (2, "resolved")]),
    ],
)
def test_operators(
    condition: dict[str, Any],
    events: Sequence[tuple[float, int]],
    expected: list[tuple[int, str]],
) -> None:
    engine = RuleEngine([rule(condition=condition)])

    assert run(engine, {}, events) == expected


# --- matching ---------------------------------------------------------------------------------


def test_labels_must_match_and_separate_alerts() -> None:
    engine = RuleEngine(
        [rule(match={"source": "aliunid", "metric": "l1.V", "labels": {"phase": "R"}})]
    )
    state: dict[str, EngineState] = {}

    other_phase = engine.evaluate(state, meas(300, T0, metric="l1.V", labels={"phase": "S"}))
    no_labels = engine.evaluate(state, meas(300, T0, metric="l1.V"))
    r1 = engine.evaluate(state, meas(300, T0, metric="l1.V", labels={"phase": "R"}))
    r2 = engine.evaluate(state, meas(300, T0, metric="l1.V", labels={"phase": "R", "x": "1"}))

    assert other_phase == []
    assert no_labels == []
    assert len(r1) == 1
    assert len(r2) == 1
    assert r1[0].fingerprint != r2[0].fingerprint
    assert r2[0].labels == {"phase": "R", "x": "1"}


def test_entity_and_stream_globs() -> None:
    engine = RuleEngine(
        [rule(match={"source": "aliunid", "metric": "sys.kW", "entity": "mp-?", "stream": "ev-*"})]
    )

    def fires(**kw: Any) -> bool:
        return bool(engine.evaluate({}, meas(50, T0, **kw)))

    assert fires(entity="mp-1", stream="ev-hub")
    assert fires(entity="mp-2", stream="ev-")
    assert not fires(entity="mp-10", stream="ev-hub")
    assert not fires(entity="MP-1", stream="ev-hub")  # case-sensitive
    assert not fires(entity="mp-1", stream="office")


def test_exact_entity_without_glob_characters() -> None:
    engine = RuleEngine([rule(match={"metric": "sys.kW", "entity": "mp-1"})])

    assert engine.evaluate({}, meas(50, T0, entity="mp-1"))
    assert not engine.evaluate({}, meas(50, T0, entity="mp-11"))


def test_entities_are_independent() -> None:
    engine = RuleEngine([rule()])
    state: dict[str, EngineState] = {}

    assert run(engine, state, [(50, 0)], entity="a") == [(0, "firing")]
    assert run(engine, state, [(50, 0)], entity="b") == [(0, "firing")]
    assert run(engine, state, [(10, 1)], entity="a") == [(1, "resolved")]
    assert len(live(state)) == 1


def test_index_skips_rules_that_cannot_match() -> None:
    rules = [
        rule(name="aliunid-kw"),
        rule(name="aliunid-v", match={"source": "aliunid", "metric": "l1.V"}),
        rule(name="nobil-kw", match={"source": "nobil", "metric": "sys.kW"}),
        rule(name="any-kw", match={"metric": "sys.kW"}),
        rule(name="any-v", match={"metric": "l1.V"}),
    ]
    engine = RuleEngine(rules)

    assert engine.candidates(meas(1, T0)) == ["aliunid-kw", "any-kw"]
    assert engine.candidates(meas(1, T0, source="nobil")) == ["nobil-kw", "any-kw"]
    assert engine.candidates(meas(1, T0, source="other", metric="l1.V")) == ["any-v"]
    assert engine.candidates(meas(1, T0, metric="sys.Hz")) == []

    fired = engine.evaluate({}, meas(50, T0))
    assert [t.rule for t in fired] == ["aliunid-kw", "any-kw"]


def test_many_rules_on_other_metrics_are_never_evaluated(monkeypatch: pytest.MonkeyPatch) -> None:
    rules = [rule(name=f"r{i}", match={"metric": f"m{i}"}) for i in range(500)]
    rules.append(rule(name="target"))
    engine = RuleEngine(rules)
    stepped: list[str] = []
    original = RuleEngine._evaluate_rule

    def spy(self: RuleEngine, ev: Any, *args: Any) -> None:
        stepped.append(ev.name)
        original(self, ev, *args)

    monkeypatch.setattr(RuleEngine, "_evaluate_rule", spy)

    engine.evaluate({}, meas(50, T0))

    assert stepped == ["target"]


# --- transition contents ----------------------------------------------------------------------


def test_transition_context_and_labels() -> None:
    engine = RuleEngine(
        [
            rule(
                name="volt",
                match={"metric": "l1.V"},
                condition={"op": "outside", "low": 210, "high": 250},
                severity="critical",
                labels={"team": "energy", "phase": "override"},
                channels=["console", "email"],
                summary=(
                    "{{ rule }}|{{ entity }}|{{ source }}|{{ stream }}|{{ metric }}|{{ value }}"
                    "|{{ unit }}|{{ threshold }}|{{ low }}|{{ high }}|{{ labels.phase }}"
                    "|{{ state }}|{{ ts_ms }}|{{ severity }}"
                ),
                description="{{ op }} {{ labels.team }}",
            )
        ]
    )

    (t,) = engine.evaluate({}, meas(260, T0, metric="l1.V", labels={"phase": "R", "meter": "m1"}))

    assert t.summary == (
        f"volt|mp-1|aliunid|ev-hub|l1.V|260.0|kW|210..250|210|250|override|firing|{T0}|critical"
    )
    assert t.description == "outside energy"
    assert t.labels == {"phase": "override", "meter": "m1", "team": "energy"}
    assert t.channels == ("console", "email")
    assert t.severity == "critical"
    assert t.fingerprint == alert_fingerprint("volt", "mp-1", {"phase": "R", "meter": "m1"})


def test_comparison_threshold_in_context() -> None:
    engine = RuleEngine([rule(summary="{{ value }} > {{ threshold }}")])

    (t,) = engine.evaluate({}, meas(41, T0))

    assert t.summary == "41.0 > 40"


@pytest.mark.parametrize(
    "template",
    [
        "{{ ''.__class__.__mro__ }}",
        "{{ cycler.__init__.__globals__ }}",
        "{{ labels.__class__.__init__.__globals__ }}",
    ],
)
def test_template_escape_yields_fallback(template: str) -> None:
    engine = RuleEngine([rule(summary=template, description=template)])

    (t,) = engine.evaluate({}, meas(41, T0))

    assert t.summary == "[template error in rule 'power-high': SecurityError]"
    assert t.description == t.summary
    assert t.state == "firing"  # the alert still goes out


def test_fingerprint_is_stable_and_label_order_free() -> None:
    expected = hashlib.blake2b(b"r\x1fe\x1fa\x1f1\x1fb\x1f2", digest_size=8).hexdigest()

    assert alert_fingerprint("r", "e", {"b": "2", "a": "1"}) == expected
    assert alert_fingerprint("r", "e", {"a": "1", "b": "2"}) == expected
    assert alert_fingerprint("r", "e", {}) != alert_fingerprint("r", "e2", {})
    assert len(expected) == 16


def test_simulated_aliunid_cycle_with_shipped_rule() -> None:
    from pathlib import Path

    from pipeline.rules.loader import load_rules

    rules = load_rules([Path(__file__).parents[4] / "rules" / "aliunid.yaml"])
    engine = RuleEngine(rules)
    state: dict[str, EngineState] = {}
    # measuring point 0: ~10 s above 40 kW, then ~10 s below 30 kW, at 1 s interval, twice
    cycle = [(45.0, s) for s in range(10)] + [(25.0, s) for s in range(10, 20)]
    events = cycle + [(v, s + 20) for v, s in cycle]

    assert run(engine, state, events) == [
        (2, "firing"),
        (10, "resolved"),
        (22, "firing"),
        (30, "resolved"),
    ]


# --- deadlines and timers ---------------------------------------------------------------------


def key_of(name: str = "power-high", entity: str = "mp-1") -> str:
    return alert_fingerprint(name, entity, {})


def test_pending_fires_from_expire_with_the_deadline_time_and_starting_value() -> None:
    engine = RuleEngine([rule(**{"for": "2s"})])
    state: dict[str, EngineState] = {}
    engine.evaluate(state, meas(41, T0))
    key = key_of()

    due = engine.deadline(key, state[key])
    assert due == T0 + 2000 + 1  # deadline (inclusive) + 1 + grace 0s
    assert engine.expire(state, key, due - 1) == []  # nothing due yet: no change, no write
    (t,) = engine.expire(state, key, T0 + 60_000)  # the tick may come much later

    assert (t.state, t.ts_ms, t.value) == ("firing", T0 + 2000, 41.0)
    entry = state[key]
    assert isinstance(entry, AlertState) and entry.phase is not None
    assert entry.phase.state == "firing"
    assert engine.deadline(key, entry) is None


def test_grace_delays_the_due_time_not_the_transition_time() -> None:
    engine = RuleEngine([rule(**{"for": "2s", "grace": "30s"})])
    state: dict[str, EngineState] = {}
    engine.evaluate(state, meas(41, T0))
    key = key_of()

    assert engine.deadline(key, state[key]) == T0 + 2000 + 1 + 30_000
    assert [t.ts_ms for t in engine.expire(state, key, T0 + 32_001)] == [T0 + 2000]


def test_record_after_the_deadline_applies_it_first() -> None:
    engine = RuleEngine([rule(**{"for": "2s"})])
    state: dict[str, EngineState] = {}

    out = engine.evaluate(state, meas(41, T0)) + engine.evaluate(state, meas(10, T0 + 5000))

    assert [(t.state, t.ts_ms, t.value) for t in out] == [
        ("firing", T0 + 2000, 41.0),  # the condition held from 0 s to 5 s
        ("resolved", T0 + 5000, 10.0),
    ]


def test_straggler_before_an_applied_deadline_is_late_and_changes_nothing(
    caplog: pytest.LogCaptureFixture,
) -> None:
    engine = RuleEngine([rule(**{"for": "2s", "grace": "1s"})])
    state: dict[str, EngineState] = {}
    engine.evaluate(state, meas(41, T0))
    key = key_of()
    engine.expire(state, key, T0 + 3001)
    before = state[key]

    with caplog.at_level(logging.WARNING, logger="pipeline.rules.engine"):
        assert engine.evaluate(state, meas(10, T0 + 1500)) == []  # would have cancelled

    assert state[key] is before
    assert engine.counters["late"] == 1
    assert engine.late_by_rule == {"power-high": 1}
    (message,) = caplog.messages
    assert message.startswith("late record ignored rule=power-high entity=mp-1")
    assert f"ts_ms={T0 + 1500} floor_ms={T0 + 2001}" in message


def test_late_records_are_logged_first_then_every_thousandth(
    caplog: pytest.LogCaptureFixture,
) -> None:
    engine = RuleEngine([rule()])
    state: dict[str, EngineState] = {}
    engine.evaluate(state, meas(41, T0 + 10_000))

    with caplog.at_level(logging.WARNING, logger="pipeline.rules.engine"):
        for i in range(2500):
            engine.evaluate(state, meas(10, T0 + i))

    assert engine.counters["late"] == 2500
    assert len(caplog.records) == 3  # 1st, 1000th, 2000th


def test_clear_for_resolves_from_a_timer() -> None:
    engine = RuleEngine([rule(clear={"condition": {"op": "<", "value": 35}, "for": "1m"})])
    state: dict[str, EngineState] = {}
    engine.evaluate(state, meas(41, T0))
    engine.evaluate(state, meas(30, T0 + 5000))
    key = key_of()

    assert engine.deadline(key, state[key]) == T0 + 65_001
    (t,) = engine.expire(state, key, T0 + 65_001)

    assert (t.state, t.ts_ms, t.value) == ("resolved", T0 + 65_000, 30.0)
    assert key not in live(state)


def test_expire_of_a_missing_key_does_nothing() -> None:
    engine = RuleEngine([rule()])

    assert engine.expire({}, "nope", T0) == []


def test_candidates_index_state_events_by_state_name() -> None:
    state_rule = ADAPTER.validate_python(
        {
            "name": "err",
            "type": "state",
            "match": {"source": "nobil", "state": "error"},
            "equals": "error",
        }
    )
    any_source = ADAPTER.validate_python(
        {"name": "status", "type": "state", "match": {"state": "status"}, "equals": "offline"}
    )
    engine = RuleEngine([rule(), state_rule, any_source])

    assert engine.candidates(event("error", 0)) == ["err"]
    assert engine.candidates(event("offline", 0, name="status", source="valtronics")) == ["status"]
    assert engine.candidates(event("x", 0, name="sys.kW", source="aliunid")) == []
    assert engine.candidates(meas(1, T0, metric="error", source="nobil")) == []


def test_index_cost_does_not_grow_with_rules_of_every_type_that_cannot_match(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    others: list[Any] = []
    for i in range(100):
        others.append(rule(name=f"t{i}", match={"source": "aliunid", "metric": f"m{i}"}))
        others.append(
            ADAPTER.validate_python(
                {
                    "name": f"a{i}",
                    "type": "aggregate",
                    "match": {"metric": f"m{i}"},
                    "window": {"kind": "sliding", "size": "1m"},
                    "aggregate": "max",
                    "condition": {"op": ">", "value": 1},
                }
            )
        )
        others.append(
            ADAPTER.validate_python(
                {
                    "name": f"n{i}",
                    "type": "absence",
                    "match": {"source": "x", "metric": "sys.kW"},
                    "after": "1m",
                }
            )
        )
        others.append(
            ADAPTER.validate_python(
                {"name": f"s{i}", "type": "state", "match": {"state": "sys.kW"}, "equals": "x"}
            )
        )
    few = RuleEngine([rule(name="target")])
    many = RuleEngine([*others, rule(name="target")])
    calls: list[str] = []
    original = RuleEngine._evaluate_rule

    def spy(self: RuleEngine, ev: Any, *args: Any) -> None:
        calls.append(ev.name)
        original(self, ev, *args)

    monkeypatch.setattr(RuleEngine, "_evaluate_rule", spy)

    few.evaluate({}, meas(50, T0))
    counted_few = list(calls)
    calls.clear()
    many.evaluate({}, meas(50, T0))

    assert counted_few == calls == ["target"]
    assert many.candidates(meas(50, T0)) == ["target"]


@pytest.mark.parametrize("timer_first", [False, True])
def test_a_deadline_applied_by_a_record_or_a_timer_leaves_the_same_state(
    timer_first: bool,
) -> None:
    engine = RuleEngine([rule(**{"for": "2s", "grace": "5s"})])
    state: dict[str, EngineState] = {}
    out = engine.evaluate(state, meas(41, T0))
    if timer_first:
        out += engine.expire(state, key_of(), T0 + 7001)  # the tick beat the next record
    out += engine.evaluate(state, meas(45, T0 + 3000))  # still above: the alert stays
    out += engine.evaluate(state, meas(10, T0 + 1500))  # a straggler from before 2 s

    assert [(t.state, t.ts_ms) for t in out] == [("firing", T0 + 2000)]
    assert engine.counters["late"] == 1  # it cannot take back what was announced at 2 s
    entry = state[key_of()]
    assert isinstance(entry, AlertState)
    assert entry.floor_ms == T0 + 2001
