"""The chaos harness, workload and notification counting without a broker: the notification contract, counting, the stream, the
oracle and the HTTP sink (a real server on 127.0.0.1)."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path

import orjson
import pytest

from pipeline.agents.notify import POSSIBLE_DUPLICATE
from pipeline.alerting.config import load_config
from pipeline.alerting.templates import Renderer
from pipeline.models import AlertTransition
from pipeline.notify.channels import channel_templates, load_channels_from
from streamwarden.chaos.harness import worker_env
from streamwarden.chaos.notifications import NotificationSink, Received, parse_items, tally
from streamwarden.chaos.workload import (
    CHANNELS_YAML,
    HOOK_URL_ENV,
    PARTITIONS,
    RULE_THRESHOLD,
    RULE_WINDOW,
    WINDOW_GRACE_S,
    PowerStream,
    expected_transitions,
    in_scope,
    partition_of,
    write_config,
)


def _alert(state: str, ts_ms: int, entity: str = "mp-1") -> AlertTransition:
    return AlertTransition(
        fingerprint="f" * 16,
        rule=RULE_THRESHOLD,
        state=state,  # type: ignore[arg-type]
        entity=entity,
        source="aliunid",
        stream="chaos-aliunid",
        metric="sys.kW",
        value=50.0,
        severity="warning",
        ts_ms=ts_ms,
        summary="",
        description="",
        labels={},
    )


def test_the_channel_template_lists_each_alert_so_the_sink_can_count_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(HOOK_URL_ENV, "json://127.0.0.1:9/hook")
    _rules, channels = write_config(tmp_path)
    config = load_config(channels)
    assert config.defaults.group_wait_ms == 0
    assert config.defaults.group_interval_ms == 0  # every transition its own notification
    assert config.defaults.group_by == ("fingerprint",)
    renderer = Renderer(channel_templates(load_channels_from(config)))
    alerts = [_alert("firing", 1_000), _alert("resolved", 2_000, entity="mp-2")]
    _title, body, _fmt = renderer.render("hook", "digest", alerts)
    items = parse_items(body, request=3)
    assert [(i.kind, i.rule, i.entity, i.state, i.ts_ms, i.request) for i in items] == [
        ("digest", RULE_THRESHOLD, "mp-1", "firing", 1_000, 3),
        ("digest", RULE_THRESHOLD, "mp-2", "resolved", 2_000, 3),
    ]
    assert "hook" in CHANNELS_YAML


def _received(key: tuple[str, str, str, int], at: float = 0.0) -> Received:
    rule, entity, state, ts_ms = key
    return Received("firing", rule, entity, state, ts_ms, "fp", 1, at)


def test_tally_counts_delivered_duplicated_lost_unexpected_and_order() -> None:
    fire = (RULE_THRESHOLD, "a", "firing", 10)
    resolve = (RULE_THRESHOLD, "a", "resolved", 20)
    other = (RULE_WINDOW, "b", "firing", 30)
    stray = (RULE_WINDOW, "b", "resolved", 40)
    got = tally(
        [fire, resolve, other],
        [_received(resolve, 1.0), _received(fire, 2.0), _received(fire, 5.0), _received(stray)],
        kills=[3.0],
    )
    assert (got.expected, got.delivered, got.duplicated, got.lost) == (3, 2, 1, 1)
    assert got.unexpected == 1 and got.extra == (stray,)
    assert got.missing == (other,)
    assert got.out_of_order == 1  # the resolve arrived before its firing
    assert got.resent_after_kill == 1  # second copy after the kill at 3.0
    assert got.details()["lost_by_rule"] == {RULE_WINDOW: 1}
    assert got.details()["duplicated_by_rule"] == {RULE_THRESHOLD: 1}


def test_copies_marked_as_possible_duplicates_are_told_apart_from_unmarked_ones() -> None:
    fire = (RULE_THRESHOLD, "a", "firing", 10)
    resolve = (RULE_THRESHOLD, "a", "resolved", 20)
    marked = parse_items(
        f"SWCHAOS|firing|{RULE_THRESHOLD}|a|firing|10|fp;",
        2,
        3.0,
        title=POSSIBLE_DUPLICATE + "was sent before",
    )
    assert [item.marked for item in marked] == [True]
    got = tally(
        [fire, resolve],
        [_received(fire, 1.0), *marked, _received(resolve, 4.0), _received(resolve, 5.0)],
        kills=[2.0],
    )
    assert got.duplicated == 2
    assert got.marked_copies == 1
    assert got.unmarked_duplicates == 1  # the second resolve: no mark, no kill before it
    assert got.details()["marked_possible_duplicate"] == 1


def test_a_duplicate_without_a_kill_in_between_is_not_blamed_on_a_kill() -> None:
    fire = (RULE_THRESHOLD, "a", "firing", 10)
    got = tally([fire], [_received(fire, 1.0), _received(fire, 2.0)], kills=[5.0])
    assert got.duplicated == 1
    assert got.resent_after_kill == 0


def test_the_stream_is_deterministic_balanced_and_strictly_ordered_in_time() -> None:
    one, two = PowerStream(3), PowerStream(3)
    assert one.points == two.points and one.phases == two.phases
    assert len(set(one.points)) == 2 * PARTITIONS
    per_partition = [partition_of(p.encode(), PARTITIONS) for p in one.points]
    assert sorted(per_partition) == sorted(list(range(PARTITIONS)) * 2)
    envelopes = [e for _ in range(5) for e in one.next_envelopes()]
    times = [e.received_at_ms for e in envelopes]
    assert times == sorted(times) and len(set(times)) == len(times)
    frame = orjson.loads(envelopes[0].payload)
    assert frame["type"] == "data" and frame["id"] == one.points[0]
    assert frame["data"]["sys"]["kW"] in (PowerStream.HIGH_KW, PowerStream.LOW_KW)
    assert PowerStream(4).points != one.points


def test_partition_of_matches_the_kafka_client_partitioner() -> None:
    from aiokafka.partitioner import DefaultPartitioner

    partitioner = DefaultPartitioner()
    for key in (b"a", b"mp-1", b"\xff" * 7, b"9bf32959-1fd4-4fa4-83e0-9e9cd80093af"):
        assert partition_of(key, 4) == partitioner(key, [0, 1, 2, 3], [0, 1, 2, 3])


def test_the_oracle_sees_each_high_and_low_phase_as_one_transition(tmp_path: Path) -> None:
    rules, _channels = write_config(tmp_path)
    stream = PowerStream(5, half_cycle_steps=4)
    envelopes = []
    for step in range(24):  # three full cycles, event times 1 s apart per step
        for envelope in stream.next_envelopes():
            envelopes.append(
                type(envelope)(
                    source=envelope.source,
                    stream=envelope.stream,
                    received_at_ms=1_700_000_000_000 + step * 1000 + len(envelopes) % 8,
                    payload=envelope.payload,
                    meta=envelope.meta,
                )
            )
    keys = expected_transitions(envelopes, rules)
    threshold = [k for k in keys if k[0] == RULE_THRESHOLD]
    for index, point in enumerate(stream.points):
        # From the known kW values: fire at the first high value, resolve at the next low one.
        wanted, firing = [], False
        for step in range(24):
            high = stream.kw(index, step) > 40
            if high != firing:
                firing = high
                wanted.append("firing" if high else "resolved")
        assert [k[2] for k in threshold if k[1] == point] == wanted
    assert any(k[0] == RULE_WINDOW for k in keys)  # 4 s phases fill whole 2 s windows


def test_window_results_are_compared_only_once_their_grace_has_passed() -> None:
    last = 100_000
    assert in_scope(RULE_THRESHOLD, last, last)
    assert not in_scope(RULE_THRESHOLD, last + 1, last)
    assert in_scope(RULE_WINDOW, last - WINDOW_GRACE_S * 1000, last)
    assert not in_scope(RULE_WINDOW, last - WINDOW_GRACE_S * 1000 + 1, last)


def test_worker_env_drops_inherited_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STREAMWARDEN_KAFKA_BOOTSTRAP", "real-kafka:9092")
    monkeypatch.setenv("STREAMWARDEN_STORE", "rocksdb://")
    env = worker_env(
        bootstrap="127.0.0.1:1", app_id="a", folder=Path("/x"), hook_url="json://127.0.0.1:2/h"
    )
    assert env["STREAMWARDEN_KAFKA_BOOTSTRAP"] == "127.0.0.1:1"
    assert "STREAMWARDEN_STORE" not in env
    assert env["STREAMWARDEN_KAFKA_EMBEDDED"] == "true"
    # Chaos workers run the embedded broker's group timeouts, the ones the demo runs.
    assert "STREAMWARDEN_SESSION_TIMEOUT_S" not in env
    assert "STREAMWARDEN_HEARTBEAT_INTERVAL_S" not in env


def _post(url: str, payload: dict[str, object]) -> int:
    request = urllib.request.Request(
        url, data=json.dumps(payload).encode(), headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code


async def test_the_sink_records_notifications_and_refuses_them_while_down() -> None:
    with NotificationSink() as sink:
        url = sink.url().replace("json://", "http://")
        body = {"title": "t", "message": f"SWCHAOS|firing|{RULE_THRESHOLD}|e|firing|7|fp;"}
        assert _post(url, body) == 200
        assert await sink.wait_until(lambda items: len(items) == 1, 5.0)
        sink.available = False
        assert _post(url, body) == 503
        assert sink.refused == 1 and sink.count() == 1
        sink.available = True
        assert _post(url, {"message": "no items here"}) == 200
        assert sink.requests == 2 and sink.count() == 1
        assert sink.items[0].key == (RULE_THRESHOLD, "e", "firing", 7)
        assert not await sink.wait_until(lambda items: len(items) > 1, 0.2)
