"""``upstream-drop``: every upstream server drops the connection every 50 messages.

All five families run at once, each a real simulator with its real producer in this process,
writing to a counting sink (Kafka is not what is tested here). ELEMENT's simulator drops by
itself (``drop_every=50``: the connection is aborted before its 51st frame); the others are
aborted (no close frame, like a network drop) when their producer has received 50 frames on
the current connection. At the end each simulator is stopped first (a clean close, so nothing
is left in flight), then its producer.

Rows, one per family:

* ``upstream-drop/element``: ``sent`` readings the server sent (replays included),
  ``expected`` distinct readings it inserted, ``delivered`` distinct ones the producer
  published (events it flagged as already published are not counted). Pass: 0 lost,
  0 duplicated, in insertion order: ``after=`` resumes exactly.
* the others have no replay: ``sent`` = ``expected`` = frames the server wrote (its
  ``frames_sent`` counter), ``delivered`` frames the producer published, ``lost`` the gap
  (frames in flight at the drops, never to be replayed). Pass: every connection's frames
  arrived as an unbroken prefix of what the server wrote on it (no reordering, no copy), and
  the gap equals the simulator's count minus the producer's.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from typing import Any

import orjson

from producers.envelope import RawEnvelope
from streamwarden.chaos.harness import ChaosOptions, ScenarioResult, Timeline
from streamwarden.chaos.upstreams import CountingSink, Upstream, start_upstreams, stop_upstreams
from streamwarden.families import FAMILIES

NAME = "upstream-drop"
DROP_EVERY = 50
INTERVAL_S = 0.05
REPLAY_FROM = "2000-01-01T00:00:00Z"
"""ELEMENT's first connection asks for everything, so every reading inserted is expected."""


def element_readings(envelopes: list[RawEnvelope]) -> list[str]:
    """Reading ids published, in order, minus those the producer flagged as duplicates."""
    out: list[str] = []
    for envelope in envelopes:
        skip = set(envelope.meta.get("duplicates", []))
        try:
            events = orjson.loads(envelope.payload)
        except orjson.JSONDecodeError:
            continue
        for event in events if isinstance(events, list) else []:
            body = event.get("body") if isinstance(event, dict) else None
            if isinstance(body, dict) and body.get("id") not in skip:
                out.append(str(body.get("id")))
    return out


def _element_row(upstream: Upstream, expected_ids: list[str], seconds: float) -> ScenarioResult:
    simulator = upstream.simulator
    got = element_readings(upstream.sink.envelopes)
    copies = Counter(got)
    wanted = set(expected_ids)
    delivered = wanted & set(copies)
    in_order = [i for i in dict.fromkeys(got) if i in wanted] == [
        i for i in expected_ids if i in delivered
    ]
    lost = len(wanted - delivered)
    duplicated = sum(n - 1 for n in copies.values())
    ok = lost == 0 and duplicated == 0 and in_order and simulator.chaos_drops > 0
    note = (
        f"{simulator.chaos_drops} drops by the server, {simulator.connections_accepted} "
        f"connections, each resumed with after=; "
        + ("readings in insertion order" if in_order else "readings OUT OF ORDER")
    )
    return ScenarioResult(
        scenario=f"{NAME}/element",
        sent=simulator.events_sent,
        expected=len(wanted),
        delivered=len(delivered),
        duplicated=duplicated,
        lost=lost,
        ok=ok,
        note=note,
        seconds=seconds,
        details={
            "drops": simulator.chaos_drops,
            "connections": simulator.connections_accepted,
            "in_order": in_order,
        },
    )


def _common_prefix(received: list[str], sent: list[str]) -> int:
    count = 0
    for got, wrote in zip(received, sent, strict=False):
        if got != wrote:
            break
        count += 1
    return count


