"""The alert lifecycle with explicit times: every feature, no clock, no sleeps."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from pipeline.alerting.model import GroupState, notification_id
from pipeline.alerting.silences import (
    Silence,
    SilenceFileStore,
    StaticSilences,
    add_silence,
    expire_silence,
)
from pipeline.models import AlertTransition

MINUTE = 60_000
HOUR = 60 * MINUTE

Alert = Callable[..., AlertTransition]
Harness = Callable[..., Any]  # tests/unit/pipeline/alerting/conftest.py


def kinds(notifications: list) -> list[tuple[str, str, tuple[str, ...]]]:  # type: ignore[type-arg]
    return [(n.channel, n.kind, tuple(a.entity for a in n.alerts)) for n in notifications]


def utc_ms(*parts: int) -> int:
    return int(datetime(*parts, tzinfo=UTC).timestamp() * 1000)  # type: ignore[arg-type,misc]


# --- basics -----------------------------------------------------------------------------------


def test_firing_is_sent_at_once_and_resolve_after_group_interval(
    harness: Harness, make_alert: Alert
) -> None:
    h = harness()
    first = h.fire(make_alert("mp-1", "firing", ts_ms=500), now_ms=1_000)
    assert kinds(first) == [("console", "firing", ("mp-1",))]
    assert first[0].title == "[FIRING] warning: power-high on mp-1"
    assert first[0].notify_type == "warning"

    # Resolved 5 s later: batched until group_interval (1m default) after the last send.
    assert h.fire(make_alert("mp-1", "resolved", ts_ms=5_500), now_ms=6_000) == []
    assert h.next_deadline() == 1_000 + MINUTE
    assert h.at(MINUTE) == []
    resolved = h.at(1_000 + MINUTE)
    assert kinds(resolved) == [("console", "resolved", ("mp-1",))]
    assert resolved[0].notify_type == "success"
    assert resolved[0].title.startswith("[RESOLVED] warning: power-high on mp-1")
    # Nothing is left but the resolved alert's tombstone.
    assert [k for k in h.state if not k.startswith("a:")] == []


def test_alert_that_resolves_within_group_wait_is_never_announced(
    harness: Harness, make_alert: Alert
) -> None:
    h = harness("defaults:\n  group_wait: 30s\n")
    assert h.fire(make_alert(ts_ms=0), now_ms=0) == []
    assert h.fire(make_alert(state="resolved", ts_ms=10_000), now_ms=10_000) == []
    assert h.at(30_000) == []
    assert h.sent == []


def test_critical_is_a_failure_notification(harness: Harness, make_alert: Alert) -> None:
    h = harness()
    assert h.fire(make_alert(severity="critical"), now_ms=1)[0].notify_type == "failure"


def test_stale_and_replayed_transitions_change_nothing(harness: Harness, make_alert: Alert) -> None:
    h = harness()
    firing = make_alert(ts_ms=1_000)
    assert len(h.fire(firing, now_ms=1_000)) == 1
    assert h.fire(firing, now_ms=2_000) == []  # replayed after a crash
    h.fire(make_alert(state="resolved", ts_ms=3_000), now_ms=3_000)
    assert len(h.at(1_000 + MINUTE)) == 1
    # A replay of the old firing after the resolve: still recognised (tombstone).
    assert h.fire(firing, now_ms=2 * MINUTE) == []
    assert h.at(10 * MINUTE) == []


# --- repeat -----------------------------------------------------------------------------------


def test_repeat_interval_while_firing(harness: Harness, make_alert: Alert) -> None:
    h = harness("defaults:\n  repeat_interval: 1h\n")
    first = h.fire(make_alert(ts_ms=0), now_ms=0)
    assert h.next_deadline() == HOUR
    assert h.at(HOUR - 1) == []
    repeat1 = h.at(HOUR)
    assert kinds(repeat1) == [("console", "repeat", ("mp-1",))]
    assert repeat1[0].title == "[FIRING, REPEAT] warning: power-high on mp-1"
    repeat2 = h.at(2 * HOUR)
    assert kinds(repeat2) == [("console", "repeat", ("mp-1",))]
    assert len({first[0].id, repeat1[0].id, repeat2[0].id}) == 3

    h.fire(make_alert(state="resolved", ts_ms=2 * HOUR + 10), now_ms=2 * HOUR + 10)
    assert kinds(h.at(2 * HOUR + MINUTE)) == [("console", "resolved", ("mp-1",))]
    assert h.at(10 * HOUR) == []  # no repeats after the resolve


# --- grouping ---------------------------------------------------------------------------------

GROUPED = """
routes:
  - match: ["team=energy"]
    channels: [console]
    group_by: [rule]
    group_wait: 30s
    group_interval: 5m
    repeat_interval: 4h
