"""The deadline index and state encoding the faust agent relies on."""

from __future__ import annotations

import msgspec
import pytest

from pipeline.alerting.model import (
    AlertIndex,
    GroupEntry,
    GroupState,
    InhibitIndex,
    Notification,
    RateState,
    deadline,
    decode_notification,
    decode_state,
    encode_notification,
    encode_state,
)
from pipeline.alerting.timers import DeadlineIndex, TrackedState
from pipeline.models import AlertTransition

ALERT = AlertTransition(
    fingerprint="f",
    rule="r",
    state="firing",
    entity="e",
    source="s",
    stream="s",
    metric="m",
    value=1.5,
    severity="warning",
    ts_ms=7,
)
GROUP = GroupState(
    channel="c",
    route="rule",
    labels={"rule": "r"},
    group_wait_ms=0,
    group_interval_ms=1,
    repeat_interval_ms=2,
    send_resolved=True,
    alerts={"f": GroupEntry(ALERT, "firing")},
    next_ms=99,
)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (GROUP, 99),
        (msgspec.structs.replace(GROUP, next_ms=None), None),
        (RateState(3_600_000, 3_600_000, sent=2), None),
        (RateState(3_600_000, 3_600_000, sent=2, suppressed=1), 7_200_000),
        (AlertIndex(("g:c:1",), "firing", 7), None),
        (AlertIndex((), "resolved", 7, expires_ms=500), 500),
        (InhibitIndex({"f": 7}), None),
    ],
)
def test_state_round_trips_and_has_its_deadline(value, expected) -> None:  # type: ignore[no-untyped-def]
    decoded = decode_state(encode_state(value))
    assert decoded == value
    assert deadline("k", decoded) == expected


def test_notification_round_trips() -> None:
    n = Notification(
        "id", "c", "digest", (ALERT,), "t", "b", "markdown", "warning", 5, {"rule": "r"}
    )
    assert decode_notification(encode_notification(n)) == n
    assert n.fingerprints == ("f",)


def test_index_returns_due_keys_once_in_order_and_follows_updates() -> None:
    index = DeadlineIndex()
    index.update("a", msgspec.structs.replace(GROUP, next_ms=30))
    index.update("b", msgspec.structs.replace(GROUP, next_ms=10))
    index.update("c", msgspec.structs.replace(GROUP, next_ms=20))
    index.update("c", msgspec.structs.replace(GROUP, next_ms=40))  # rescheduled
    index.update("a", None)  # deleted
    assert index.next_deadline() == 10
    assert index.due(25) == ["b"]
    assert index.due(25) == []
    assert index.due(100) == ["c"]
    assert len(index) == 0


def test_tracked_state_indexes_writes_and_rebuilds() -> None:
    state = TrackedState()
    state["g"] = GROUP
    state["i"] = InhibitIndex({"f": 1})
    assert state.index.next_deadline() == 99
    del state["g"]
    assert state.index.next_deadline() is None
    state["g"] = GROUP
    fresh = TrackedState(state.inner)
    fresh.index.rebuild(fresh.items())
    assert fresh.index.due(100) == ["g"]
    assert sorted(fresh) == ["g", "i"] and len(fresh) == 2