def _gap_row(
    upstream: Upstream, drops: list[float], seconds: float, timeline: Timeline
) -> ScenarioResult:
    simulator = upstream.simulator
    sink = upstream.sink
    connections = sorted(sink.per_connection)
    matched = 0
    broken: list[int] = []
    duplicated = 0
    for connection in connections:
        received = sink.frames_of(connection)
        wrote = simulator.frames_for(connection)
        prefix = _common_prefix(received, wrote)
        matched += prefix
        if prefix != len(received):
            broken.append(connection)
        extra = Counter(received) - Counter(wrote)
        duplicated += sum(min(n, max(0, received.count(text) - 1)) for text, n in extra.items())
    sent = int(simulator.frames_sent)
    received_total = len(sink.envelopes)
    lost = sent - matched
    counters_agree = lost == sent - received_total
    # Time without data: from each drop to the first frame of the next connection.
    silent_s = 0.0
    for index, dropped_at in enumerate(drops):
        later = [t for c, t in sink.first_at.items() if c > index + 1 and t >= dropped_at]
        if later:
            silent_s += min(later) - dropped_at
    ok = bool(drops) and not broken and duplicated == 0 and counters_agree
    connected_s = max(seconds - silent_s, 1e-3)
    missed = round(sent / connected_s * silent_s)
    note = (
        f"{len(drops)} drops, {len(connections)} connections; gap {lost} frames in flight "
        f"(server sent {sent}, producer got {received_total}); {silent_s:.1f}s without a "
        f"connection in all, ~{missed} frames the upstream produced then were never sent "
        f"(no replay in this protocol)"
    )
    if broken:
        note += f"; connections {broken} got frames out of order or not sent"
    if not counters_agree:
        note += "; the gap does not match the simulator's counters"
    timeline.say(f"{upstream.kind}: {note}")
    return ScenarioResult(
        scenario=f"{NAME}/{upstream.kind}",
        sent=sent,
        expected=sent,
        delivered=matched,
        duplicated=duplicated,
        lost=lost,
        ok=ok,
        note=note,
        seconds=seconds,
        details={
            "server_sent": sent,
            "producer_received": received_total,
            "drops": len(drops),
            "connections_out_of_order": len(broken),
            "seconds_disconnected": round(silent_s, 2),
        },
    )


async def run(options: ChaosOptions) -> list[ScenarioResult]:
    duration = 10.0 if options.quick else 30.0
    started = time.monotonic()
    timeline = Timeline(options.progress, NAME)
    kinds = list(FAMILIES)
    sinks = {kind: CountingSink() for kind in kinds}
    drops: dict[str, list[float]] = {kind: [] for kind in kinds}
    upstreams = await start_upstreams(
        kinds,
        options.workdir / NAME,
        interval=INTERVAL_S,
        seed=options.seed,
        sinks=sinks,
        entry_overrides={"element": {"after": REPLAY_FROM}},
    )
    by_kind = {u.kind: u for u in upstreams}
    try:
        by_kind["element"].simulator.drop_every = DROP_EVERY
        for upstream in upstreams:
            if upstream.kind != "element":
                upstream.sink.on_frame = _dropper(upstream.simulator, drops[upstream.kind])
            upstream.start_producer()
        timeline.say(f"{len(upstreams)} upstreams dropping every {DROP_EVERY} messages")
        await asyncio.sleep(duration)
        element = by_kind["element"]
        expected_ids = [e.id for e in element.simulator.history if e.socket == "readings"]
        # ELEMENT must catch up while its server still runs (what it missed is replayed).
        await element.sink.wait_for(
            lambda: set(expected_ids) <= set(element_readings(element.sink.envelopes)), 20.0
        )
        for upstream in upstreams:
            await upstream.simulator.stop()  # a clean close: nothing left in flight
        for upstream in upstreams:
            await _quiet(upstream.sink, 0.5, 5.0)
        failures = {u.kind: await u.stop_producer() for u in upstreams}
        seconds = time.monotonic() - started
        rows = []
        for upstream in upstreams:
            if upstream.kind == "element":
                row = _element_row(upstream, expected_ids, seconds)
            else:
                row = _gap_row(upstream, drops[upstream.kind], seconds, timeline)
            failure = failures[upstream.kind]
            if failure is not None:
                row.ok = False
                row.note += f"; producer failed: {failure!r}"
            rows.append(row)
        return rows
    finally:
        await stop_upstreams(upstreams)


def _dropper(simulator: Any, drops: list[float]) -> Any:
    """``on_frame`` hook: abort the connection once its producer received 50 frames."""

    async def on_frame(_envelope: RawEnvelope, count: int) -> None:
        if count == DROP_EVERY:
            drops.append(time.monotonic())
            await simulator.drop_connections()

    return on_frame


async def _quiet(sink: CountingSink, quiet_s: float, wait_timeout: float) -> None:
    """Wait until nothing arrived for ``quiet_s`` seconds (bounded by ``wait_timeout``)."""
    deadline = time.monotonic() + wait_timeout
    while time.monotonic() < deadline:
        sink.arrived.clear()
        try:
            async with asyncio.timeout(quiet_s):
                await sink.arrived.wait()
        except TimeoutError:
            return