"""


def test_group_wait_and_group_interval_make_digests(harness: Harness, make_alert: Alert) -> None:
    h = harness(GROUPED)
    none = dict(channels=())  # routed only by the route, not by the rule
    assert h.fire(make_alert("mp-1", ts_ms=0, **none), now_ms=0) == []
    assert h.fire(make_alert("mp-2", ts_ms=10_000, **none), now_ms=10_000) == []
    assert h.at(29_999) == []

    first = h.at(30_000)
    assert kinds(first) == [("console", "digest", ("mp-1", "mp-2"))]
    assert first[0].title == "[2 FIRING] power-high (rule=power-high)"
    assert first[0].group_labels == {"rule": "power-high"}

    # A third alert after the first digest waits for group_interval after that digest.
    assert h.fire(make_alert("mp-3", ts_ms=60_000, **none), now_ms=60_000) == []
    assert h.next_deadline() == 30_000 + 5 * MINUTE
    assert h.at(30_000 + 5 * MINUTE - 1) == []
    second = h.at(30_000 + 5 * MINUTE)
    assert kinds(second) == [("console", "digest", ("mp-1", "mp-2", "mp-3"))]

    # A resolve joins the next digest, with the alerts still firing.
    h.fire(make_alert("mp-1", "resolved", ts_ms=400_000, **none), now_ms=400_000)
    third = h.at(30_000 + 10 * MINUTE)
    assert kinds(third) == [("console", "digest", ("mp-2", "mp-3", "mp-1"))]
    assert [a.state for a in third[0].alerts] == ["firing", "firing", "resolved"]
    assert third[0].title == "[2 FIRING, 1 RESOLVED] power-high (rule=power-high)"
    assert "RESOLVED warning: power-high on mp-1" in third[0].body


def test_groups_are_per_group_by_value(harness: Harness, make_alert: Alert) -> None:
    h = harness(GROUPED)
    h.fire(make_alert("mp-1", rule="a", ts_ms=0, channels=()), now_ms=0)
    h.fire(make_alert("mp-1", rule="b", ts_ms=0, channels=()), now_ms=0)
    out = h.at(30_000)
    assert sorted(n.alerts[0].rule for n in out) == ["a", "b"]
    assert [n.kind for n in out] == ["firing", "firing"]  # one alert per group: not a digest


# --- resolve switch ---------------------------------------------------------------------------


def test_resolve_notifications_can_be_switched_off_per_channel(
    harness: Harness, make_alert: Alert
) -> None:
    h = harness("channels:\n  quiet:\n    url_env: Q\n    send_resolved: false\n")
    both = make_alert(ts_ms=0, channels=("console", "quiet"))
    assert sorted(kinds(h.fire(both, now_ms=0))) == [
        ("console", "firing", ("mp-1",)),
        ("quiet", "firing", ("mp-1",)),
    ]
    h.fire(make_alert(state="resolved", ts_ms=10, channels=("console", "quiet")), now_ms=10)
    assert kinds(h.at(MINUTE)) == [("console", "resolved", ("mp-1",))]
    assert not any(isinstance(v, GroupState) for v in h.state.values())


# --- routing ----------------------------------------------------------------------------------

ROUTES = """
channels:
  pager: {url_env: P}
  team-email: {url_env: T}
  catch-all: {url_env: C}
