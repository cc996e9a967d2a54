"""State rules: a state equals a value, or changes from one value to another, held for
``for``; resolved when it leaves the value, after ``clear.for``."""

from __future__ import annotations

from pipeline.rules.engine import AlertState, EngineState, RuleEngine, alert_fingerprint
from tests.unit.pipeline.rules.helpers import at, brief, event, feed, rule

CONNECTOR = "NOR_01333/0"
KEY = alert_fingerprint("r-state", CONNECTOR, {})
CONNECTOR_ERROR = rule(
    "state",
    match={"source": "nobil", "state": "error", "entity": "NOR_*/*"},
    equals="error",
    for_="5m",
    grace="10s",
    severity="critical",
    labels={"team": "charging"},
    summary="{{ entity }} {{ metric }}={{ value }} (was {{ previous }}, expected {{ expected }})",
)


def test_connector_in_error_for_five_minutes_fires_from_a_timer() -> None:
    engine = RuleEngine([CONNECTOR_ERROR])
    state: dict[str, EngineState] = {}

    assert feed(engine, state, [event("error", 0, previous="ok")]) == []  # no further event
    due = engine.deadline(KEY, state[KEY])
    assert due == at(300 + 10) + 1
    assert engine.expire(state, KEY, due - 1) == []
    (t,) = engine.expire(state, KEY, due)

    assert (t.state, t.ts_ms, t.value, t.entity, t.metric) == (
        "firing",
        at(300),
        "error",
        CONNECTOR,
        "error",
    )
    assert t.summary == "NOR_01333/0 error=error (was ok, expected error)"
    assert (t.severity, t.labels, t.source, t.stream) == (
        "critical",
        {"team": "charging"},
        "nobil",
        "nobil-no",
    )

    (back,) = engine.evaluate(state, event("ok", 400, previous="error"))
    assert (back.state, back.ts_ms, back.value) == ("resolved", at(400), "ok")
    assert back.summary == "NOR_01333/0 error=ok (was error, expected error)"


def test_error_cleared_within_five_minutes_never_fires() -> None:
    engine = RuleEngine([CONNECTOR_ERROR])
    state: dict[str, EngineState] = {}

    assert feed(engine, state, [event("error", 0), event("ok", 299)]) == []
    entry = state[KEY]
    assert isinstance(entry, AlertState)
    assert entry.phase is None
    assert entry.seen == "ok"  # remembered for the next event's previous state
    assert engine.deadline(KEY, entry) is None


def test_an_event_after_the_deadline_applies_it_first() -> None:
    engine = RuleEngine([CONNECTOR_ERROR])

    out = feed(engine, {}, [event("error", 0, previous="ok"), event("ok", 600)])

    assert out == [("r-state", "firing", 300, "error"), ("r-state", "resolved", 600, "ok")]


def test_equals_without_for_fires_at_once_and_previous_is_remembered() -> None:
    offline = rule(
        "state",
        match={"source": "valtronics", "state": "status"},
        equals="offline",
        summary="{{ value }} after {{ previous }}",
    )
    engine = RuleEngine([offline])
    state: dict[str, EngineState] = {}
    records = [
        event("online", 0, name="status", source="valtronics", entity="dev-7"),
        event("offline", 10, name="status", source="valtronics", entity="dev-7"),
    ]

    out = [t for r in records for t in engine.evaluate(state, r)]

    assert brief(out) == [("r-state", "firing", 10, "offline")]
    assert out[0].summary == "offline after online"  # the event had no previous: remembered


def test_changes_from_to_needs_that_very_change() -> None:
    went_offline = rule(
        "state",
        match={"state": "status"},
        changes={"from": "online", "to": "offline"},
        for_="1m",
    )
    engine = RuleEngine([went_offline])

    def run(*values: tuple[str, float]) -> list[object]:
        return feed(
            engine, {}, [event(v, s, name="status", source="valtronics") for v, s in values]
        )

    assert run(("unknown", 0), ("offline", 10), ("offline", 200)) == []  # not from online
    assert run(("online", 0), ("offline", 10), ("offline", 100)) == [
        ("r-state", "firing", 70, "offline")
    ]
    assert run(("online", 0), ("offline", 10), ("online", 30), ("offline", 40), ("x", 200)) == [
        ("r-state", "firing", 100, "offline"),  # the second online -> offline counts afresh
        ("r-state", "resolved", 200, "x"),
    ]


def test_changes_uses_the_events_previous_when_given() -> None:
    rule_ = rule("state", match={"state": "error"}, changes={"from": "ok", "to": "error"})
    engine = RuleEngine([rule_])

    assert feed(engine, {}, [event("error", 0, previous="ok")]) == [
        ("r-state", "firing", 0, "error")
    ]


def test_clear_for_keeps_a_flapping_connector_firing() -> None:
    flapping = rule("state", equals="error", clear={"for": "2m"})
    engine = RuleEngine([flapping])
    state: dict[str, EngineState] = {}

    out = feed(
        engine, state, [event("error", 0), event("ok", 60), event("error", 90), event("ok", 100)]
    )

    assert out == [("r-state", "firing", 0, "error")]
    assert brief(engine.expire(state, KEY, at(400))) == [("r-state", "resolved", 220, "ok")]


def test_older_state_events_are_late() -> None:
    engine = RuleEngine([CONNECTOR_ERROR])
    state: dict[str, EngineState] = {}
    feed(engine, state, [event("ok", 100)])

    assert feed(engine, state, [event("error", 50)]) == []

    assert engine.counters["late"] == 1
    entry = state[KEY]
    assert isinstance(entry, AlertState)
    assert (entry.seen, entry.phase) == ("ok", None)


def test_state_rules_ignore_measurements_and_threshold_rules_ignore_states() -> None:
    from tests.unit.pipeline.rules.helpers import meas

    engine = RuleEngine([CONNECTOR_ERROR, rule(match={"metric": "error"})])

    assert engine.candidates(meas(1, 0, metric="error", source="nobil")) == ["r-threshold"]
    assert engine.candidates(event("error", 0)) == ["r-state"]


def test_timers_keep_the_remembered_state() -> None:
    engine = RuleEngine([CONNECTOR_ERROR])
    state: dict[str, EngineState] = {}
    feed(engine, state, [event("ok", 0), event("error", 10)])  # previous states not sent
    engine.expire(state, KEY, at(400))  # fires at 310 from the timer

    (back,) = engine.evaluate(state, event("ok", 500))

    assert back.summary == "NOR_01333/0 error=ok (was error, expected error)"
    entry = state[KEY]
    assert isinstance(entry, AlertState)
    assert (entry.phase, entry.seen, entry.seen_before) == (None, "ok", "error")


def test_a_timer_resolving_a_state_alert_keeps_the_entry() -> None:
    flapping = rule("state", equals="error", clear={"for": "2m"})
    engine = RuleEngine([flapping])
    state: dict[str, EngineState] = {}
    feed(engine, state, [event("error", 0), event("ok", 60)])

    engine.expire(state, KEY, at(400))

    entry = state[KEY]
    assert isinstance(entry, AlertState)
    assert (entry.phase, entry.seen) == (None, "ok")
