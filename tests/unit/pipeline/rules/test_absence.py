"""Absence rules: fire ``after`` past an entity's last record, from a timer, and resolve with
its next record."""

from __future__ import annotations

from pipeline.rules.engine import AbsenceState, EngineState, RuleEngine, alert_fingerprint
from tests.unit.pipeline.rules.helpers import at, brief, feed, meas, rule

SILENT = rule(
    "absence",
    match={"source": "element", "metric": "temperature", "entity": "*"},
    after="15m",
    grace="30s",
)


def temp(value: float, seconds: float, entity: str = "sensor-1") -> object:
    return meas(value, seconds, entity=entity, metric="temperature", source="element", unit="C")


def key(entity: str = "sensor-1") -> str:
    return alert_fingerprint("r-absence", entity, {})


def test_fires_from_the_timer_with_the_deterministic_time() -> None:
    engine = RuleEngine([SILENT])
    state: dict[str, EngineState] = {}
    feed(engine, state, [temp(21.5, 0), temp(21.0, 60)])

    due = engine.deadline(key(), state[key()])
    assert due == at(60 + 900 + 30) + 1  # last seen + after, + 1 ms, + grace
    assert engine.expire(state, key(), due - 1) == []
    out = engine.expire(state, key(), due + 3_600_000)  # however late the tick comes

    assert brief(out) == [("r-absence", "firing", 960, 21.0)]
    (t,) = out
    assert t.summary == "r-absence: no temperature from sensor-1 for 15m"
    assert (t.entity, t.source, t.metric, t.labels) == ("sensor-1", "element", "temperature", {})
    assert engine.deadline(key(), state[key()]) is None  # fires once


def test_resolves_on_the_next_record() -> None:
    engine = RuleEngine([SILENT])
    state: dict[str, EngineState] = {}
    feed(engine, state, [temp(21.5, 0)])
    engine.expire(state, key(), at(2000))

    out = engine.evaluate(state, temp(19.0, 3000))

    assert brief(out) == [("r-absence", "resolved", 3000, 19.0)]
    assert out[0].summary == "r-absence: sensor-1 sends temperature again"
    entry = state[key()]
    assert isinstance(entry, AbsenceState)
    assert (entry.last_seen_ms, entry.firing_since_ms) == (at(3000), None)
    assert engine.deadline(key(), entry) == at(3000 + 900 + 30) + 1


def test_a_record_after_the_deadline_reports_the_silence_it_ends() -> None:
    engine = RuleEngine([SILENT])

    out = feed(engine, {}, [temp(21.5, 0), temp(19.0, 1000)])

    assert out == [("r-absence", "firing", 900, 21.5), ("r-absence", "resolved", 1000, 19.0)]


def test_a_record_exactly_after_the_silence_prevents_it() -> None:
    engine = RuleEngine([SILENT])

    assert feed(engine, {}, [temp(21.5, 0), temp(19.0, 900)]) == []


def test_records_keep_pushing_the_deadline() -> None:
    engine = RuleEngine([SILENT])
    state: dict[str, EngineState] = {}
    records = [temp(20, s) for s in range(0, 3600, 600)]

    assert feed(engine, state, records) == []
    assert engine.deadline(key(), state[key()]) == at(3000 + 930) + 1


def test_entities_are_tracked_apart_and_unseen_ones_never_fire() -> None:
    engine = RuleEngine([SILENT])
    state: dict[str, EngineState] = {}
    feed(engine, state, [temp(20, 0, "a"), temp(20, 600, "b")])

    assert sorted(brief(engine.expire(state, key("a"), at(1000)))) == [
        ("r-absence", "firing", 900, 20.0)
    ]
    assert engine.expire(state, key("b"), at(1000)) == []
    assert len(state) == 2


def test_late_records_are_counted_not_used() -> None:
    engine = RuleEngine([SILENT])
    state: dict[str, EngineState] = {}
    feed(engine, state, [temp(20, 100)])

    feed(engine, state, [temp(20, 80), temp(99, 50)])  # 80 is within grace; 50 is not
    assert engine.counters["late"] == 1

    engine.expire(state, key(), at(2000))  # fired at 1000
    assert feed(engine, state, [temp(20, 990)]) == []  # cannot undo a silence already announced
    assert engine.counters["late"] == 2