routes:
  - name: critical
    match: ["severity=critical"]
    channels: [pager]
    group_wait: 30s
    continue: true
  - name: energy
    match: ["team=~energy|grid"]
    channels: [team-email, console]
    group_wait: 1m
  - name: everything
    match: []
    channels: [catch-all]
"""


def test_routing_precedence(harness: Harness, make_alert: Alert) -> None:
    h = harness(ROUTES)
    routed = h.dispatcher.route(make_alert(severity="critical", channels=("pager", "catch-all")))
    # Rule channels first (kept even where no route names them), then route channels, each
    # once; timing from the first matching route that names the channel, else defaults.
    assert [(t.channel, t.route, t.timing.group_wait_ms) for t in routed] == [
        ("pager", "critical", 30_000),
        ("catch-all", "rule", 0),
        ("team-email", "energy", 60_000),
        ("console", "energy", 60_000),
    ]
    # A route without continue stops the walk: 'everything' is not reached for energy alerts.
    warning = h.dispatcher.route(make_alert(channels=()))
    assert [t.channel for t in warning] == ["team-email", "console"]
    other = h.dispatcher.route(make_alert(labels={"team": "water"}, channels=()))
    assert [(t.channel, t.route) for t in other] == [("catch-all", "everything")]


def test_resolve_follows_the_firing_even_when_routes_changed(
    harness: Harness, make_alert: Alert, write_config: Callable[[str], Any]
) -> None:
    h = harness(ROUTES)
    h.fire(make_alert(ts_ms=0, channels=()), now_ms=0)
    assert sorted(kinds(h.at(MINUTE))) == [
        ("console", "firing", ("mp-1",)),
        ("team-email", "firing", ("mp-1",)),
    ]
    # Routes change (restart with a new config): the resolve still reaches both channels.
    h.dispatcher.config = write_config("channels:\n  other: {url_env: O}\n")
    h.fire(make_alert(state="resolved", ts_ms=5, channels=()), now_ms=2 * MINUTE)
    assert sorted(kinds(h.sent[2:])) == [
        ("console", "resolved", ("mp-1",)),
        ("team-email", "resolved", ("mp-1",)),
    ]


# --- silences ---------------------------------------------------------------------------------


def _silence(matchers: tuple[str, ...], start: int, end: int) -> Silence:
    return Silence("s1", matchers, start, end, "maintenance", "ops", start, start)


def test_silence_matches_and_the_alert_is_sent_when_it_ends(
    harness: Harness, make_alert: Alert
) -> None:
    silences = StaticSilences([_silence(("entity=~mp-1|mp-9", "rule=power-high"), 0, 10 * MINUTE)])
    h = harness(silences=silences)
    assert h.fire(make_alert("mp-1", ts_ms=MINUTE), now_ms=MINUTE) == []
    assert kinds(h.fire(make_alert("mp-2", ts_ms=MINUTE), now_ms=MINUTE)) == [
        ("console", "firing", ("mp-2",))
    ]
    assert h.at(10 * MINUTE - 1) == []
    assert kinds(h.at(10 * MINUTE)) == [("console", "firing", ("mp-1",))]
    assert h.stats.channel("console")["silenced"] >= 1


def test_alert_silenced_from_start_to_resolve_is_never_sent(
    harness: Harness, make_alert: Alert
) -> None:
    h = harness(silences=StaticSilences([_silence(("entity=mp-1",), 0, HOUR)]))
    h.fire(make_alert(ts_ms=0), now_ms=0)
    h.fire(make_alert(state="resolved", ts_ms=MINUTE), now_ms=MINUTE)
    h.at(2 * HOUR)
    assert h.sent == []


def test_resolve_of_an_announced_alert_is_sent_despite_a_silence(
    harness: Harness, make_alert: Alert
) -> None:
    h = harness(
        "defaults:\n  repeat_interval: 10m\n",
        silences=StaticSilences([_silence(("entity=mp-1",), MINUTE, HOUR)]),
    )
    h.fire(make_alert(ts_ms=0), now_ms=0)
    assert h.at(30 * MINUTE) == []  # silenced: no repeat
    h.fire(make_alert(state="resolved", ts_ms=31 * MINUTE), now_ms=31 * MINUTE)
    assert kinds(h.sent) == [("console", "firing", ("mp-1",)), ("console", "resolved", ("mp-1",))]


def test_silence_expired_early_through_the_file(
    tmp_path: Path, harness: Harness, make_alert: Alert
) -> None:
    path = tmp_path / "silences.json"
    silence = add_silence(
        path, ["entity=mp-1"], starts_at_ms=0, ends_at_ms=HOUR, comment="c", author="a", now_ms=0
    )
    h = harness(silences=SilenceFileStore(path))
    assert h.fire(make_alert(ts_ms=MINUTE), now_ms=MINUTE) == []
    expire_silence(path, silence.id[:6], now_ms=3 * MINUTE)
    # Re-checked every group_interval (1m): announced at the first check after the expiry.
    assert kinds(h.at(3 * MINUTE)) == [("console", "firing", ("mp-1",))]


# --- mute windows -----------------------------------------------------------------------------

NIGHTS = """
defaults:
  mute_windows: [nights]
