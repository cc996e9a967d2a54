"""Pure parts of the scenarios: reading worker logs, ELEMENT readings, frame prefixes."""

from __future__ import annotations

import orjson

from producers.envelope import RawEnvelope
from streamwarden.chaos.upstream_drop import _common_prefix, element_readings
from streamwarden.chaos.worker_takeover import assigned_partitions, normalize_synced

ASSIGNMENT_LOG = """\
2026-12-03 02:10:43,259 INFO pipeline.agents.evaluate: rule partitions owned partitions=1,3
[2026-12-03 02:10:58,843] [23220] [INFO] Revoking previously assigned partitions {...}
2026-12-03 02:11:03,259 INFO pipeline.agents.evaluate: rule partitions owned partitions=0,1,2,3
"""


def test_the_last_assignment_in_a_worker_log_wins() -> None:
    assert assigned_partitions(ASSIGNMENT_LOG) == {0, 1, 2, 3}
    first = ASSIGNMENT_LOG.split("[2026-12-03 02:10:58")[0]
    assert assigned_partitions(first) == {1, 3}
    assert assigned_partitions(first + "INFO rule partitions owned partitions=none") == set()
    assert assigned_partitions("worker starting\n") is None


SYNC_LOG = """\
2026-12-03 14:53:03,449 INFO aiokafka.consumer.group_coordinator: Successfully synced group \
chaos-a with generation 5
2026-12-03 14:53:05,543 INFO aiokafka.consumer.group_coordinator: Joined group \
'chaos-a-normalize' (generation 3) with member_id 0x7fb
"""


def test_a_worker_is_in_the_normalize_group_once_that_group_synced() -> None:
    assert not normalize_synced(SYNC_LOG, "chaos-a")  # faust's group synced, normalize joined
    synced = SYNC_LOG + (
        "2026-12-03 14:53:05,600 INFO aiokafka.consumer.group_coordinator: Successfully synced "
        "group chaos-a-normalize with generation 3\n"
    )
    assert normalize_synced(synced, "chaos-a")
    assert not normalize_synced(synced, "chaos")  # another app's group


def _envelope(events: list[dict[str, object]], duplicates: list[str] | None = None) -> RawEnvelope:
    meta: dict[str, object] = {"connection": 1}
    if duplicates:
        meta["duplicates"] = duplicates
    return RawEnvelope("element", "s", 1, orjson.dumps(events).decode(), meta)


def test_element_readings_skip_what_the_producer_flagged_as_published() -> None:
    envelopes = [
        _envelope([{"event": "reading_added", "body": {"id": "r1"}}]),
        _envelope(
            [
                {"event": "reading_added", "body": {"id": "r1"}},
                {"event": "reading_added", "body": {"id": "r2"}},
            ],
            duplicates=["r1"],
        ),
        RawEnvelope("element", "s", 2, "not json", {"connection": 2}),
        _envelope([{"event": "reading_added", "body": {"id": "r2"}}]),  # a real copy
    ]
    assert element_readings(envelopes) == ["r1", "r2", "r2"]


def test_common_prefix_stops_at_the_first_difference() -> None:
    assert _common_prefix(["a", "b"], ["a", "b", "c"]) == 2
    assert _common_prefix(["a", "x", "c"], ["a", "b", "c"]) == 1
    assert _common_prefix([], ["a"]) == 0