mute_windows:
  nights:
    time_zone: Europe/Zurich
    hours: ["01:00-04:00"]
"""


def test_mute_window_on_the_spring_forward_night(harness: Harness, make_alert: Alert) -> None:
    h = harness(NIGHTS)
    # 2024-03-31: 01:00 CET is 00:00 UTC; 04:00 CEST is 02:00 UTC (the window lasts 2 h).
    fired = utc_ms(2024, 3, 31, 0, 30)
    assert h.fire(make_alert(ts_ms=fired), now_ms=fired) == []
    assert h.next_deadline() == utc_ms(2024, 3, 31, 2, 0)
    assert kinds(h.at(utc_ms(2024, 3, 31, 2, 0))) == [("console", "firing", ("mp-1",))]
    assert h.stats.channel("console")["muted"] == 1


def test_mute_window_on_the_fall_back_night(harness: Harness, make_alert: Alert) -> None:
    h = harness(NIGHTS)
    # 2024-10-27: 01:00 CEST is 23:00 UTC the day before; 04:00 CET is 03:00 UTC (4 h).
    before = utc_ms(2024, 10, 26, 22, 59)
    assert len(h.fire(make_alert("mp-1", ts_ms=before), now_ms=before)) == 1
    inside = utc_ms(2024, 10, 27, 2, 30)  # 03:30 CET, after the repeated hour
    assert h.fire(make_alert("mp-2", ts_ms=inside), now_ms=inside) == []
    # mp-1's 4 h repeat falls due at 02:59 UTC, inside the window: held back as well.
    assert h.at(utc_ms(2024, 10, 27, 2, 59)) == []
    assert h.next_deadline() == utc_ms(2024, 10, 27, 3, 0)
    assert sorted(kinds(h.at(utc_ms(2024, 10, 27, 3, 0)))) == [
        ("console", "firing", ("mp-2",)),
        ("console", "repeat", ("mp-1",)),
    ]


def test_mute_window_holds_back_resolves_too(harness: Harness, make_alert: Alert) -> None:
    h = harness(NIGHTS)
    fired = utc_ms(2024, 6, 1, 22, 0)  # 00:00 CEST: not muted
    h.fire(make_alert(ts_ms=fired), now_ms=fired)
    resolved = utc_ms(2024, 6, 1, 23, 30)  # 01:30 CEST: muted until 04:00 CEST = 02:00 UTC
    h.fire(make_alert(state="resolved", ts_ms=resolved), now_ms=resolved)
    assert h.at(utc_ms(2024, 6, 2, 1, 59)) == []
    assert kinds(h.at(utc_ms(2024, 6, 2, 2, 0))) == [("console", "resolved", ("mp-1",))]


# --- inhibition -------------------------------------------------------------------------------

INHIBIT = """
inhibit_rules:
  - source: ["severity=critical"]
    target: ["severity=warning"]
    equal: [entity]
"""


def test_firing_critical_inhibits_warnings_on_the_same_entity(
    harness: Harness, make_alert: Alert
) -> None:
    h = harness(INHIBIT)
    crit = make_alert("mp-1", ts_ms=0, rule="power-critical", severity="critical")
    assert kinds(h.fire(crit, now_ms=0)) == [("console", "firing", ("mp-1",))]
    warn = make_alert("mp-1", ts_ms=10_000, rule="power-high")
    assert h.fire(warn, now_ms=10_000) == []
    other = make_alert("mp-2", ts_ms=10_000, rule="power-high")
    assert kinds(h.fire(other, now_ms=10_000)) == [("console", "firing", ("mp-2",))]
    assert h.stats.channel("console")["inhibited"] == 1

    # Re-checked every group_interval: still inhibited while the critical fires.
    assert h.at(70_000) == []
    # The critical resolves: the warning is announced at its next check.
    crit_resolved = make_alert(
        "mp-1", "resolved", ts_ms=100_000, rule="power-critical", severity="critical"
    )
    resolved = h.fire(crit_resolved, now_ms=100_000)
    assert [(n.kind, n.alerts[0].rule) for n in resolved] == [("resolved", "power-critical")]
    announced = h.at(130_000)
    assert [(n.kind, n.alerts[0].rule, n.alerts[0].entity) for n in announced] == [
        ("firing", "power-high", "mp-1")
    ]


# --- rate limit -------------------------------------------------------------------------------


def test_rate_limit_sends_a_summary_of_what_it_held_back(
    harness: Harness, make_alert: Alert
) -> None:
    h = harness("channels:\n  pager:\n    url_env: P\n    rate_limit: {max: 2, per: 1h}\n")
    for i in range(5):
        h.fire(
            make_alert(f"mp-{i}", ts_ms=i, channels=("pager",), rule=f"r{i % 2}"), now_ms=1_000 + i
        )
    assert kinds(h.sent) == [("pager", "firing", ("mp-0",)), ("pager", "firing", ("mp-1",))]
    assert h.next_deadline() == HOUR
    summary = h.at(HOUR)
    assert kinds(summary) == [("pager", "suppressed-summary", ())]
    assert summary[0].suppressed == 3
    assert (
        summary[0].title == "[SUPPRESSED] 3 more notifications to pager held back by its rate limit"
    )
    assert "- 3 firing" in summary[0].body
    assert "Rules: r0 (2), r1 (1)" in summary[0].body
    assert summary[0].id == notification_id("pager", "suppressed-summary", [], "0")
    assert h.stats.channel("pager")["suppressed"] == 3
    # A new window lets notifications through again.
    assert len(h.fire(make_alert("mp-9", ts_ms=HOUR, channels=("pager",)), now_ms=HOUR + 1)) == 1


def test_summary_comes_first_when_a_new_window_starts_before_the_timer(
    harness: Harness, make_alert: Alert
) -> None:
    h = harness("channels:\n  pager:\n    url_env: P\n    rate_limit: {max: 1, per: 1m}\n")
    h.fire(make_alert("mp-1", ts_ms=0, channels=("pager",)), now_ms=0)
    h.fire(make_alert("mp-2", ts_ms=1, channels=("pager",)), now_ms=1)
    late = h.fire(make_alert("mp-3", ts_ms=2, channels=("pager",)), now_ms=MINUTE + 5)
    assert kinds(late) == [("pager", "suppressed-summary", ()), ("pager", "firing", ("mp-3",))]


# --- ids --------------------------------------------------------------------------------------


def _scenario(h: Any, make_alert: Alert, shift: int) -> list[str]:
    h.fire(make_alert("mp-1", ts_ms=0), now_ms=shift)
    h.fire(make_alert("mp-2", ts_ms=5), now_ms=shift + 5)
    h.at(shift + HOUR * 4 + 5)
    h.fire(make_alert("mp-1", "resolved", ts_ms=HOUR * 5), now_ms=shift + HOUR * 5)
    h.at(shift + HOUR * 6)
    return [n.id for n in h.sent]


def test_notification_ids_are_deterministic(harness: Harness, make_alert: Alert) -> None:
    first = _scenario(harness(), make_alert, shift=0)
    # Another run at other processing times: same transitions, same ids.
    assert first == _scenario(harness(), make_alert, shift=7_777)
    assert len(first) == len(set(first)) == 5  # 2 firing, 2 repeats, 1 resolved


def test_rerun_after_a_crash_produces_the_same_id(harness: Harness, make_alert: Alert) -> None:
    h = harness()
    h.fire(make_alert(ts_ms=0), now_ms=0)
    snapshot = dict(h.state.inner.raw)  # state as committed before the crash
    resolved = make_alert(state="resolved", ts_ms=10)
    h.fire(resolved, now_ms=10)
    before = h.at(MINUTE)
    # Crash: state written by the lost run is gone; the transition is processed again.
    h.state.inner.raw.clear()
    h.state.inner.raw.update(snapshot)
    h.state.index.rebuild(h.state.items())
    h.fire(resolved, now_ms=30_000)
    after = h.at(2 * MINUTE)
    assert [n.id for n in before] == [n.id for n in after]
    assert before[0].id == notification_id("console", "resolved", [resolved])


@pytest.mark.parametrize("group_wait", ["0s", "10s"])
def test_expire_is_safe_early_late_and_twice(
    harness: Harness, make_alert: Alert, group_wait: str
) -> None:
    h = harness(f"defaults:\n  group_wait: {group_wait}\n")
    h.fire(make_alert(ts_ms=0), now_ms=0)
    keys = [k for k in h.state if k.startswith("g:")]
    assert h.dispatcher.expire(h.state, keys[0], now_ms=1) == []  # early (or not due)
    h.at(HOUR)
    assert h.dispatcher.expire(h.state, keys[0], now_ms=HOUR) == []  # twice
    assert h.dispatcher.expire(h.state, "g:gone:0", now_ms=HOUR) == []  # gone
    assert len(h.sent) == 1


def test_a_second_firing_without_resolve_is_not_announced_again(
    harness: Harness, make_alert: Alert
) -> None:
    # E.g. the rule engine lost its state and fires again: people already know.
    h = harness()
    assert len(h.fire(make_alert(ts_ms=0), now_ms=0)) == 1
    assert h.fire(make_alert(ts_ms=50_000, value=99.0), now_ms=50_000) == []
    assert h.at(2 * MINUTE) == []
    h.fire(make_alert(state="resolved", ts_ms=3 * MINUTE), now_ms=3 * MINUTE)
    assert kinds(h.sent) == [("console", "firing", ("mp-1",)), ("console", "resolved", ("mp-1",))]
    assert h.sent[1].alerts[0].ts_ms == 3 * MINUTE


def test_flapping_within_group_interval_sends_nothing_new(
    harness: Harness, make_alert: Alert
) -> None:
    h = harness()
    h.fire(make_alert(ts_ms=0), now_ms=0)
    h.fire(make_alert(state="resolved", ts_ms=10_000), now_ms=10_000)
    h.fire(make_alert(ts_ms=20_000), now_ms=20_000)
    assert h.at(MINUTE) == []  # still firing, as announced
    assert kinds(h.sent) == [("console", "firing", ("mp-1",))]
